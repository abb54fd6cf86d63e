"""One self-contained HTML page per run: interactive frontier, schedule heatmaps, samples, config.

Nothing is fetched when the page is viewed: CSS and JS are inline, images are data URIs and
the run's numbers sit in one JSON block the script reads. The frontier plot is a small SVG
scatter drawn by the page's own script; schedule heatmaps are drawn on canvases from the
genome bits, so every point of the run (not only the frontier) can show its schedule.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import io
import json
import math
import os
from pathlib import Path
from typing import Any

from ecad.files import atomic_write_text, json_safe
from ecad.frontier import seed_family
from ecad.runs import FRONTIER_DIR, RunData, as_run, frontier_schedules, run_space

SAMPLES_HOWTO = ("ecad report {run} --samples 3",
                 "python -c \"from ecad.report import render_samples, write_report; "
                 "write_report('{run}', samples=render_samples('{run}'))\"")


# ---------------------------------------------------------------------- samples
def render_samples(run_dir: str | os.PathLike | RunData, num_prompts: int = 3, seed: int = 0,
                   device: str | None = None, max_size: int = 384) -> dict[str, Any]:
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
        raise FileNotFoundError(f"search space {run.config.get('space')!r} of {run.root} cannot be loaded here; "
                                "run from the directory the search ran in or set ECAD_SEARCH_SPACES")
    prompts = read_prompts(run.config["prompts"], max(1, num_prompts),
                           fix=f"{run.root} names it relative to the directory the search ran in: run from there")
    wanted = frontier_schedules(run, space)
    renderer = Renderer(space, prompts, device)
    items = [(p, seed) for p in range(len(prompts))]

    def render(schedule) -> list[bytes]:
        renderer.apply(schedule)
        frames = renderer.images(items)
        per = frames.shape[0] // len(items)
        stills = to_uint8(frames[per // 2:: per]).cpu()  # a video's middle frame stands for it
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
    mime = ("image/png" if raw[:8] == b"\x89PNG\r\n\x1a\n" else "image/jpeg" if raw[:3] == b"\xff\xd8\xff"
            else "image/webp" if raw[:4] == b"RIFF" and raw[8:12] == b"WEBP" else "image/gif" if raw[:3] == b"GIF"
            else "application/octet-stream")
    return f"data:{mime};base64,{base64.b64encode(raw).decode('ascii')}"


# ---------------------------------------------------------------------- data for the page
def _script_json(data: Any) -> str:
    """JSON for a <script type="application/json"> block: nothing in it can close the element."""
    text = json.dumps(json_safe(data), ensure_ascii=False, separators=(",", ":"))
    return (text.replace("&", "\\u0026").replace("<", "\\u003c").replace(">", "\\u003e")
            .replace("\u2028", "\\u2028").replace("\u2029", "\\u2029"))


def _layout_info(run: RunData) -> dict[str, Any] | None:
    space = run_space(run)
    if space is not None:
        layout, steps, ts = space.layout, space.steps, bool(space.timesteps_enabled)
    else:  # the space moved: take the layout from a frontier schedule file
        from ecad.schedule import ScheduleError, load_schedule

        name = next(iter(run.frontier_files.values()), None)
        if name is None:
            return None
        try:
            sched = load_schedule(run.root / FRONTIER_DIR / name)
        except ScheduleError:
            return None
        layout, steps = sched.layout, sched.num_steps
        grid = steps * layout.num_blocks * layout.num_components
        hexlen = max((len(p.genome) for p in run.points), default=0)
        ts = hexlen * 4 >= grid + steps
    return {"steps": steps, "blocks": layout.num_blocks, "comps": layout.num_components, "timesteps": ts,
            "family": layout.family,
            "groups": [{"name": g.name, "short": g.display, "blocks": g.num_blocks,
                        "components": list(g.components)} for g in layout.groups],
            "widths": [len(g.components) for g, _ in layout.blocks()]}  # ragged layouts: padding cells past these


def _page_data(run: RunData, samples: dict | None) -> dict[str, Any]:
    labels: list[str] = []
    index: dict[str, int] = {}
    pts = []
    for p in run.feasible:
        if p.label not in index:
            index[p.label] = len(labels)
            labels.append(p.label)
        d = p.details
        extras = d.get("extras") if isinstance(d.get("extras"), dict) else {}
        pts.append({"k": p.key, "g": p.generation, "q": p.quality, "c": p.cost, "l": index[p.label], "t": p.kind,
                    "f": seed_family(p.label) if p.kind == "seed" else "", "m": p.macs_fraction,
                    "ms": d.get("ms_per_image"), "x": extras, "h": p.genome})
    hv = []
    for rec in run.generations:
        if rec.get("hypervolume") is not None:
            hv.append([rec.get("generation"), rec.get("hypervolume"), len(rec.get("evaluated", []))])
    smp = None
    if samples:
        smp = {"prompts": [str(s) for s in samples.get("prompts", [])],
               "uncached": [_data_uri(b) for b in samples.get("uncached", [])],
               "schedules": {str(k): [_data_uri(b) for b in v] for k, v in (samples.get("schedules") or {}).items()},
               "seed": samples.get("seed")}
    return {
        "run": {"name": run.root.name, "space": run.config.get("space"), "metric": run.metric, "cost": run.cost_kind,
                "higher": run.higher_is_better, "qualityLabel": run.quality_label(), "costLabel": run.cost_label()},
        "layout": _layout_info(run),
        "labels": labels,
        "points": pts,
        "frontier": [p.key for p in run.frontier],
        "files": {p.key: run.frontier_files.get(p.key) for p in run.frontier},
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
        ("Hypervolume", f"{hv[-1][1]:.4f}" if hv else "—", f"from {hv[0][1]:.4f} at generation {hv[0][0]}" if hv else ""),
    ]
    return "\n".join(
        f'<div class="card stat"><div class="stat-name">{html.escape(a)}</div>'
        f'<div class="stat-value">{html.escape(b)}</div><div class="stat-sub">{html.escape(c)}</div></div>'
        for a, b, c in cards)


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


# ---------------------------------------------------------------------- page
def write_report(run_dir: str | os.PathLike | RunData, out_html: str | os.PathLike | None = None,
                 samples: dict | None = None) -> Path:
    """Write one self-contained HTML report of a run (default run_dir/report.html) and return its path.

    samples: {"prompts": [str], "uncached": [png bytes per prompt], "schedules": {key: [png bytes
    per prompt]}} as `render_samples` returns; without it the page says how to make them."""
    run = as_run(run_dir)
    out = Path(out_html) if out_html is not None else run.report_path
    data = _page_data(run, samples)
    title = f"ecad report — {run.root.name}"
    subtitle = " · ".join(str(x) for x in (run.config.get("space", "?"), f"{run.metric} vs {run.cost_kind}",
                                            f"population {run.config.get('population', '?')}"))
    page = (PAGE.replace("%%TITLE%%", html.escape(title))
            .replace("%%RUN%%", html.escape(run.root.name))
            .replace("%%SUBTITLE%%", html.escape(subtitle))
            .replace("%%PATH%%", html.escape(str(run.root.resolve())))
            .replace("%%DATE%%", html.escape(_dt.datetime.now().strftime("%Y-%m-%d %H:%M")))
            .replace("%%CARDS%%", _summary_cards(run))
            .replace("%%CONFIG%%", _config_rows(run))
            .replace("%%CSS%%", CSS)
            .replace("%%JS%%", JS)
            .replace("%%DATA%%", _script_json(data)))
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, page)
    return out


PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="icon" href="data:,">
<title>%%TITLE%%</title>
<style>%%CSS%%</style>
</head>
<body>
<header class="top">
  <div class="wrap">
    <div class="brand">ecad <span>search report</span></div>
    <h1>%%RUN%%</h1>
    <div class="sub">%%SUBTITLE%%</div>
    <div class="meta"><code>%%PATH%%</code> · generated %%DATE%%</div>
  </div>
</header>
<main class="wrap">
  <section class="stats">%%CARDS%%</section>

  <section class="row">
    <div class="card grow" id="plot-card">
      <div class="card-head"><h2>Quality vs cost</h2>
        <div class="hint">Hover a point for its numbers and schedule · click one to inspect it</div></div>
      <div id="plot"></div>
      <div id="legend" class="legend"></div>
    </div>
    <aside class="card side" id="details">
      <div class="card-head"><h2>Selected schedule</h2></div>
      <div id="details-body"><p class="muted">Click a point — a frontier point to compare sample images —
        to see its numbers and its compute schedule here.</p></div>
    </aside>
  </section>

  <section class="card" id="samples" hidden>
    <div class="card-head"><h2 id="samples-title">Samples</h2><div class="hint" id="samples-hint"></div></div>
    <div id="samples-body"></div>
  </section>

  <section class="card">
    <div class="card-head"><h2>Pareto frontier</h2><div class="hint">sorted by cost · click a row to select it</div></div>
    <div class="table-wrap"><table class="data" id="front-table"></table></div>
  </section>

  <section class="row">
    <div class="card grow">
      <div class="card-head"><h2>Hypervolume per generation</h2></div>
      <div id="hv"></div>
    </div>
    <div class="card grow">
      <div class="card-head"><h2>Run configuration</h2></div>
      <table class="kv">%%CONFIG%%</table>
    </div>
  </section>
</main>
<footer class="wrap foot">Self-contained report written by <code>ecad.report.write_report</code>.</footer>
<div id="tip" class="tip" hidden></div>
<script type="application/json" id="report-data">%%DATA%%</script>
<script>%%JS%%</script>
</body>
</html>
"""

