"""Command-line parsing: bad numbers and options fail at once, naming the option and the fix."""

from __future__ import annotations

import argparse
import random
import signal
from pathlib import Path

import pytest

from ecad.cli import build_parser, main
from ecad.models import FAMILIES, adapter_for
from ecad.schedule import Schedule, load_schedule
from ecad.spaces import load_space


def test_metric_options_are_typed_so_false_means_false():
    args = build_parser().parse_args(
        [
            "search",
            "--metric-option",
            "lpips=false",
            "--metric-option",
            "batch_size=8",
            "--metric-option",
            "weights=/ckpt/model.pt",
        ]
    )
    assert dict(args.metric_option) == {"lpips": False, "batch_size": 8, "weights": "/ckpt/model.pt"}


@pytest.mark.parametrize(
    "argv, message",
    [
        (["search", "--batch-size", "0"], "argument --batch-size: '0' is not a whole number >= 1"),
        (["generate", "--schedule", "s.json", "--prompt", "x", "--num-seeds", "0"], "argument --num-seeds"),
        (["compare", "--space", "tiny-pixart", "--seeds", "none"], "argument --seeds: 'none' is not a whole number"),
        (["search", "--metric-option", "weights"], "'weights' is not KEY=VALUE"),
        (["search", "--workers", "-1"], "argument --workers: '-1' is not a whole number >= 0"),
        (["search", "--workers", "many"], "argument --workers: 'many' is not a whole number >= 0"),
        (["search", "--worker-env", "1X=2"], "argument --worker-env: '1X=2' is not KEY=VALUE"),
        (["search", "--candidate-timeout", "0"], "argument --candidate-timeout"),
        (["search", "--population", "3"], "argument --population: '3' is not a whole number 4..100000"),
        (["search", "--generations", "1e9"], "argument --generations"),
        (["search", "--max-macs-fraction", "0"], "argument --max-macs-fraction: '0' is not a finite number in (0, 1]"),
        (["search", "--max-macs-fraction", "nan"], "argument --max-macs-fraction"),
        (["frontier", "run", "--pick", ""], "argument --pick: is empty"),
        (["frontier", "run", "--pick", "speedup>=1.2.3"], "argument --pick: 'speedup>=1.2.3': '1.2.3' is not a number"),
        (["frontier", "run", "--pick", "fast"], "argument --pick: 'fast' not understood"),
        (["report", "run", "--samples", "-1"], "argument --samples: '-1' is not a whole number >= 0"),
        (["generate", "--schedule", "s.json", "--prompt", "x", "--guidance-scale", "nan"], "--guidance-scale"),
        (["generate", "--schedule", "s.json", "--prompt", "x", "--guidance-scale", "inf"], "--guidance-scale"),
        (["generate", "--schedule", "s.json", "--prompt", "x", "--seed", "-1"], "argument --seed"),
        (["score", "--metric", "psnr", "--images", "x", "--batch-size", "0"], "argument --batch-size"),
    ],
)
def test_bad_numbers_and_options_fail_before_anything_loads(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_macs_of_one_image_reproduces_ecads_no_caching_total(capsys):
    """ECAD's paper: no caching at PixArt-alpha 256 px, 20 steps = 5.714 TMACs per image (CFG doubles the batch)."""
    from pathlib import Path

    example = Path(__file__).parent / "data" / "ecad_pixart_every3.json"
    assert main(["macs", str(example), "--space", "pixart-alpha-256", "--ecad-convention"]) == 0
    out = capsys.readouterr().out
    assert "vs 5.714 TMACs uncached" in out and "transformer batch 2" in out


def test_macs_takes_the_names_ecad_schedules_lists(tmp_path, capsys):
    """A built-in name counts the same as the same schedule saved to a file."""
    space = load_space("tiny-pixart")
    path = Schedule.every_n(space.layout, space.steps, 2).save(tmp_path / "every2.json")
    assert main(["macs", "every-2", "--space", "tiny-pixart"]) == 0
    by_name = capsys.readouterr().out.split(": ", 1)[1]
    assert main(["macs", str(path), "--space", "tiny-pixart"]) == 0
    assert capsys.readouterr().out.split(": ", 1)[1] == by_name


@pytest.mark.parametrize("family", FAMILIES)
def test_macs_of_a_schedule_for_every_familys_spaces(family, tmp_path, capsys):
    """`ecad macs` counts any family's schedule against its own no-caching total, tiny or full size."""
    adapter = adapter_for(family)
    for name in (f"tiny-{family}", adapter.benchmark_space):
        space = load_space(name)
        path = Schedule.every_n(space.layout, space.steps, 2).save(tmp_path / f"{name}.json")
        assert main(["macs", str(path), "--space", name, "--images", "3", "--text-kv-cache", "off"]) == 0
        out = capsys.readouterr().out
        ratio = float(out.split("(")[1].split("x fewer")[0])
        assert 1.3 < ratio <= 2.0, out  # every-2 computes about half of the blocks' MACs (fixed MACs every step)
        assert f"transformer batch {adapter.transformer_batch(3, space.guidance_scale)}" in out
        assert "of the stock pipeline's MACs" in out and "text K/V cache on" not in out
        assert main(["macs", str(path), "--space", name, "--images", "3"]) == 0  # the text K/V cache: on by default
        out = capsys.readouterr().out
        cached = float(out.split("(")[1].split("x fewer")[0])
        if family in ("pixart", "sana", "wan"):
            assert cached >= ratio and "text K/V cache on" in out, (
                out
            )  # cross-attention's K/V once per call (Wan: tiny)
        else:
            assert cached == ratio, out  # joint attention projects no text alone


@pytest.mark.parametrize(
    "example, space",
    [("ecad_pixart_step0_reuse.json", "pixart-alpha-256"), ("ecad_flux_step0_reuse.json", "flux-dev-256")],
)
def test_ecad_files_with_reuse_flags_at_step_0_count_exactly_as_ecad_does(example, space, capsys):
    """ECAD's headline files reuse something at step 0, where nothing is cached: ECAD counts (and runs)
    that step in full. The files' own per-step MACs, measured with a profiler over the real transformer
    (tests/data/make_step0_examples.py), are reproduced exactly, batch 2 as ECAD counts, FLUX included."""
    from pathlib import Path

    path = Path(__file__).parent / "data" / example
    assert main(["macs", str(path), "--space", space, "--ecad-convention"]) == 0
    out = capsys.readouterr().out
    assert "matches the file's metrics.by_inference_step exactly at all 20 steps" in out, out
    assert "2 reuse flag(s) count as compute" in out and "transformer batch 2" in out


def _error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    return err


@pytest.fixture
def no_caching(tmp_path):
    return load_space("tiny-pixart").full_schedule().save(tmp_path / "no_caching.json")


@pytest.mark.parametrize("where", ["a file", "under a file", "read-only"])
def test_an_unwritable_output_fails_in_one_line_before_any_work(where, no_caching, tmp_path, capsys):
    """`generate` used to make the images and then die with a traceback when --out could not be
    written; now it refuses at once (no model is loaded), and so does every command with an output."""
    (tmp_path / "file").write_text("x")
    out = {"a file": tmp_path / "file", "under a file": tmp_path / "file" / "out", "read-only": Path("/proc/ecad")}
    out = out[where]
    commands = [
        ["generate", "--schedule", str(no_caching), "--prompt", "a cat", "--out", str(out)],
        ["compare", "--space", "tiny-pixart", "--out", str(out)],
        ["search", "--out", str(out)],
        ["convert", str(no_caching), str(out / "x.json") if where != "a file" else str(tmp_path)],
    ]
    for argv in commands:
        assert main(argv) == 2, argv
        err = _error_line(capsys)
        assert str(out if argv[0] != "convert" or where != "a file" else tmp_path) in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "no_caching.json"]  # nothing left behind


