"""Run reports: PNG plots of a finished (and a running) search, and the HTML page in headless Chromium."""

from __future__ import annotations

import ast
import base64
import itertools
import json
import os
import shlex
import shutil
from pathlib import Path

import numpy as np
import pytest

import ecad
from ecad.models import FAMILIES, adapter_for
from ecad.report import load_run, plot_schedule_heatmap, render_samples, write_report, write_run_plots
from ecad.report.plots import frontier_figure, schedule_heatmap_figure, schedule_image
from ecad.search.run import ExecConfig, SearchConfig, SearchRun
from ecad.spaces import load_space
from tests.conftest import SMALL

PNG = b"\x89PNG\r\n\x1a\n"
CHROME_INSTALL = "apt-get install -y chromium chromium-driver"


def _is_png(path: Path) -> bool:
    data = path.read_bytes()
    return data[:8] == PNG and len(data) > 1024


def _feasible_keys(run_dir: Path) -> set[str]:
    rows = [json.loads(line) for line in (run_dir / "evaluations.jsonl").read_text().splitlines() if line.strip()]
    return {r["key"] for r in rows if r["feasible"]}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("report") / "run"
    return SearchRun(SearchConfig(**SMALL), ExecConfig(out=str(out), workers=0, quiet=True)).run()


def test_run_plots_are_written_for_a_finished_run(run_dir):
    plots = write_run_plots(run_dir)
    assert plots == run_dir / "plots"
    assert _is_png(plots / "frontier.png") and _is_png(plots / "hypervolume.png")
    front = json.loads((run_dir / "frontier" / "frontier.json").read_text())["points"]
    heatmaps = sorted(p.name for p in (plots / "heatmaps").glob("*.png"))
    assert heatmaps == sorted(Path(p["schedule"]).stem + ".png" for p in front)
    assert all(_is_png(plots / "heatmaps" / name) for name in heatmaps)
    assert not list(plots.rglob("*.tmp")), "a temp file was left behind"
    # A running search calls this after every generation; it stays cheap because heatmaps of
    # unchanged frontier schedules are kept, not redrawn. A redraw writes a temp file and renames it
    # over the old one, so it would change the inode and the mtime of the file.
    before = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in (plots / "heatmaps").glob("*.png")}
    assert before, "the frontier has schedules, so there are heatmaps to keep"
    assert write_run_plots(run_dir) == plots
    after = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in (plots / "heatmaps").glob("*.png")}
    assert after == before, "an unchanged frontier schedule's heatmap was re-rendered"
    assert _is_png(plots / "frontier.png") and _is_png(plots / "hypervolume.png")


def test_run_plots_while_a_search_is_still_running(run_dir, tmp_path):
    running = tmp_path / "running"
    shutil.copytree(run_dir, running, ignore=shutil.ignore_patterns("frontier", "plots", "report.html"))
    (running / "evaluations.jsonl").write_text((run_dir / "evaluations.jsonl").read_text() + '{"key": "torn')
    write_run_plots(running)
    front = json.loads((run_dir / "frontier" / "frontier.json").read_text())["points"]
    # the frontier is decoded from the genomes and named as the finished run will name it
    names = sorted(p.name for p in (running / "plots" / "heatmaps").glob("*.png"))
    assert names == sorted(Path(p["schedule"]).stem + ".png" for p in front)
    assert [p.key for p in load_run(running).frontier] == [p["key"] for p in front]
    page = write_report(running).read_text()
    assert "report-data" in page and "http://" not in page.replace("http://www.w3.org/2000/svg", "")


def _overlapping(boxes: list) -> list:
    return [(a, b) for (a, ba), (b, bb) in itertools.combinations(boxes, 2) if ba.overlaps(bb)]