CSS = r"""
:root { --ink:#1b2430; --muted:#6b7785; --line:#e3e8ee; --bg:#f4f6f9; --card:#fff; --accent:#1d3557;
  --front:#d62828; --compute:#1d3557; --reuse:#dbe6f2; --skip:#b0b0b0; }
* { box-sizing: border-box; }
body { margin:0; background:var(--bg); color:var(--ink);
  font:14px/1.45 -apple-system, BlinkMacSystemFont, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
code { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size: 12.5px; }
.wrap { max-width: 1320px; margin: 0 auto; padding: 0 24px; }
header.top { background: linear-gradient(120deg, #14213d, #1d3557 60%, #274c77); color: #fff; padding: 22px 0 20px; }
.brand { font-size: 12px; letter-spacing: .12em; text-transform: uppercase; opacity: .75; font-weight: 600; }
.brand span { font-weight: 400; }
header h1 { margin: 4px 0 2px; font-size: 26px; font-weight: 650; }
header .sub { font-size: 15px; opacity: .92; }
header .meta { font-size: 12px; opacity: .7; margin-top: 6px; }
header .meta code { color: #fff; font-size: 12px; }
main.wrap { padding-top: 22px; }
.stats { display: grid; grid-template-columns: repeat(4, 1fr); gap: 14px; margin-bottom: 16px; }
.card { background: var(--card); border: 1px solid var(--line); border-radius: 10px; padding: 16px 18px;
  box-shadow: 0 1px 2px rgba(20,33,61,.05); margin-bottom: 16px; min-width: 0; }
.stat { margin: 0; }
.stat-name { font-size: 12px; color: var(--muted); text-transform: uppercase; letter-spacing: .06em; font-weight: 600; }
.stat-value { font-size: 26px; font-weight: 650; margin: 2px 0; font-variant-numeric: tabular-nums; }
.stat-sub { font-size: 12.5px; color: var(--muted); }
.row { display: flex; gap: 16px; align-items: stretch; }
.row > .card { margin-bottom: 16px; }
.grow { flex: 1 1 0; }
#plot-card { flex: 1.75 1 0; }
.side { flex: 1 1 0; max-width: 440px; }
.card-head { display: flex; justify-content: space-between; align-items: baseline; gap: 12px; margin-bottom: 8px; flex-wrap: wrap; }
h2 { font-size: 16px; margin: 0; font-weight: 650; }
.hint, .muted { color: var(--muted); font-size: 12.5px; }
#plot svg, #hv svg { width: 100%; height: auto; display: block; }
svg text { font-family: inherit; fill: #3d4856; }
.axis-label { font-size: 13px; fill: #1b2430; }
.tick { font-size: 11.5px; }
.gridline { stroke: #edf0f4; }
.axis { stroke: #9aa5b1; }
.pt { cursor: pointer; stroke: #fff; stroke-width: .8; transition: opacity .1s; }
.pt.seed { stroke: #111; stroke-width: 1.1; }
.pt.front { stroke: var(--front); stroke-width: 2.2; }
.pt.base { stroke: #111; stroke-width: 1.1; fill: #ffb703; }
.pt:hover, .pt.hover { stroke: #000; stroke-width: 2.5; }
.pt.selected { stroke: #000; stroke-width: 3; }
.front-line { fill: none; stroke: var(--front); stroke-width: 1.8; opacity: .85; }
.sel-ring { fill: none; stroke: #000; stroke-width: 1.5; stroke-dasharray: 3 2; pointer-events: none; }
.legend { display: flex; flex-wrap: wrap; gap: 6px 16px; align-items: center; font-size: 12.5px; color: #3d4856; margin-top: 6px; }
.legend .item { display: inline-flex; align-items: center; gap: 6px; }
.legend svg { width: 16px; height: 16px; }
.cbar { display: inline-flex; align-items: center; gap: 6px; }
.cbar .bar { width: 120px; height: 10px; border-radius: 3px; }
.tip { position: fixed; z-index: 10; pointer-events: none; background: #fff; border: 1px solid #cdd5df;
  border-radius: 8px; box-shadow: 0 8px 24px rgba(20,33,61,.18); padding: 10px 12px; max-width: 360px; font-size: 12.5px; }
.tip h3 { margin: 0 0 6px; font-size: 13.5px; }
.tip table, .facts { border-collapse: collapse; width: 100%; }
.tip td, .facts td, .facts th { padding: 1px 0; vertical-align: top; }
.tip td:first-child, .facts th { color: var(--muted); padding-right: 12px; white-space: nowrap; font-weight: 400; text-align: left; }
.tip td:last-child, .facts td { font-variant-numeric: tabular-nums; word-break: break-all; }
.badge { display: inline-block; font-size: 11px; padding: 1px 7px; border-radius: 10px; background: #eef2f7; color: #3d4856;
  margin-left: 6px; font-weight: 600; vertical-align: 1px; }
.badge.front { background: #fde2e2; color: #a4161a; }
.heat { margin-top: 8px; }
.heat canvas { display: block; }
.heat-legend { display: flex; flex-wrap: wrap; gap: 2px 12px; font-size: 11.5px; color: var(--muted); margin-top: 4px; }
.sw { display: inline-block; width: 10px; height: 10px; border-radius: 2px; margin-right: 4px; vertical-align: -1px; }
#details-body h3 { margin: 0 0 8px; font-size: 15px; }
.facts { margin-bottom: 6px; font-size: 13px; }
.facts th, .facts td { padding: 2px 14px 2px 0; }
.samples-grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(330px, 1fr)); gap: 16px; }
.sample { border: 1px solid var(--line); border-radius: 8px; padding: 10px; background: #fafbfc; }
.sample .prompt { font-size: 12.5px; margin-bottom: 8px; color: #3d4856; }
.pair { display: grid; grid-template-columns: 1fr 1fr; gap: 8px; }
.pair figure { margin: 0; }
.pair img { width: 100%; aspect-ratio: 1 / 1; object-fit: contain; border-radius: 4px; background: #e9edf2; display: block; }
.pair img.pixel { image-rendering: pixelated; }
.pair figcaption { font-size: 11.5px; color: var(--muted); text-align: center; margin-top: 3px; }
.note { background: #f6f8fb; border: 1px dashed #c5cfdb; border-radius: 8px; padding: 12px 14px; color: #3d4856; }
.note code { display: block; margin-top: 6px; background: #fff; border: 1px solid var(--line); border-radius: 4px;
  padding: 6px 8px; white-space: pre-wrap; word-break: break-all; }
.table-wrap { overflow-x: auto; }
table.data { border-collapse: collapse; width: 100%; font-size: 13px; }
table.data th { text-align: left; font-weight: 600; color: var(--muted); font-size: 12px; border-bottom: 1px solid var(--line);
  padding: 6px 10px; white-space: nowrap; }
table.data td { padding: 5px 10px; border-bottom: 1px solid #f0f2f5; font-variant-numeric: tabular-nums; white-space: nowrap; }
table.data td.num, table.data th.num { text-align: right; }
table.data tbody tr { cursor: pointer; }
table.data tbody tr:hover { background: #f5f8fc; }
table.data tbody tr.selected { background: #e8f0fb; }
table.kv { border-collapse: collapse; width: 100%; font-size: 13px; }
table.kv th { text-align: left; color: var(--muted); font-weight: 500; padding: 5px 14px 5px 0; vertical-align: top; white-space: nowrap; width: 1%; }
table.kv td { padding: 5px 0; border-bottom: 1px solid #f0f2f5; word-break: break-all; }
table.kv tr:last-child td { border-bottom: 0; }
.foot { color: var(--muted); font-size: 12px; padding-bottom: 28px; }
@media (max-width: 1000px) { .row { flex-direction: column; } .side { max-width: none; } .stats { grid-template-columns: repeat(2, 1fr); } }
"""

