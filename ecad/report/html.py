"""One self-contained HTML page per run: interactive frontier, schedule heatmaps, samples, config.

Nothing is fetched when the page is viewed: the page's HTML, CSS and JavaScript (assets/, shipped
with the package) are inlined, images are data URIs and the run's numbers sit in one JSON block
the script reads. Every rule lives in Python once: the page gets each point's decoded schedule
grid (the same cell codes the PNG heatmaps draw), its compute fraction and speedup, and the seed
markers of the PNG plots; the script only draws.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import io
import json
import math
import os
import re
import shlex
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from ecad.files import atomic_write_text, json_safe
from ecad.frontier import seed_family
from ecad.report.plots import SEED_MARKERS, schedule_image
from ecad.runs import RunData, as_run, frontier_schedules, run_space

# the PNG plots' seed markers (matplotlib codes) as the page's shape names
MARKER_SHAPES = {
    "s": "square",
    "^": "triangle",
    "v": "tri-down",
    "D": "diamond",
    "P": "plus",
    "o": "circle",
    "*": "star",
}

SAMPLES_HOWTO = (
    "ecad report {run} --samples 3",
    'python -c "from ecad.report import render_samples, write_report; '
    "write_report('{run}', samples=render_samples('{run}'))\"",
)
DEFAULT_PROMPT = "a photo of a red fox in the snow"


# ---------------------------------------------------------------------- samples
def render_samples(
    run_dir: str | os.PathLike | RunData,
    num_prompts: int = 3,
    seed: int = 0,
    device: str | None = None,
    max_size: int = 384,
) -> dict[str, Any]:
    """Render the first `num_prompts` prompts of a run without caching and with each frontier
    schedule, same seed for all. Returns the `samples` argument of `write_report`:
    {"prompts", "uncached": [png], "schedules": {key: [png]}, "seed"}.
    Loads the run's pipeline, so it needs the model weights (a GPU for real models)."""
    from PIL import Image

    from ecad.generation import Renderer, to_uint8
    from ecad.prompts import read_prompts

    run = as_run(run_dir)
    space = run_space(run)
    if space is None:
        raise FileNotFoundError(
            f"search space {run.config.get('space')!r} of {run.root} cannot be loaded here; "
            "run from the directory the search ran in or set ECAD_SEARCH_SPACES"
        )
    prompts = read_prompts(
        run.config["prompts"],
        max(1, num_prompts),
        fix=f"{run.root} names it relative to the directory the search ran in: run from there",
    )
    wanted = frontier_schedules(run, space)
    renderer = Renderer(space, prompts, device)
    items = [(p, seed) for p in range(len(prompts))]

    def render(schedule) -> list[bytes]:
        renderer.apply(schedule)
        frames = renderer.images(items)
        per = frames.shape[0] // len(items)
        stills = to_uint8(frames[per // 2 :: per]).cpu()  # a video's middle frame stands for it
        return [_png(Image.fromarray(im.permute(1, 2, 0).numpy()), max_size) for im in stills]

    out = {"prompts": prompts, "uncached": render(space.full_schedule()), "schedules": {}, "seed": seed}
    for _, point, schedule in wanted:
        out["schedules"][point.key] = render(schedule)
    return out


def _png(image, max_size: int) -> bytes:
    if max(image.size) > max_size:
        image = image.copy()
        image.thumbnail((max_size, max_size))
    buf = io.BytesIO()
    image.save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def _data_uri(data: bytes | str | os.PathLike) -> str:
    if isinstance(data, (str, os.PathLike)) and not isinstance(data, bytes):
        if str(data).startswith("data:"):
            return str(data)
        data = Path(data).read_bytes()
    raw = bytes(data)
    mime = (
        "image/png"
        if raw[:8] == b"\x89PNG\r\n\x1a\n"
        else "image/jpeg"
        if raw[:3] == b"\xff\xd8\xff"
        else "image/webp"
        if raw[:4] == b"RIFF" and raw[8:12] == b"WEBP"
        else "image/gif"
        if raw[:3] == b"GIF"
        else "application/octet-stream"
    )
    return f"data:{mime};base64,{base64.b64encode(raw).decode('ascii')}"


# ---------------------------------------------------------------------- data for the page
def _script_json(data: Any) -> str:
    """JSON for a <script type="application/json"> block: nothing in it can close the element."""
    text = json.dumps(json_safe(data), ensure_ascii=False, separators=(",", ":"))
    return (
        text.replace("&", "\\u0026")
        .replace("<", "\\u003c")
        .replace(">", "\\u003e")
        .replace("\u2028", "\\u2028")
        .replace("\u2029", "\\u2029")
    )


def _layout_info(run: RunData, space) -> dict[str, Any] | None:
    layout = space.layout if space is not None else next((sch.layout for _, _, sch in frontier_schedules(run)), None)
    if layout is None:
        return None
    return {
        "blocks": layout.num_blocks,
        "comps": layout.num_components,
        "groups": [
            {"name": g.name, "short": g.display, "blocks": g.num_blocks, "components": list(g.components)}
            for g in layout.groups
        ],
    }


def _cells(schedule) -> dict[str, Any]:
    """A schedule as the page draws it: `schedule_image`'s cell codes (0 reuse, 1 compute, 2 step
    not run, 3 no such component) over [steps, blocks, components], four per byte, base64."""
    codes = schedule_image(schedule).reshape(-1).astype(np.uint8)
    codes = np.concatenate([codes, np.zeros((-len(codes)) % 4, dtype=np.uint8)]).reshape(-1, 4)
    packed = (codes[:, 0] << 6) | (codes[:, 1] << 4) | (codes[:, 2] << 2) | codes[:, 3]
    return {
        "cells": base64.b64encode(packed.astype(np.uint8).tobytes()).decode("ascii"),
        "computed": schedule.compute_fraction(),
        "run": len(schedule.executed_steps),
        "steps": schedule.num_steps,
    }


def _schedules(run: RunData, space) -> dict[str, Any]:
    """Each point's schedule: decoded from its genome with the run's space, else (the space moved)
    the frontier files only."""
    found = {p.key: sch for _, p, sch in frontier_schedules(run, space)}
    if space is not None:
        from ecad.frontier import decode_genome
        from ecad.search.genome import GenomeSpec

        spec = GenomeSpec.for_config(space, run.config)
        for p in run.feasible:
            if p.key not in found and p.genome:
                found[p.key] = decode_genome(p.genome, spec, space)
    return {k: _cells(sch) for k, sch in found.items() if sch is not None}


def _schedule_path(run: RunData, name: str, out_html: Path | None) -> str:
    """Where a frontier schedule file is, as the page shows it: relative to the report when the
    report sits in the run directory (the default, so a copied run keeps working when commands
    are run from the report's folder), else the absolute path."""
    path = run.root.resolve() / "frontier" / name
    if out_html is not None:
        here = Path(out_html).resolve().parent
        if path.is_relative_to(here):
            return str(path.relative_to(here))
    return str(path)


def _commands(run: RunData, out_html: Path | None, samples: dict | None) -> dict[str, dict[str, str]]:
    """Per frontier key with a file in frontier/: the path the page shows, the `ecad generate` command
    line (shell-quoted) and the Python call that applies it (a Python string literal)."""
    prompts = [str(s) for s in (samples or {}).get("prompts", []) if str(s).strip()]
    prompt = prompts[0] if prompts else DEFAULT_PROMPT
    out = {}
    for p in run.frontier:
        name = run.frontier_files.get(p.key)
        if not name:
            continue
        path = _schedule_path(run, name, out_html)
        literal = json.dumps(path, ensure_ascii=False)  # a JSON string is a valid Python string literal
        out[p.key] = {
            "path": path,
            "shell": f"ecad generate --schedule {shlex.quote(path)} --prompt {shlex.quote(prompt)}",
            "python": f"ecad.apply_schedule(pipe, ecad.load_schedule({literal}))",
        }
    return out


def _page_data(run: RunData, samples: dict | None, out_html: Path | None = None) -> dict[str, Any]:
    space = run_space(run)
    schedules = _schedules(run, space)
    labels: list[str] = []
    index: dict[str, int] = {}
    pts = []
    for p in run.feasible:
        if p.label not in index:
            index[p.label] = len(labels)
            labels.append(p.label)
        d = p.details
        extras = d.get("extras") if isinstance(d.get("extras"), dict) else {}
        pts.append(
            {
                "k": p.key,
                "g": p.generation,
                "q": p.quality,
                "c": p.cost,
                "sp": p.speedup,
                "l": index[p.label],
                "t": p.kind,
                "f": seed_family(p.label) if p.kind == "seed" else "",
                "m": p.macs_fraction,
                "u": not p.complete,  # stopped by racing: an estimate on part of the images, drawn hollow
                "ms": d.get("ms_per_image"),
                "x": extras,
                "s": schedules.get(p.key),
            }
        )
    hv = []
    for rec in run.generations:
        if rec.get("hypervolume") is not None:
            hv.append([rec.get("generation"), rec.get("hypervolume"), len(rec.get("evaluated", []))])
    smp = None
    if samples:
        smp = {
            "prompts": [str(s) for s in samples.get("prompts", [])],
            "uncached": [_data_uri(b) for b in samples.get("uncached", [])],
            "schedules": {str(k): [_data_uri(b) for b in v] for k, v in (samples.get("schedules") or {}).items()},
            "seed": samples.get("seed"),
        }
    return {
        "run": {
            "name": run.root.name,
            "space": run.config.get("space"),
            "metric": run.metric,
            "cost": run.cost_kind,
            "higher": run.higher_is_better,
            "qualityLabel": run.quality_label(),
            "costLabel": run.cost_label(),
        },
        "layout": _layout_info(run, space),
        "markers": {family: MARKER_SHAPES[marker] for family, marker in SEED_MARKERS.items()},
        "labels": labels,
        "points": pts,
        "frontier": [p.key for p in run.frontier],
        "files": {p.key: run.frontier_files.get(p.key) for p in run.frontier},
        "cmds": _commands(run, out_html, samples),
        "hv": hv,
        "samples": smp,
        "howto": [s.format(run=run.root) for s in SAMPLES_HOWTO],
    }


def _fmt_value(v: Any) -> str:
    if v is None:
        return "—"
    if isinstance(v, (dict, list)):
        return json.dumps(v) if v else "—"
    return str(v)


def _config_rows(run: RunData) -> str:
    rows = []
    for k, v in run.config.items():
        rows.append(f"<tr><th>{html.escape(str(k))}</th><td><code>{html.escape(_fmt_value(v))}</code></td></tr>")
    if run.config_hash:
        rows.append(f"<tr><th>config_hash</th><td><code>{html.escape(str(run.config_hash))}</code></td></tr>")
    return "\n".join(rows)


def _summary_cards(run: RunData) -> str:
    feas = run.feasible
    infeasible = len(run.points) - len(feas)
    gens = len(run.generations)
    hv = run.hypervolume
    seconds = sum(float(g.get("seconds") or 0) for g in run.generations)
    front = run.frontier
    speed = [p.speedup for p in front if math.isfinite(p.speedup)]
    cards = [
        ("Candidates", f"{len(run.points)}", f"{len(feas)} feasible · {infeasible} infeasible"),
        ("Generations", f"{max(0, gens - 1)}", f"+ initial population · {_duration(seconds)}"),
        ("Frontier", f"{len(front)}", (f"{min(speed):.2f}× – {max(speed):.2f}× est. speedup" if speed else "—")),
        (
            "Hypervolume",
            f"{hv[-1][1]:.4f}" if hv else "—",
            f"from {hv[0][1]:.4f} at generation {hv[0][0]}" if hv else "",
        ),
    ]
    return "\n".join(
        f'<div class="card stat"><div class="stat-name">{html.escape(a)}</div>'
        f'<div class="stat-value">{html.escape(b)}</div><div class="stat-sub">{html.escape(c)}</div></div>'
        for a, b, c in cards
    )


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


# ---------------------------------------------------------------------- page
def write_report(
    run_dir: str | os.PathLike | RunData, out_html: str | os.PathLike | None = None, samples: dict | None = None
) -> Path:
    """Write one self-contained HTML report of a run (default run_dir/report.html) and return its path.

    samples: {"prompts": [str], "uncached": [png bytes per prompt], "schedules": {key: [png bytes
    per prompt]}} as `render_samples` returns; without it the page says how to make them."""
    run = as_run(run_dir)
    out = Path(out_html) if out_html is not None else run.report_path
    data = _page_data(run, samples, out)
    title = f"ecad report — {run.root.name}"
    subtitle = " · ".join(
        str(x)
        for x in (
            run.config.get("space", "?"),
            f"{run.metric} vs {run.cost_kind}",
            f"population {run.config.get('population', '?')}",
        )
    )
    page = fill(
        asset("report.html"),
        {
            "TITLE": html.escape(title),
            "RUN": html.escape(run.root.name),
            "SUBTITLE": html.escape(subtitle),
            "PATH": html.escape(str(run.root.resolve())),
            "DATE": html.escape(_dt.datetime.now().strftime("%Y-%m-%d %H:%M")),
            "CARDS": _summary_cards(run),
            "CONFIG": _config_rows(run),
            "CSS": asset("report.css"),
            "JS": asset("report.js"),
            "DATA": _script_json(data),
        },
    )
    atomic_write_text(out, page)
    return out


def asset(name: str) -> str:
    """A file of the page (assets/, shipped as package data)."""
    return resources.files("ecad.report").joinpath("assets", name).read_text(encoding="utf-8")


_PLACEHOLDER = re.compile(r"%%([A-Z]+)%%")


def fill(template: str, values: dict[str, str]) -> str:
    """Every %%NAME%% replaced in one pass: text that comes in through a value (a run named
    %%DATA%%) is never read as a placeholder itself."""
    return _PLACEHOLDER.sub(lambda m: values[m.group(1)], template)
