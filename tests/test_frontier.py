"""Pareto extraction, --pick semantics, and `ecad frontier` on a real tiny run."""

from __future__ import annotations

import json
import re
import shutil

import numpy as np
import pytest

import ecad
from ecad.cli import main
from ecad.frontier import FrontierError, Point, frontier, pareto_indices, pick
from ecad.runs import load_run
from ecad.search.nsga2 import Evaluation, hypervolume
from ecad.search.run import ExecConfig, SearchConfig, SearchRun
from tests.conftest import SMALL


def test_pareto_on_hand_made_points_with_ties_and_duplicates():
    # minimise both: (1,5) (2,3) (2,3) duplicate (3,3) tie dominated (4,1) (5,1) dominated by (4,1)
    pts = np.array([[1, 5], [2, 3], [2, 3], [3, 3], [4, 1], [5, 1], [3, 4]])
    assert pareto_indices(pts) == [0, 1, 4]


def _p(q, c, key="k"):
    return Point(
        key=key, generation=0, genome="ff", quality=q, cost=c, feasible=True, reason=None, label="", macs_fraction=c
    )


def test_pick_semantics():
    points = [_p(0.80, 0.25, "a"), _p(0.90, 0.40, "b"), _p(0.97, 0.60, "c"), _p(1.0, 1.0, "d")]
    assert pick(points, "speedup>=2", 1.0).key == "b"  # best quality among speedup >= 2
    assert pick(points, "quality>=0.95*baseline", 1.0).key == "c"  # fastest with enough quality
    assert pick(points, "quality>=0.85, macs<=0.5", 1.0).key == "b"
    with pytest.raises(FrontierError, match="no frontier schedule satisfies 'speedup>=10'.*at most speedup 4.00x"):
        pick(points, "speedup>=10", 1.0)
    with pytest.raises(FrontierError, match="not understood"):
        pick(points, "fast please", 1.0)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "run"
    SearchRun(SearchConfig(**SMALL), ExecConfig(out=str(out), workers=0, quiet=True)).run()
    return out


def test_frontier_cli_prints_table_exports_and_picks(tiny_run, capsys, tmp_path):
    assert main(["frontier", str(tiny_run), "--pick", "speedup>=1.5", "--out", str(tmp_path / "p.json")]) == 0
    text = capsys.readouterr().out
    assert "MACs/img" in text and "speedup" in text and "hypervolume" in text
    picked = ecad.load_schedule(tmp_path / "p.json")
    assert picked.metrics["macs_speedup"] >= 1.5 and picked.attributes["picked_by"] == "speedup>=1.5"
    assert main(["frontier", str(tiny_run), "--format", "ecad"]) == 0
    files = sorted((tiny_run / "frontier_ecad").glob("[0-9]*.json"))  # beside frontier.json, the index
    assert files and "cache_schedule" in json.loads(files[0].read_text())
    pts = frontier([load_run(tiny_run)])
    costs = [p.cost for p in pts]
    assert costs == sorted(costs) and len(pts) == len(files)


@pytest.fixture(scope="module")
def other_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "other"
    SearchRun(SearchConfig(**{**SMALL, "seed": 1}), ExecConfig(out=str(out), workers=0, quiet=True)).run()
    return out


def _dominates(a, b) -> bool:
    return a.quality >= b.quality and a.cost <= b.cost and (a.quality > b.quality or a.cost < b.cost)


def test_merging_two_runs_keeps_the_joint_frontier(tiny_run, other_run):
    runs = [load_run(tiny_run), load_run(tiny_run)]
    assert len(frontier(runs)) == len(frontier(runs[:1]))  # duplicates collapse
    a, b = load_run(tiny_run), load_run(other_run)
    merged = frontier([a, b])
    union = a.feasible + b.feasible
    assert not any(_dominates(q, p) for p in merged for q in union)
    keys = {p.key for p in merged}
    for p in frontier([a]) + frontier([b]):
        assert p.key in keys or any(_dominates(q, p) for q in merged)
    assert {p.key for p in merged} & {p.key for p in b.frontier} - {p.key for p in a.frontier}  # b contributes


def test_frontier_cli_on_several_runs_leaves_each_runs_frontier_alone(tiny_run, other_run, capsys):
    before = sorted(f.name for f in (tiny_run / "frontier").iterdir())
    assert main(["frontier", str(tiny_run), str(other_run)]) == 0
    assert sorted(f.name for f in (tiny_run / "frontier").iterdir()) == before
    merged = tiny_run / "frontier_merged"
    index = json.loads((merged / "frontier.json").read_text())["points"]
    assert sorted(r["schedule"] for r in index) == sorted(f.name for f in merged.glob("[0-9]*.json"))


def test_frontier_cli_hypervolume_uses_the_runs_reference_point(tiny_run, capsys):
    """Comparable with the run's own hypervolume curve: same reference point (fixed at generation
    0); over every evaluated candidate, so never below the last population's."""
    assert main(["frontier", str(tiny_run)]) == 0
    printed = float(re.search(r"hypervolume (\S+),", capsys.readouterr().out).group(1))
    run = load_run(tiny_run)
    front = [Evaluation((p.quality, p.cost)) for p in frontier([run])]
    assert printed == pytest.approx(hypervolume(front, (1.0, -1.0), run.generations[0]["hv_ref"]), abs=5e-5)
    assert printed >= run.generations[-1]["hypervolume"] - 5e-5


def test_runs_scored_differently_are_not_merged(tiny_run, tmp_path):
    other = tmp_path / "copy"
    shutil.copytree(tiny_run, other)
    cfg = json.loads((other / "config.json").read_text())
    cfg["config"]["seeds"] = 3
    (other / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(FrontierError, match="differ in 'seeds'"):
        frontier([load_run(tiny_run), load_run(other)])


@pytest.mark.parametrize(
    "case, message",
    [
        ("missing", "no such run directory"),
        ("empty", "no generation has been evaluated yet"),
    ],
)
def test_bad_runs_give_clear_errors(case, message, tmp_path, capsys):
    run = tmp_path / "r"
    if case == "empty":
        run.mkdir()
        (run / "config.json").write_text(
            json.dumps({"config": {"metric": "fidelity", "cost": "macs", "space": "tiny-pixart"}})
        )
    assert main(["frontier", str(run)]) == 2
    assert message in capsys.readouterr().err


def test_unsatisfiable_pick_is_an_error(tiny_run, capsys):
    assert main(["frontier", str(tiny_run), "--pick", "speedup>=1000"]) == 2
    assert "no frontier schedule satisfies" in capsys.readouterr().err