JS = r"""
(function () {
  "use strict";
  var D = JSON.parse(document.getElementById("report-data").textContent);
  var SVGNS = "http://www.w3.org/2000/svg";
  var VIRIDIS = ["#440154", "#482878", "#3e4989", "#31688e", "#26828e", "#1f9e89", "#35b779", "#6ece58", "#b5de2b", "#fde725"];
  var COLORS = { compute: "#1d3557", reuse: "#dbe6f2", skip: "#b0b0b0", none: "#ffffff", front: "#d62828" };
  var SEED_SHAPES = { "every_n (FORA-like)": "square", "attention_every_n": "triangle", "tgate (T-GATE-like)": "tri-down",
    "single component": "diamond", "seed file": "plus" };
  var byKey = {}, frontRank = {}, elems = {}, selected = null;
  D.points.forEach(function (p) { byKey[p.k] = p; });
  D.frontier.forEach(function (k, i) { frontRank[k] = i; });
  var maxGen = Math.max.apply(null, [1].concat(D.points.map(function (p) { return p.g; })));

  // ------------------------------------------------------------ helpers
  function el(tag, attrs, text) {
    var e = document.createElement(tag);
    if (attrs) Object.keys(attrs).forEach(function (a) { e.setAttribute(a, attrs[a]); });
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }
  function sv(tag, attrs, text) {
    var e = document.createElementNS(SVGNS, tag);
    if (attrs) Object.keys(attrs).forEach(function (a) { e.setAttribute(a, attrs[a]); });
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }
  function hex2rgb(h) { return [parseInt(h.substr(1, 2), 16), parseInt(h.substr(3, 2), 16), parseInt(h.substr(5, 2), 16)]; }
  function genColor(g) {
    var t = Math.max(0, Math.min(1, g / maxGen)) * (VIRIDIS.length - 1), i = Math.min(VIRIDIS.length - 2, Math.floor(t)), f = t - i;
    var a = hex2rgb(VIRIDIS[i]), b = hex2rgb(VIRIDIS[i + 1]);
    return "rgb(" + [0, 1, 2].map(function (j) { return Math.round(a[j] + (b[j] - a[j]) * f); }).join(",") + ")";
  }
  function fmtQ(v) { return typeof v !== "number" ? (v === null || v === undefined ? "—" : String(v)) : (Math.abs(v) >= 100 ? v.toFixed(2) : Math.abs(v) >= 10 ? v.toFixed(3) : v.toFixed(4)); }
  function fmtPct(v) { return v === null || v === undefined ? "—" : (v * 100).toFixed(1) + "%"; }
  function fmtCost(v) { return D.run.cost === "latency" ? (v === null ? "—" : v.toFixed(3) + "× latency") : fmtPct(v) + " MACs"; }
  function fmtX(v) { return v === null || v === undefined || !(v > 0) ? "—" : (1 / v).toFixed(2) + "×"; }
  function kindName(p) {
    if (p.t === "no_caching") return "no caching";
    if (p.t === "seed") return "heuristic seed";
    if (p.t === "random") return "random initial";
    return "evolved";
  }
  function labelOf(p) { return D.labels[p.l] || "—"; }
  function ticks(lo, hi, n) {
    var span = hi - lo; if (!(span > 0)) return [lo];
    var raw = span / n, mag = Math.pow(10, Math.floor(Math.log10(raw))), e = raw / mag;
    var step = (e >= 7.5 ? 10 : e >= 3.5 ? 5 : e >= 1.5 ? 2 : 1) * mag, out = [];
    for (var v = Math.ceil(lo / step - 1e-9) * step; v <= hi + step * 1e-9; v += step) out.push(+v.toFixed(12));
    out.step = step; return out;
  }
  function tickFmt(step) { var d = Math.max(0, -Math.floor(Math.log10(step) + 1e-9)); return function (v) { return v.toFixed(d); }; }

  // ------------------------------------------------------------ symbols
  function shapePath(shape, x, y, r) {
    var k;
    switch (shape) {
      case "square": k = r * 0.9; return "M" + (x - k) + "," + (y - k) + "h" + 2 * k + "v" + 2 * k + "h" + (-2 * k) + "Z";
      case "diamond": k = r * 1.25; return "M" + x + "," + (y - k) + "L" + (x + k) + "," + y + "L" + x + "," + (y + k) + "L" + (x - k) + "," + y + "Z";
      case "triangle": k = r * 1.3; return "M" + x + "," + (y - k) + "L" + (x + k) + "," + (y + k * 0.75) + "L" + (x - k) + "," + (y + k * 0.75) + "Z";
      case "tri-down": k = r * 1.3; return "M" + x + "," + (y + k) + "L" + (x + k) + "," + (y - k * 0.75) + "L" + (x - k) + "," + (y - k * 0.75) + "Z";
      case "plus": k = r * 1.2; var w = k * 0.4;
        return "M" + (x - w) + "," + (y - k) + "h" + 2 * w + "v" + (k - w) + "h" + (k - w) + "v" + 2 * w + "h" + (w - k) + "v" + (k - w) + "h" + (-2 * w) + "v" + (w - k) + "h" + (w - k) + "v" + (-2 * w) + "h" + (k - w) + "Z";
      case "star": var s = "", i; for (i = 0; i < 10; i++) { var a = Math.PI / 5 * i - Math.PI / 2, rr = i % 2 ? r * 0.45 : r;
        s += (i ? "L" : "M") + (x + rr * Math.cos(a)).toFixed(2) + "," + (y + rr * Math.sin(a)).toFixed(2); } return s + "Z";
      default: return "M" + (x - r) + "," + y + "a" + r + "," + r + " 0 1,0 " + 2 * r + ",0a" + r + "," + r + " 0 1,0 " + (-2 * r) + ",0Z";
    }
  }
  function shapeOf(p) { return p.t === "no_caching" ? "star" : p.t === "seed" ? (SEED_SHAPES[p.f] || "diamond") : "circle"; }
  function legendIcon(shape, fill, stroke, sw) {
    var s = sv("svg", { viewBox: "0 0 16 16" });
    s.appendChild(sv("path", { d: shapePath(shape, 8, 8, shape === "star" ? 7.5 : 5), fill: fill, stroke: stroke, "stroke-width": sw || 1 }));
    return s;
  }

  // ------------------------------------------------------------ genome -> heatmap
  function bitsOf(hex) {
    var bytes = new Uint8Array(hex.length >> 1);
    for (var i = 0; i < bytes.length; i++) bytes[i] = parseInt(hex.substr(2 * i, 2), 16);
    return function (i) { return (bytes[i >> 3] >> (7 - (i & 7))) & 1; };
  }
  function heatmap(hex, maxW) {
    var L = D.layout, box = el("div", { "class": "heat" });
    if (!L || !hex) { box.appendChild(el("div", { "class": "muted" }, "schedule not available (search space not found)")); return box; }
    var S = L.steps, B = L.blocks, C = L.comps, bit = bitsOf(hex), grid = S * B * C;
    var run = []; for (var s = 0; s < S; s++) run.push(L.timesteps ? bit(grid + s) === 1 || s === 0 : true);
    var stacked = B > 36, gap = 14, padL = 22, titleH = 15, cw;
    if (stacked) cw = Math.max(2, Math.min(8, Math.floor((maxW - padL) / B)));
    else cw = Math.max(2, Math.min(maxW > 400 ? 20 : 14, Math.floor((maxW - padL - gap * (C - 1)) / (C * B))));
    var ch = Math.max(2, Math.min(cw, stacked ? 5 : 16, Math.floor(260 / S)));
    var pw = B * cw, ph = S * ch;
    var W = stacked ? padL + pw : padL + C * pw + (C - 1) * gap, H = stacked ? C * (titleH + ph + 8) : titleH + ph + 4;
    var dpr = window.devicePixelRatio || 1, cv = el("canvas");
    cv.width = Math.round(W * dpr); cv.height = Math.round(H * dpr); cv.style.width = W + "px"; cv.style.height = H + "px";
    var ctx = cv.getContext("2d"); ctx.scale(dpr, dpr);
    ctx.font = "10.5px -apple-system, Segoe UI, Roboto, Arial, sans-serif"; ctx.textBaseline = "alphabetic";
    var bounds = [], acc = 0; L.groups.forEach(function (g, i) { acc += g.blocks; if (i < L.groups.length - 1) bounds.push(acc); });
    var computed = 0;
    for (var c = 0; c < C; c++) {
      var x0 = stacked ? padL : padL + c * (pw + gap), y0 = stacked ? c * (titleH + ph + 8) + titleH : titleH;
      var names = L.groups.map(function (g) { return g.components[c] || "\u2014"; }).join(" | ");
      ctx.fillStyle = "#3d4856"; ctx.fillText(names, x0, y0 - 4, stacked ? pw : pw + gap - 2);
      for (s = 0; s < S; s++) for (var b = 0; b < B; b++) {
        var on = bit((s * B + b) * C + c) === 1, real = c < L.widths[b];
        if (on && run[s] && real) computed++;
        ctx.fillStyle = !real ? COLORS.none : !run[s] ? COLORS.skip : on ? COLORS.compute : COLORS.reuse;
        ctx.fillRect(x0 + b * cw, y0 + s * ch, cw, ch);
      }
      ctx.strokeStyle = "#9aa5b1"; ctx.lineWidth = 0.75; ctx.strokeRect(x0 + 0.5, y0 + 0.5, pw - 1, ph - 1);
      ctx.strokeStyle = COLORS.front; ctx.lineWidth = 1.5;
      bounds.forEach(function (bd) { ctx.beginPath(); ctx.moveTo(x0 + bd * cw, y0 - 1); ctx.lineTo(x0 + bd * cw, y0 + ph + 1); ctx.stroke(); });
      if (c === 0 || stacked) {
        ctx.save(); ctx.fillStyle = "#6b7785"; ctx.translate(padL - 8, y0 + ph / 2); ctx.rotate(-Math.PI / 2);
        ctx.textAlign = "center"; ctx.fillText("step", 0, 0); ctx.restore();
      }
    }
    box.appendChild(cv);
    var lg = el("div", { "class": "heat-legend" });
    [["compute", COLORS.compute], ["reuse", COLORS.reuse]].concat(run.indexOf(false) >= 0 ? [["step not run", COLORS.skip]] : [])
      .forEach(function (it) { var sp = el("span"); var w = el("span", { "class": "sw" }); w.style.background = it[1]; sp.appendChild(w); sp.appendChild(document.createTextNode(it[0])); lg.appendChild(sp); });
    var nrun = run.filter(Boolean).length;
    var cells = S * L.widths.reduce(function (a, w) { return a + w; }, 0);
    lg.appendChild(el("span", null, (100 * computed / cells).toFixed(1) + "% computed" + (nrun < S ? " · " + nrun + "/" + S + " steps run" : "") +
      " · rows: steps, columns: blocks" + (L.groups.length > 1 ? " (" + L.groups.map(function (g) { return g.short + " " + g.blocks; }).join(" | ") + ")" : "")));
    box.appendChild(lg);
    return box;
  }

  // ------------------------------------------------------------ facts table
  function facts(p, cls) {
    var t = el("table", { "class": cls }), tb = el("tbody");
    function row(a, b) { var tr = el("tr"); tr.appendChild(el(cls === "facts" ? "th" : "td", null, a)); tr.appendChild(el("td", null, b)); tb.appendChild(tr); }
    row(D.run.metric, fmtQ(p.q));
    row(D.run.cost === "latency" ? "relative latency" : "MACs", D.run.cost === "latency" ? p.c.toFixed(3) : fmtPct(p.c));
    row("est. speedup", fmtX(p.c));
    if (D.run.cost === "latency" && p.m !== null) row("MACs", fmtPct(p.m));
    row("label", labelOf(p) + " (" + kindName(p) + ")");
    row("generation", p.g);
    if (p.k in frontRank) row("frontier rank", frontRank[p.k] + " of " + D.frontier.length);
    if (cls === "facts") {
      Object.keys(p.x || {}).forEach(function (k) { if (p.x[k] !== null) row(k, fmtQ(p.x[k])); });
      if (typeof p.ms === "number") row("ms / image", p.ms.toFixed(1));
      if (D.files[p.k]) row("schedule file", "frontier/" + D.files[p.k]);
    }
    row("key", p.k);
    t.appendChild(tb); return t;
  }

  // ------------------------------------------------------------ tooltip
  var tip = document.getElementById("tip");
  function showTip(p, ev) {
    tip.textContent = "";
    var h = el("h3", null, labelOf(p));
    if (p.k in frontRank) h.appendChild(el("span", { "class": "badge front" }, "frontier #" + frontRank[p.k]));
    else h.appendChild(el("span", { "class": "badge" }, kindName(p)));
    tip.appendChild(h);
    tip.appendChild(facts(p, "tipfacts"));
    tip.appendChild(heatmap(p.h, 330));
    tip.hidden = false;
    moveTip(ev);
  }
  function moveTip(ev) {
    var w = tip.offsetWidth, h = tip.offsetHeight, x = ev.clientX + 16, y = ev.clientY + 16;
    if (x + w > window.innerWidth - 8) x = ev.clientX - w - 16;
    if (y + h > window.innerHeight - 8) y = Math.max(8, window.innerHeight - h - 8);
    tip.style.left = Math.max(8, x) + "px"; tip.style.top = y + "px";
  }
  function hideTip() { tip.hidden = true; }

  // ------------------------------------------------------------ scatter
  function drawScatter() {
    var W = 780, H = 500, m = { l: 66, r: 18, t: 46, b: 52 };
    var svg = sv("svg", { viewBox: "0 0 " + W + " " + H, id: "frontier-svg", role: "img", "aria-label": "quality versus cost of every candidate" });
    var pts = D.points;
    var cmax = Math.max.apply(null, [1].concat(pts.map(function (p) { return p.c; })));
    var qs = pts.map(function (p) { return p.q; });
    var qlo = qs.length ? Math.min.apply(null, qs) : 0, qhi = qs.length ? Math.max.apply(null, qs) : 1;
    var qpad = (qhi - qlo) * 0.07 || Math.max(Math.abs(qhi) * 0.05, 0.01);
    var x0 = 0, x1 = cmax * 1.05, y0 = qlo - qpad, y1 = qhi + qpad;
    function X(v) { return m.l + (v - x0) / (x1 - x0) * (W - m.l - m.r); }
    function Y(v) { return H - m.b - (v - y0) / (y1 - y0) * (H - m.t - m.b); }
    var g = sv("g");
    var xt = ticks(x0, x1, 8), yt = ticks(y0, y1, 7), xf = tickFmt(xt.step || 0.1), yf = tickFmt(yt.step || 0.1);
    xt.forEach(function (v) { g.appendChild(sv("line", { "class": "gridline", x1: X(v), x2: X(v), y1: m.t, y2: H - m.b }));
      g.appendChild(sv("text", { "class": "tick", x: X(v), y: H - m.b + 16, "text-anchor": "middle" }, D.run.cost === "macs" ? Math.round(v * 100) + "%" : xf(v))); });
    yt.forEach(function (v) { g.appendChild(sv("line", { "class": "gridline", x1: m.l, x2: W - m.r, y1: Y(v), y2: Y(v) }));
      g.appendChild(sv("text", { "class": "tick", x: m.l - 8, y: Y(v) + 4, "text-anchor": "end" }, yf(v))); });
    var lastX = -1e9;
    [1, 1.25, 1.5, 2, 3, 4, 5, 6, 8, 10, 20].forEach(function (s) { var v = 1 / s; if (v < x0 || v > x1 || Math.abs(X(v) - lastX) < 30) return;
      lastX = X(v);
      g.appendChild(sv("line", { "class": "axis", x1: X(v), x2: X(v), y1: m.t, y2: m.t - 4 }));
      g.appendChild(sv("text", { "class": "tick", x: X(v), y: m.t - 8, "text-anchor": "middle" }, s + "×")); });
    g.appendChild(sv("line", { "class": "axis", x1: m.l, x2: W - m.r, y1: H - m.b, y2: H - m.b }));
    g.appendChild(sv("line", { "class": "axis", x1: m.l, x2: W - m.r, y1: m.t, y2: m.t }));
    g.appendChild(sv("line", { "class": "axis", x1: m.l, x2: m.l, y1: m.t, y2: H - m.b }));
    g.appendChild(sv("text", { "class": "axis-label", x: (m.l + W - m.r) / 2, y: H - 12, "text-anchor": "middle" },
      "cost: " + D.run.costLabel + " — lower is better"));
    g.appendChild(sv("text", { "class": "axis-label", x: (m.l + W - m.r) / 2, y: 14, "text-anchor": "middle" }, "estimated speedup (1 / cost)"));
    g.appendChild(sv("text", { "class": "axis-label", transform: "translate(18," + (m.t + H - m.b) / 2 + ") rotate(-90)", "text-anchor": "middle" },
      "quality: " + D.run.qualityLabel));
    svg.appendChild(g);
    if (!pts.length) svg.appendChild(sv("text", { x: W / 2, y: H / 2, "text-anchor": "middle", "class": "axis-label" }, "no feasible candidates yet"));
    if (D.frontier.length > 1) {
      var d = D.frontier.map(function (k, i) { return (i ? "L" : "M") + X(byKey[k].c).toFixed(1) + "," + Y(byKey[k].q).toFixed(1); }).join("");
      svg.appendChild(sv("path", { "class": "front-line", d: d }));
    }
    var layer = sv("g", { id: "points" });
    var order = pts.slice().sort(function (a, b) {
      function z(p) { return p.t === "no_caching" ? 3 : (p.k in frontRank) ? 2 : p.t === "seed" ? 1 : 0; }
      return z(a) - z(b) || a.g - b.g;
    });
    order.forEach(function (p) {
      var front = p.k in frontRank, shape = shapeOf(p), r = p.t === "no_caching" ? 11 : front ? 6.5 : p.t === "seed" ? 5.5 : 4.2;
      var cls = "pt" + (front ? " front" : "") + (p.t === "seed" ? " seed" : "") + (p.t === "no_caching" ? " base" : "");
      var e = sv("path", { "class": cls, d: shapePath(shape, X(p.c), Y(p.q), r), "data-key": p.k, fill: p.t === "no_caching" ? "#ffb703" : genColor(p.g) });
      e.addEventListener("mouseenter", function (ev) { showTip(p, ev); highlightRow(p.k, true); });
      e.addEventListener("mousemove", moveTip);
      e.addEventListener("mouseleave", function () { hideTip(); highlightRow(p.k, false); });
      e.addEventListener("click", function () { select(p.k); });
      elems[p.k] = e; layer.appendChild(e);
    });
    svg.appendChild(layer);
    var base = pts.filter(function (p) { return p.t === "no_caching"; })[0];
    if (base) svg.appendChild(sv("text", { "class": "tick", x: X(base.c), y: Y(base.q) + (D.run.higher ? 26 : -16), "text-anchor": "middle" }, "no caching"));
    document.getElementById("plot").appendChild(svg);
  }

  function drawLegend() {
    var lg = document.getElementById("legend");
    function item(icon, text) { var s = el("span", { "class": "item" }); s.appendChild(icon); s.appendChild(document.createTextNode(text)); lg.appendChild(s); }
    var cb = el("span", { "class": "cbar" }), bar = el("span", { "class": "bar" });
    bar.style.background = "linear-gradient(90deg," + VIRIDIS.join(",") + ")";
    cb.appendChild(document.createTextNode("generation 0")); cb.appendChild(bar); cb.appendChild(document.createTextNode(String(maxGen)));
    lg.appendChild(cb);
    item(legendIcon("circle", "#8a94a3", "#fff"), "searched");
    var fams = {}; D.points.forEach(function (p) { if (p.t === "seed") fams[p.f] = (fams[p.f] || 0) + 1; });
    Object.keys(fams).sort().forEach(function (f) { item(legendIcon(SEED_SHAPES[f] || "diamond", "#fff", "#111"), "seed: " + f + " (" + fams[f] + ")"); });
    item(legendIcon("circle", "#fff", COLORS.front, 2), "Pareto frontier (" + D.frontier.length + ")");
    if (D.points.some(function (p) { return p.t === "no_caching"; })) item(legendIcon("star", "#ffb703", "#111"), "no caching");
  }

  // ------------------------------------------------------------ frontier table
  function drawTable() {
    var t = document.getElementById("front-table"), th = el("thead"), tr = el("tr");
    var cols = [["#", "num"], [D.run.metric, "num"], [D.run.cost === "latency" ? "latency" : "MACs", "num"], ["est. speedup", "num"],
      ["label", ""], ["gen", "num"], ["schedule file", ""], ["key", ""]];
    cols.forEach(function (c) { tr.appendChild(el("th", { "class": c[1] }, c[0])); });
    th.appendChild(tr); t.appendChild(th);
    var tb = el("tbody");
    D.frontier.forEach(function (k, i) {
      var p = byKey[k], r = el("tr", { "data-key": k });
      [[i, "num"], [fmtQ(p.q), "num"], [D.run.cost === "latency" ? p.c.toFixed(3) : fmtPct(p.c), "num"], [fmtX(p.c), "num"],
        [labelOf(p), ""], [p.g, "num"], [D.files[k] || "(not written yet)", ""], [k, ""]].forEach(function (c) { r.appendChild(el("td", { "class": c[1] }, c[0])); });
      r.addEventListener("click", function () { select(k); document.getElementById("plot-card").scrollIntoView({ behavior: "smooth" }); });
      r.addEventListener("mouseenter", function () { if (elems[k]) elems[k].classList.add("hover"); });
      r.addEventListener("mouseleave", function () { if (elems[k]) elems[k].classList.remove("hover"); });
      tb.appendChild(r);
    });
    if (!D.frontier.length) { var r0 = el("tr"), td = el("td", { colspan: "8", "class": "muted" }, "no frontier yet"); r0.appendChild(td); tb.appendChild(r0); }
    t.appendChild(tb);
  }
  function highlightRow(k, on) {
    var r = document.querySelector('#front-table tr[data-key="' + k + '"]');
    if (r) r.style.background = on ? "#f5f8fc" : "";
  }

  // ------------------------------------------------------------ selection
  function select(k) {
    var p = byKey[k]; if (!p) return;
    if (selected && elems[selected]) elems[selected].classList.remove("selected");
    selected = k; if (elems[k]) { elems[k].classList.add("selected"); elems[k].parentNode.appendChild(elems[k]); }
    document.querySelectorAll("#front-table tbody tr").forEach(function (r) { r.classList.toggle("selected", r.getAttribute("data-key") === k); });
    var body = document.getElementById("details-body"); body.textContent = "";
    var h = el("h3", null, labelOf(p));
    h.appendChild(el("span", { "class": "badge" + (k in frontRank ? " front" : "") }, k in frontRank ? "frontier #" + frontRank[k] : kindName(p)));
    body.appendChild(h); body.appendChild(facts(p, "facts")); body.appendChild(heatmap(p.h, 420));
    drawSamples(p);
  }
  function drawSamples(p) {
    var sec = document.getElementById("samples"), body = document.getElementById("samples-body");
    body.textContent = ""; sec.hidden = false;
    document.getElementById("samples-title").textContent = "Samples — " + labelOf(p) + (p.k in frontRank ? " (frontier #" + frontRank[p.k] + ")" : "");
    var S = D.samples, imgs = S && S.schedules ? S.schedules[p.k] : null;
    document.getElementById("samples-hint").textContent = S ? "no caching vs this schedule, same seed" + (S.seed !== null && S.seed !== undefined ? " (" + S.seed + ")" : "") : "";
    if (!S || !imgs) {
      var n = el("div", { "class": "note" });
      n.appendChild(document.createTextNode(S ? "No sample images were rendered for this schedule (samples cover " +
        Object.keys(S.schedules || {}).length + " schedules: the frontier when the report was written). To render them:" :
        "This report has no sample images. Render the first prompts without caching and with every frontier schedule, then rebuild the report:"));
      D.howto.forEach(function (c) { n.appendChild(el("code", null, c)); });
      body.appendChild(n); return;
    }
    var grid = el("div", { "class": "samples-grid" });
    S.prompts.forEach(function (prompt, i) {
      var card = el("div", { "class": "sample" });
      card.appendChild(el("div", { "class": "prompt" }, "“" + prompt + "”"));
      var pair = el("div", { "class": "pair" });
      [["no caching", S.uncached[i]], [fmtX(p.c) + " est. speedup · " + labelOf(p), imgs[i]]].forEach(function (it) {
        var f = el("figure"), im = el("img", { alt: it[0] + ": " + prompt });
        im.addEventListener("load", function () { if (im.naturalWidth < 160) im.classList.add("pixel"); });
        if (it[1]) im.src = it[1];
        f.appendChild(im); f.appendChild(el("figcaption", null, it[0])); pair.appendChild(f);
      });
      card.appendChild(pair); grid.appendChild(card);
    });
    body.appendChild(grid);
  }

  // ------------------------------------------------------------ hypervolume
  function drawHV() {
    var W = 620, H = 300, m = { l: 66, r: 20, t: 16, b: 44 }, hv = D.hv, box = document.getElementById("hv");
    if (!hv.length) { box.appendChild(el("p", { "class": "muted" }, "no generation recorded yet")); return; }
    var svg = sv("svg", { viewBox: "0 0 " + W + " " + H, id: "hv-svg" });
    var g0 = hv[0][0], g1 = Math.max(hv[hv.length - 1][0], g0 + 1), vs = hv.map(function (r) { return r[1]; });
    var lo = Math.min.apply(null, vs), hi = Math.max.apply(null, vs), pad = (hi - lo) * 0.15 || Math.max(Math.abs(hi) * 0.05, 1e-3);
    lo -= pad; hi += pad;
    function X(v) { return m.l + (v - g0) / (g1 - g0) * (W - m.l - m.r); }
    function Y(v) { return H - m.b - (v - lo) / (hi - lo) * (H - m.t - m.b); }
    var xt = ticks(g0, g1, Math.min(10, g1 - g0)).filter(function (v) { return Math.abs(v - Math.round(v)) < 1e-9; }), yt = ticks(lo, hi, 5), yf = tickFmt(yt.step || 0.1);
    xt.forEach(function (v) { svg.appendChild(sv("line", { "class": "gridline", x1: X(v), x2: X(v), y1: m.t, y2: H - m.b }));
      svg.appendChild(sv("text", { "class": "tick", x: X(v), y: H - m.b + 16, "text-anchor": "middle" }, v)); });
    yt.forEach(function (v) { svg.appendChild(sv("line", { "class": "gridline", x1: m.l, x2: W - m.r, y1: Y(v), y2: Y(v) }));
      svg.appendChild(sv("text", { "class": "tick", x: m.l - 8, y: Y(v) + 4, "text-anchor": "end" }, yf(v))); });
    svg.appendChild(sv("line", { "class": "axis", x1: m.l, x2: W - m.r, y1: H - m.b, y2: H - m.b }));
    svg.appendChild(sv("line", { "class": "axis", x1: m.l, x2: m.l, y1: m.t, y2: H - m.b }));
    svg.appendChild(sv("path", { d: hv.map(function (r, i) { return (i ? "L" : "M") + X(r[0]).toFixed(1) + "," + Y(r[1]).toFixed(1); }).join(""),
      fill: "none", stroke: COLORS.compute, "stroke-width": 2.2 }));
    hv.forEach(function (r) { var c = sv("circle", { cx: X(r[0]), cy: Y(r[1]), r: 4.5, fill: "#fff", stroke: COLORS.compute, "stroke-width": 2 });
      c.appendChild(sv("title", null, "generation " + r[0] + ": hypervolume " + r[1].toFixed(5) + ", " + r[2] + " new evaluations")); svg.appendChild(c); });
    svg.appendChild(sv("text", { "class": "axis-label", x: (m.l + W - m.r) / 2, y: H - 8, "text-anchor": "middle" }, "generation"));
    svg.appendChild(sv("text", { "class": "axis-label", transform: "translate(16," + (m.t + H - m.b) / 2 + ") rotate(-90)", "text-anchor": "middle" }, "hypervolume"));
    box.appendChild(svg);
  }

  drawScatter(); drawLegend(); drawTable(); drawHV();
})();
"""