def test_frontier_png_labels_each_frontier_point_with_its_rank(run_dir):
    """A point of the PNG frontier can be matched to its file: its label is the NNN of
    frontier/NNN_key.json (the table's #), and no two labels sit on each other."""
    front = json.loads((run_dir / "frontier" / "frontier.json").read_text())["points"]
    fig = frontier_figure(run_dir)
    ax = fig.axes[0]
    labels = [t for t in ax.texts if t.get_gid() == "frontier-rank"]
    assert [t.get_text() for t in labels] == [str(i) for i in range(len(front))]
    assert [Path(p["schedule"]).name[:3] for p in front] == [f"{i:03d}" for i in range(len(front))]
    for text, p in zip(labels, front):
        assert text.xy == pytest.approx((p["cost"], p["quality"]))  # each label points at its own point
    renderer = fig.canvas.get_renderer()
    boxes = [(t.get_text(), t.get_window_extent(renderer)) for t in labels]
    assert not _overlapping(boxes), "frontier rank labels overlap"
    frame = ax.get_window_extent(renderer)
    assert all(frame.contains(b.x0, b.y0) and frame.contains(b.x1, b.y1) for _, b in boxes)


@pytest.mark.parametrize(
    "family", [f for f in FAMILIES if len(load_space(adapter_for(f).benchmark_space).layout.groups) > 1]
)
def test_heatmap_titles_of_grouped_layouts_do_not_collide(family):
    """FLUX (double + single blocks) and SD3 (dual, joint, final) panels: no title, group name or
    axis label of one panel runs into another's, measured with the figure's own renderer."""
    space = load_space(adapter_for(family).benchmark_space)
    schedule = ecad.Schedule.every_n(space.layout, space.steps, 2, timesteps=list(range(0, space.steps, 2)))
    fig = schedule_heatmap_figure(schedule, title=f"{family} · a long schedule title", note="quality 0.9  ·  MACs 40%")
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig).draw()
    renderer = fig.canvas.get_renderer()
    boxes = [("suptitle", fig._suptitle.get_window_extent(renderer))]
    for i, ax in enumerate(fig.axes):
        for name, text in (("title", ax.title), ("left title", ax._left_title), ("right title", ax._right_title)):
            if text.get_text():
                boxes.append((f"panel {i} {name}", text.get_window_extent(renderer)))
        boxes.append((f"panel {i} xlabel", ax.xaxis.label.get_window_extent(renderer)))
        boxes.append((f"panel {i} ylabel", ax.yaxis.label.get_window_extent(renderer)))
    assert not _overlapping(boxes), _overlapping(boxes)
    titles = [ax.get_title() for ax in fig.axes]
    if family == "flux":  # both groups named in every panel, each with its own component
        assert all("double: " in t and "single: " in t for t in titles), titles
        assert "double: full_attn" in titles[0] and "single: single_attn" in titles[0]


@pytest.mark.parametrize("family", FAMILIES)
def test_schedule_heatmaps_for_every_family(family, tmp_path):
    space = load_space(adapter_for(family).benchmark_space)
    steps = space.steps
    schedules = {
        "every": ecad.Schedule.every_n(space.layout, steps, 3),
        "subset": ecad.Schedule.every_n(space.layout, steps, 2, timesteps=list(range(0, steps, 2))),
    }
    for name, schedule in schedules.items():
        out = plot_schedule_heatmap(schedule, tmp_path / f"{name}.png")
        assert out == tmp_path / f"{name}.png" and _is_png(out)
    img = schedule_image(schedules["every"])  # what the panels show
    assert (img == 3).sum() == steps * (~space.layout.cell_mask()).sum()  # padding cells drawn as absent
    assert set(np.unique(img[0])) <= {1, 3} and 0 in img[1]


# ------------------------------------------------------------------------ HTML in Chromium
def _browser(tmp_path: Path):
    chromium = next(
        (shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None
    )
    driver_bin = shutil.which("chromedriver")
    if not chromium or not driver_bin:
        pytest.skip(f"headless Chromium not installed; install it with `{CHROME_INSTALL}`")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'chrome-profile'}",
        "--window-size=1400,1000",
    ):
        opts.add_argument(arg)
    opts.binary_location = chromium
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(options=opts, service=Service(driver_bin))


