"""Where the shipped search spaces, calibration prompts, searched schedules and shapes models live:
the source tree in a checkout or editable install, `<prefix>/share/ecad/` in a wheel install
(pyproject's data-files)."""

from __future__ import annotations

import sysconfig
from pathlib import Path

SOURCE_ROOT = Path(__file__).resolve().parent.parent
SHIPPED = ("search_spaces", "calibration_prompts", "schedules", "shapes_models")
SHAPES_MODELS = "shapes_models"  # the trained offline shapes pipelines and classifier (ecad.models.train_shapes)


def shipped_dir(name: str) -> Path:
    """The first of the source tree's and the install prefixes' copy of a shipped directory
    (the source tree's path if none exists, so errors name the expected place)."""
    candidates = [SOURCE_ROOT / name]
    for scheme in (None, sysconfig.get_preferred_scheme("user")):
        data = sysconfig.get_path("data") if scheme is None else sysconfig.get_path("data", scheme)
        candidates.append(Path(data) / "share" / "ecad" / name)
    return next((c for c in candidates if c.is_dir()), candidates[0])


def shipped_file(path: str | Path) -> Path | None:
    """`calibration_prompts/x.txt` (or a search space file) wherever the install put it."""
    parts = Path(path).parts
    if len(parts) < 2 or Path(path).is_absolute() or parts[0] not in SHIPPED:
        return None
    found = shipped_dir(parts[0]).joinpath(*parts[1:])
    return found if found.is_file() else None


def shapes_models_dir() -> Path:
    """The shipped shapes models' directory (`shapes-pixart/`, `shapes-flux/`: diffusers pipeline
    directories; `shapes-classifier/`: the shapes metrics' network)."""
    return shipped_dir(SHAPES_MODELS)