def test_a_directory_or_damaged_file_as_a_schedule_is_one_line(tmp_path, capsys):
    (tmp_path / "bytes.json").write_bytes(b"\xff\xfe{}")
    for schedule in (tmp_path, tmp_path / "bytes.json"):
        for argv in (
            ["generate", "--schedule", str(schedule), "--prompt", "a cat", "--out", str(tmp_path / "o")],
            ["macs", str(schedule), "--space", "tiny-pixart"],
            ["convert", str(schedule), str(tmp_path / "o.json")],
        ):
            assert main(argv) == 2
            assert str(schedule) in _error_line(capsys)


def test_debug_shows_the_traceback_instead(tmp_path, monkeypatch):
    """For a bug report: --debug (either side of the subcommand) or ECAD_DEBUG=1 re-raises."""
    from ecad.schedule import ScheduleError

    argv = ["convert", str(tmp_path / "missing.json"), str(tmp_path / "o.json")]
    for debug_argv in (["--debug", *argv], [*argv, "--debug"]):
        with pytest.raises(ScheduleError, match="no such file"):
            main(debug_argv)
    monkeypatch.setenv("ECAD_DEBUG", "1")
    with pytest.raises(ScheduleError):
        main(argv)
    monkeypatch.setenv("ECAD_DEBUG", "0")
    assert main(argv) == 2


