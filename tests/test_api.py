"""Search from Python (`ecad.search.api`): real in-process searches on the tiny model, one shared
by the module; the Frontier they return against what `ecad frontier` reads and picks."""

from __future__ import annotations

import sys

import pytest
from matplotlib.figure import Figure

import ecad
from ecad.cli import main
from ecad.frontier import ROW_COLUMNS, Frontier, FrontierError, MissingPackageError, macs_of, pick
from ecad.runs import load_run as load_run_data
from ecad.search.api import load_run, search
from ecad.search.run import SearchError
from tests.conftest import SMALL, generate


@pytest.fixture(scope="module")
def searched(tmp_path_factory):
    out = tmp_path_factory.mktemp("api") / "run"
    return search(out=out, **SMALL), out


def test_search_returns_the_frontier_of_its_run_directory(searched):
    frontier, out = searched
    assert isinstance(frontier, Frontier) and frontier.root == out and len(frontier) > 1
    read = load_run(out)
    assert [p.key for p in frontier] == [p.key for p in read]
    assert [p.quality for p in frontier] == [p.quality for p in read]
    assert [p.macs_fraction for p in frontier] == [p.macs_fraction for p in read]
    assert [p.point for p in frontier] == [p.point for p in read]  # details too: memory is what disk holds
    assert frontier.metric == "fidelity" and frontier.higher_is_better and frontier.direction == "higher"
    assert frontier.baseline == read.baseline == 1.0  # fidelity of no caching against itself
    assert frontier.speedup_kind == "estimated" and all(p.speedup_kind == "estimated" for p in frontier)
    assert all(p.schedule_file is not None and p.schedule_file.exists() for p in frontier)
    assert all(p.latency_ms is not None and p.latency_ms > 0 for p in frontier)  # measured even for a MACs cost
    assert "hypervolume" in frontier.summary and read.summary is None
    costs = [p.cost for p in frontier]
    assert costs == sorted(costs) and [p.rank for p in frontier] == list(range(len(frontier)))


def test_pick_returns_a_point_whose_schedule_meets_it_and_applies(searched, tiny_pixart):
    frontier, out = searched
    point = frontier.pick("speedup>=1.5")
    assert point.speedup >= 1.5 and point.macs_fraction <= 1 / 1.5
    run = load_run_data(out)
    assert (
        point.key == pick(run.frontier, "speedup>=1.5", frontier.baseline, run.higher_is_better).key
    )  # the CLI's rule
    schedule = point.schedule
    assert schedule is point.schedule  # built once
    assert schedule.metrics["macs_speedup"] >= 1.5 and schedule.metrics["key"] == point.key
    assert schedule.to_json() == ecad.load_schedule(point.schedule_file).to_json() | {"metrics": schedule.metrics}
    ecad.apply_schedule(tiny_pixart, schedule)
    assert generate(tiny_pixart).shape[0] == 1


def test_an_impossible_pick_raises_what_the_cli_says(searched, capsys):
    frontier, out = searched
    with pytest.raises(FrontierError, match="no frontier schedule satisfies 'speedup>=100'") as raised:
        frontier.pick("speedup>=100")
    assert main(["frontier", str(out), "--pick", "speedup>=100"]) == 2
    assert str(raised.value) in capsys.readouterr().err
    with pytest.raises(FrontierError, match="not understood"):
        frontier.pick("fast please")


def test_to_pandas_has_one_row_per_point(searched):
    pytest.importorskip("pandas")
    frontier, _ = searched
    table = frontier.to_pandas()
    assert list(table.columns) == ROW_COLUMNS and len(table) == len(frontier)
    assert list(table["key"]) == [p.key for p in frontier]


def test_to_pandas_without_pandas_says_how_to_install_it(searched, monkeypatch):
    monkeypatch.setitem(sys.modules, "pandas", None)  # as if not installed: `import pandas` fails
    with pytest.raises(MissingPackageError, match="pip install pandas") as raised:
        searched[0].to_pandas()
    assert isinstance(raised.value, ImportError)


def test_plot_writes_a_png_or_returns_a_figure(searched, tmp_path):
    frontier, _ = searched
    path = frontier.plot(tmp_path / "frontier.png")
    assert path == tmp_path / "frontier.png" and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert isinstance(frontier.plot(), Figure)


def test_str_lists_every_point(searched):
    frontier, _ = searched
    text = str(frontier)
    lines = text.splitlines()
    assert "fidelity" in lines[0] and "no-caching quality 1" in lines[0] and "est. speedup" in lines[1]
    assert len(lines) == len(frontier) + 2
    for p, line in zip(frontier, lines[2:]):
        assert p.schedule_file.name in line and f"{p.quality:.5f}" in line and f"{p.speedup:.2f}x" in line


def test_unknown_keyword_is_refused_naming_it_and_the_valid_ones(tmp_path):
    with pytest.raises(SearchError, match=r"unknown argument 'populaton' \(did you mean population\?\).*seeds"):
        search(out=tmp_path / "run", populaton=6)
    with pytest.raises(SearchError, match="resume=.* alone"):
        search(out=tmp_path / "other", resume=tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_resume_of_a_finished_run_gives_its_frontier_again(searched):
    frontier, out = searched
    again = search(resume=out)
    assert [p.point for p in again] == [p.point for p in frontier]
    assert macs_of(again[0].point) == frontier[0].macs_fraction
