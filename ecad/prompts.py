"""Prompt files: one prompt per line, found as given or among the shipped calibration_prompts/."""

from __future__ import annotations

from pathlib import Path

from ecad.errors import EcadError
from ecad.files import read_text
from ecad.resources import shipped_file


class PromptsError(EcadError, ValueError):
    """A prompt file is missing or empty; the message names the file and the fix."""


CLI_FIX = "pass --prompts FILE (one prompt per line)"


def resolve_prompts(path: str | Path, fix: str = CLI_FIX) -> Path:
    """`fix`: what the caller's user should do when the file is missing."""
    p = Path(path)
    for candidate in (p, shipped_file(p)):
        if candidate is not None and candidate.is_file():
            return candidate
    raise PromptsError(
        f"prompt file {str(path)!r} not found; {fix}, e.g. calibration_prompts/image_reward_100.txt "
        f"(looked in {Path.cwd()} and the shipped calibration_prompts/)"
    )


def read_prompts(path: str | Path, num_prompts: int | None = None, fix: str = CLI_FIX) -> tuple[str, ...]:
    """The non-blank lines of a prompt file, the first `num_prompts` of them (all when None or 0)."""
    resolved = resolve_prompts(path, fix)
    prompts = [line.strip() for line in read_text(resolved, PromptsError, "prompt file").splitlines() if line.strip()]
    if not prompts:
        raise PromptsError(f"prompt file {resolved} has no prompts; put one prompt per line")
    return tuple(prompts[:num_prompts] if num_prompts else prompts)