def test_a_step_subset_is_refused_where_the_space_does_not_permit_one(tmp_path, capsys):
    """tiny-flux's [timesteps] is disabled: a step subset, matched to it by the schedule's own
    settings (no --space), is refused before the model loads instead of running anyway."""
    path = load_space("tiny-flux").full_schedule(timesteps=[0, 5]).save(tmp_path / "two.json")
    assert main(["generate", "--schedule", str(path), "--prompt", "a cat", "--out", str(tmp_path / "o")]) == 2
    assert "does not allow step selection" in _error_line(capsys)


def test_fuzzed_command_lines_end_in_one_line_never_a_traceback(tmp_path, capsys):
    """Seeded hostile arguments for the commands that stay cheap when the arguments are good: each
    exits 0, or 2 with one error line (argparse's usage errors exit 2 as well); nothing else."""
    rng = random.Random(0)
    good = load_space("tiny-pixart").full_schedule().save(tmp_path / "good.json")
    (tmp_path / "bytes.json").write_bytes(b"\xff\xfe\x00")
    (tmp_path / "half.json").write_text(good.read_text()[:200])
    (tmp_path / "dir").mkdir()
    (tmp_path / "space.toml").write_bytes(b"name = [[[")
    values = [
        str(good), str(tmp_path / "bytes.json"), str(tmp_path / "half.json"), str(tmp_path / "dir"),
        str(tmp_path / "missing.json"), str(tmp_path / "space.toml"), "/proc/ecad/x.json", "", "-1", "nan", "1e999",
        "tiny-pixart", "pixart-alpha-256", "x" * 5000, "\x00", "../../etc/passwd", "speedup>=", "0",
    ]  # fmt: skip
    templates = [
        ["convert", "{}", "{}"],
        ["convert", "{}", str(tmp_path / "out.json"), "--to", "{}"],
        ["macs", "{}", "--space", "{}"],
        ["macs", "{}", "--space", "tiny-pixart", "--images", "{}"],
        ["frontier", "{}", "--pick", "{}"],
        ["report", "{}"],
        ["spaces"],
        ["metrics"],
    ]
    signal.signal(signal.SIGALRM, lambda *_: pytest.fail(f"hung on {argv}"))
    for _ in range(150):
        argv = [rng.choice(values) if a == "{}" else a for a in rng.choice(templates)]
        signal.alarm(20)
        try:
            code = main(argv)
        except SystemExit as exc:  # argparse refusing an option
            code = exc.code
        finally:
            signal.alarm(0)
        err = capsys.readouterr().err
        assert code in (0, 2), (argv, err)
        assert "Traceback" not in err and (code == 0 or err.strip()), (argv, err)
        if code == 2 and not err.startswith("usage:"):
            assert len(err.strip().splitlines()) == 1, (argv, err)
    signal.signal(signal.SIGALRM, signal.SIG_DFL)
    assert not list(tmp_path.glob(".*.tmp"))


# Run the CLI with an import hook that fails on the heavy libraries: a command that needs them
# exits with an ImportError instead of quietly taking seconds.
HEAVY_IMPORTS_FAIL = """
import sys
class _Heavy:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "diffusers", "transformers"):
            raise ImportError(f"light command imported {name}")
sys.meta_path.insert(0, _Heavy())
from ecad.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.parametrize("argv", [["--help"], ["--version"], ["search", "--help"], ["spaces"], ["frontier", "--help"]])
def test_light_commands_import_neither_torch_nor_diffusers(argv):
    """`ecad --help`, `--version` and `ecad spaces` answer at once: ecad's heavy names load on first use."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", HEAVY_IMPORTS_FAIL, *argv], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() and "Traceback" not in done.stderr


def test_every_option_has_help_and_the_version_is_printed(capsys):
    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    undocumented = [
        f"{name} {a.option_strings[0]}"
        for name, command in commands.items()
        for a in command._actions
        if a.option_strings and a.help is None
    ]
    assert not undocumented
    with pytest.raises(SystemExit):
        main(["--version"])
    assert capsys.readouterr().out.startswith("ecad ")
    assert "(default: 4)" in commands["compare"].format_help()


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "run"
    argv = ["search", "--population", "8", "--generations", "0", "--num-prompts", "1", "--seeds", "1"]
    assert main([*argv, "--workers", "0", "--quiet", "--out", str(out)]) == 0
    return out


def _ranks(text: str) -> list[int]:
    return [int(line.split()[0]) for line in text.splitlines() if line.split() and line.split()[0].isdigit()]