def _tampered_copy(run_dir: Path, dest: Path, key: str, text: str) -> Path:
    """A copy of the run whose label of `key` and config hold `text` (markup that must stay text)."""
    shutil.copytree(run_dir, dest, ignore=shutil.ignore_patterns("plots", "report.html"))
    for gen in sorted(dest.glob("gen_*.json")):
        rec = json.loads(gen.read_text())
        for m in rec["population"]:
            if m["key"] == key:
                m["label"] = text
        gen.write_text(json.dumps(rec))
    cfg = json.loads((dest / "config.json").read_text())
    cfg["config"]["metric_options"] = {"note": text}
    (dest / "config.json").write_text(json.dumps(cfg))
    return dest


def test_html_report_renders_and_is_interactive(run_dir, tmp_path):
    front = json.loads((run_dir / "frontier" / "frontier.json").read_text())["points"]
    target = front[0]  # the cheapest frontier schedule, far from the no-caching star
    samples = render_samples(run_dir, num_prompts=2)
    assert set(samples["schedules"]) == {p["key"] for p in front} and len(samples["uncached"]) == 2
    page = write_report(run_dir, tmp_path / "report.html", samples=samples)

    evil = '<img src=x onerror="window.__xss=1"></script>'
    bad_run = _tampered_copy(run_dir, tmp_path / 'evil"<b>run', target["key"], evil)  # the path is markup too
    bad = write_report(bad_run, tmp_path / "evil.html")  # and without samples
    html = bad.read_text()
    data_block = html.split('id="report-data">', 1)[1].split("</script>", 1)[0]
    assert "<img src=x" not in html and html.count("<script") == 2 and "<" not in data_block
    assert "<b>" not in html
    # the copy-ready commands name the real frontier file, quoted for the shell and for Python
    cmds = json.loads(data_block)["cmds"]
    bad_file = f'evil"<b>run/frontier/{target["schedule"]}'  # the run sits under the report: relative to it
    assert cmds[target["key"]]["path"] == bad_file
    assert shlex.split(cmds[target["key"]]["shell"])[:3] == ["ecad", "generate", "--schedule"]
    assert shlex.split(cmds[target["key"]]["shell"])[3] == bad_file
    call = ast.parse(cmds[target["key"]]["python"]).body[0].value  # ecad.apply_schedule(pipe, ecad.load_schedule(...))
    assert ast.literal_eval(call.args[1].args[0]) == bad_file
    assert ecad.load_schedule(bad.parent / ast.literal_eval(call.args[1].args[0])).num_steps > 0
    # the default report sits in the run: paths relative to it
    own = write_report(run_dir).read_text()
    own_cmds = json.loads(own.split('id="report-data">', 1)[1].split("</script>", 1)[0])["cmds"]
    assert own_cmds[target["key"]]["path"] == f"frontier/{target['schedule']}"

    driver = _browser(tmp_path)
    try:
        from selenium.webdriver.common.action_chains import ActionChains
        from selenium.webdriver.common.by import By
        from selenium.webdriver.common.keys import Keys
        from selenium.webdriver.support import expected_conditions as EC
        from selenium.webdriver.support.ui import WebDriverWait

        def open_page(path: Path) -> None:
            driver.get(path.resolve().as_uri())
            WebDriverWait(driver, 10).until(EC.presence_of_element_located((By.ID, "frontier-svg")))

        def point(key: str):
            return driver.find_element(By.CSS_SELECTOR, f'#frontier-svg .pt[data-key="{key}"]')

        open_page(page)
        assert len(driver.find_elements(By.CSS_SELECTOR, "#frontier-svg .pt")) == len(_feasible_keys(run_dir))
        assert len(driver.find_elements(By.CSS_SELECTOR, "#frontier-svg .pt.front")) == len(front)
        assert len(driver.find_elements(By.CSS_SELECTOR, "#front-table tbody tr")) == len(front)

        ActionChains(driver).move_to_element(point(target["key"])).perform()
        tip = driver.find_element(By.ID, "tip")
        WebDriverWait(driver, 5).until(lambda d: tip.is_displayed())
        text = tip.text
        assert f"{target['quality']:.4f}" in text and f"{1 / target['cost']:.2f}×" in text
        assert f"{target['cost'] * 100:.1f}%" in text and target["key"] in text and target["label"] in text
        assert tip.find_elements(By.TAG_NAME, "canvas"), "the tooltip shows the schedule heatmap"

        point(target["key"]).click()
        panel = driver.find_element(By.ID, "samples")
        WebDriverWait(driver, 5).until(lambda d: panel.is_displayed())
        images = panel.find_elements(By.TAG_NAME, "img")
        assert len(images) == 2 * len(samples["prompts"])
        assert all(img.get_attribute("src").startswith("data:image/png;base64,") for img in images)
        assert driver.execute_script(
            "return Array.from(document.querySelectorAll('#samples img')).every(i => i.complete && i.naturalWidth > 0)"
        )
        details = driver.find_element(By.ID, "details-body")
        assert target["key"] in details.text and details.find_elements(By.TAG_NAME, "canvas")
        # the panel's copy-ready command line and Python call name the schedule file
        target_file = str(run_dir.resolve() / "frontier" / target["schedule"])
        codes = [c.text for c in details.find_elements(By.CSS_SELECTOR, "#usage pre code")]
        assert len(codes) == 2 and codes[0].startswith("ecad generate --schedule ") and target_file in codes[0]
        assert codes[1].startswith("ecad.apply_schedule(pipe, ecad.load_schedule(") and target_file in codes[1]
        assert len(details.find_elements(By.CSS_SELECTOR, "#usage button.copy")) == 2
        assert driver.execute_script(  # the text can be selected by hand as well
            "var c = document.querySelector('#usage pre code'), r = document.createRange(); r.selectNodeContents(c);"
            "var s = getSelection(); s.removeAllRanges(); s.addRange(r); return s.toString() === c.textContent;"
        )
        details.find_element(By.CSS_SELECTOR, "#usage button.copy").click()  # no error with or without a clipboard

        # keyboard: rows are focusable, Enter and Space select a row's schedule as a click does
        rows = driver.find_elements(By.CSS_SELECTOR, "#front-table tbody tr")
        assert all(r.get_attribute("tabindex") == "0" for r in rows)
        other = front[-1]
        row = driver.find_element(By.CSS_SELECTOR, f'#front-table tr[data-key="{other["key"]}"]')
        driver.execute_script("arguments[0].focus()", row)
        assert driver.switch_to.active_element == row
        row.send_keys(Keys.ENTER)
        WebDriverWait(driver, 5).until(lambda d: other["key"] in details.text)
        assert target["key"] not in details.text and "selected" in row.get_attribute("class")
        assert "selected" in point(other["key"]).get_attribute("class")
        assert other["schedule"] in details.find_element(By.CSS_SELECTOR, "#usage pre code").text
        outline = driver.execute_script("return getComputedStyle(arguments[0]).outlineStyle", row)
        assert outline != "none", "a focused row shows where the focus is"
        first = driver.find_element(By.CSS_SELECTOR, f'#front-table tr[data-key="{target["key"]}"]')
        driver.execute_script("arguments[0].focus()", first)
        first.send_keys(Keys.SPACE)
        WebDriverWait(driver, 5).until(lambda d: target["key"] in details.text)

        # whole page in one screenshot, with the tooltip of a point in the middle of the frontier
        height = driver.execute_script("return document.documentElement.scrollHeight")
        driver.set_window_size(1400, min(height + 140, 4000))
        ActionChains(driver).move_to_element(point(front[len(front) // 2]["key"])).perform()
        WebDriverWait(driver, 5).until(lambda d: tip.is_displayed())
        shot = tmp_path / "report.png"
        driver.save_screenshot(str(shot))
        assert _is_png(shot)
        if os.environ.get("ECAD_SCREENSHOT"):  # keep the screenshot for a person to look at
            shutil.copyfile(shot, os.environ["ECAD_SCREENSHOT"])

        open_page(bad)  # markup in labels and config shows as text; without samples a click says how to make them
        row = driver.find_element(By.CSS_SELECTOR, f'#front-table tr[data-key="{target["key"]}"]')
        assert evil in row.text
        assert "<img src=x onerror=" in driver.find_element(By.CSS_SELECTOR, "table.kv").text
        point(target["key"]).click()
        assert "render_samples" in driver.find_element(By.ID, "samples").text
        assert evil in driver.find_element(By.ID, "details-body").text
        command = driver.find_element(By.CSS_SELECTOR, "#usage pre code").text  # the odd path shows as text
        assert shlex.split(command)[3] == bad_file
        assert driver.execute_script("return window.__xss === undefined")

        severe = [e for e in driver.get_log("browser") if e.get("level") == "SEVERE"]
        assert not severe, severe
    finally:
        driver.quit()


def test_the_report_page_knows_a_ragged_layouts_real_cells(tmp_path):
    """SD3's blocks have 4, 3 or 2 components: the page's heatmaps draw padding as absent and count
    computed cells over real ones only (per-block widths travel with the layout)."""
    root = SearchRun(
        SearchConfig(**{**SMALL, "space": "tiny-sd3", "generations": 1}),
        ExecConfig(out=str(tmp_path / "run"), workers=0, quiet=True),
    ).run()
    page = write_report(root).read_text()
    data = json.loads(page.split('<script type="application/json" id="report-data">')[1].split("</script>")[0])
    assert data["layout"]["comps"] == 4
    front = json.loads((root / "frontier" / "frontier.json").read_text())["points"]
    target = front[0]
    schedule = ecad.load_schedule(root / "frontier" / target["schedule"])
    want = schedule.compute_fraction()
    # the page draws Python's decoded cells (padding as 3, "no such component"), 4 per byte
    cells = next(p["s"] for p in data["points"] if p["k"] == target["key"])
    packed = np.frombuffer(base64.b64decode(cells["cells"]), dtype=np.uint8)
    codes = np.stack([(packed >> shift) & 3 for shift in (6, 4, 2, 0)], axis=1).reshape(-1)[: schedule.grid.size]
    assert np.array_equal(codes.reshape(schedule.grid.shape), schedule_image(schedule)) and cells["computed"] == want

    driver = _browser(tmp_path)  # skips without Chromium
    try:
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support import expected_conditions as EC
        from selenium.webdriver.support.ui import WebDriverWait

        driver.get((root / "report.html").resolve().as_uri())
        WebDriverWait(driver, 10).until(EC.presence_of_element_located((By.ID, "frontier-svg")))
        driver.find_element(By.CSS_SELECTOR, f'#frontier-svg .pt[data-key="{target["key"]}"]').click()
        details = driver.find_element(By.ID, "details-body")
        assert details.find_elements(By.TAG_NAME, "canvas")
        assert f"{100 * want:.1f}% of components computed" in details.text, details.text  # over real cells, not padding
        severe = [e for e in driver.get_log("browser") if e.get("level") == "SEVERE"]
        assert not severe, severe
    finally:
        driver.quit()


def test_a_run_named_like_a_placeholder_keeps_its_name(run_dir, tmp_path):
    """The page is filled in one pass: a run called %%DATA%% is shown by name, not filled with data."""
    odd = Path(shutil.copytree(run_dir, tmp_path / "%%DATA%%", ignore=shutil.ignore_patterns("plots", "report.html")))
    page = write_report(odd).read_text()
    assert "<h1>%%DATA%%</h1>" in page and page.count('id="report-data"') == 1