def test_frontier_prints_every_point_into_a_pipe_and_pages_on_request(small_run, capsys, monkeypatch):
    assert main(["frontier", str(small_run)]) == 0
    every = _ranks(capsys.readouterr().out)
    assert len(every) >= 4 and every == list(range(len(every)))
    monkeypatch.setenv("LINES", "11")  # a short terminal: 3 points a page
    assert main(["frontier", str(small_run), "--page", "2"]) == 0
    text = capsys.readouterr().out
    assert _ranks(text) == every[3:6]
    assert f"ranks 3-{min(5, len(every) - 1)} of {len(every)} (page 2 of {-(-len(every) // 3)})" in text
    assert "--all every point" in text
    assert main(["frontier", str(small_run), "--page", "2", "--all"]) == 0
    assert _ranks(capsys.readouterr().out) == every
    assert main(["frontier", str(small_run), "--page", "9"]) == 2
    assert "--page 9: the frontier has" in capsys.readouterr().err


def test_convert_refuses_forecast_cells_for_ecad_unless_lossy(tmp_path, capsys):
    from ecad.catalog import builtin_schedule

    space = load_space("tiny-pixart")
    schedule = builtin_schedule("taylorseer-3", space.layout, space.steps, **space.schedule_meta())
    assert schedule.forecast is not None and schedule.forecast.any()
    source = schedule.save(tmp_path / "taylor.json")
    assert main(["convert", str(source), str(tmp_path / "ecad.json"), "--to", "ecad"]) == 2
    err = capsys.readouterr().err
    assert "forecast cell(s)" in err and "--lossy" in err and not (tmp_path / "ecad.json").exists()
    assert main(["convert", str(source), str(tmp_path / "ecad.json"), "--to", "ecad", "--lossy"]) == 0
    assert "forecast cells written as reuse" in capsys.readouterr().out
    lossy = load_schedule(tmp_path / "ecad.json")
    assert lossy.forecast is None and (lossy.grid == schedule.grid).all()
    assert main(["convert", str(source), str(tmp_path / "again.json")]) == 0
    assert "ecad-schedule/2" in capsys.readouterr().out
    assert main(["convert", str(source), str(tmp_path / "x.json"), "--lossy"]) == 2


def test_search_gene_options_are_checked_and_reach_the_config(tmp_path, capsys):
    """--cells, --forecast-order, --guidance-reuse and --text-kv-cache: each bad value is refused
    naming the option; good ones reach the run's config (what a resume and the MACs read)."""
    import json

    for argv, message in (
        (["--cells", "compute,forecast"], "--cells"),
        (["--cells", "compute,reuse,guess"], "guess is not a cell kind"),
        (["--forecast-order", "3"], "--forecast-order"),
        (["--guidance-reuse", "yes"], "--guidance-reuse"),
        (["--text-kv-cache", "maybe"], "--text-kv-cache"),
    ):
        with pytest.raises(SystemExit):
            main(["search", *argv, "--dry-run"])
        assert message in capsys.readouterr().err
    assert main(["search", "--forecast-order", "2", "--dry-run"]) == 2
    assert "--forecast-order 2: only forecast cells use it" in capsys.readouterr().err
    assert main(["search", "--space", "tiny-flux", "--guidance-reuse", "on", "--dry-run"]) == 2
    assert "--guidance-reuse: FLUX.1 does not run classifier-free guidance" in capsys.readouterr().err
    import re

    assert main(["search", "--space", "tiny-pixart", "--dry-run"]) == 0
    base = int(re.search(r"(\d+)-bit genomes", capsys.readouterr().out).group(1))
    argv = ["search", "--space", "tiny-pixart", "--cells", "compute,reuse,forecast", "--guidance-reuse", "on"]
    assert main([*argv, "--dry-run"]) == 0
    bigger = int(re.search(r"(\d+)-bit genomes", capsys.readouterr().out).group(1))
    space = load_space("tiny-pixart")
    assert bigger == 2 * base + space.steps  # a forecast bit per cell, a guidance bit per step
    config = tmp_path / "options.toml"
    config.write_text('cells = ["compute", "reuse", "forecast"]\nforecast_order = 2\ntext_kv_cache = false\n')
    from ecad.cli import build_parser

    args = build_parser().parse_args(["search", "--config", str(config)])
    values = args.option_table.from_file(config)
    assert values == {"cells": ["compute", "reuse", "forecast"], "forecast_order": 2, "text_kv_cache": False}
    assert json.dumps(values)  # config.json writes them as they are
