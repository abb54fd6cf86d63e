"""Option types and option files: `--config` is checked by the command line's own types, and a
run's config.json reproduces that run's settings."""

from __future__ import annotations

import argparse
import json

import pytest

from ecad.cli import main
from ecad.options import OptionsFileError, OptionTable, parse_metric_option, whole_number
from ecad.runs import load_run


def _table() -> OptionTable:
    table = OptionTable(argparse.ArgumentParser())
    table.add("--population", type=whole_number(4, 100))
    table.add("--cost", choices=["macs", "latency"])
    table.add("--metric-option", action="append", type=parse_metric_option)
    table.add("--seed-from", action="append")
    table.add("--force", action="store_true")
    return table


def test_a_toml_file_gives_values_checked_like_the_command_line(tmp_path):
    file = tmp_path / "search.toml"
    file.write_text(
        'population = 12\ncost = "latency"\nseed-from = ["a.json", "b.json"]\nforce = true\n'
        'metric_option = {batch_size = 4, weights = "/w.pt"}\n'
    )
    assert _table().from_file(file) == {
        "population": 12,
        "cost": "latency",
        "seed_from": ["a.json", "b.json"],
        "force": True,
        "metric_option": [("batch_size", 4), ("weights", "/w.pt")],
    }


@pytest.mark.parametrize(
    "text, message",
    [
        ("popultion = 12", "unknown option 'popultion' (did you mean 'population'?)"),
        ("population = 2", "option 'population': '2' is not a whole number 4..100"),
        ('population = "many"', "option 'population': 'many' is not a whole number"),
        ('cost = "time"', "option 'cost': 'time' is not one of macs, latency"),
        ('force = "yes"', "option 'force' is a switch; write true or false"),
        ("population = 1.5e300", "option 'population'"),
        ("population = true", "option 'population': True is not a value it takes"),
        ("[population]\nx = 1", "option 'population': {'x': 1} is not a value it takes"),
        ("population = ", "search.toml"),  # not TOML: the strict reader names the file
    ],
)
def test_a_bad_file_entry_names_the_file_the_key_and_the_fix(tmp_path, text, message):
    file = tmp_path / "search.toml"
    file.write_text(text)
    with pytest.raises(OptionsFileError) as info:
        _table().from_file(file)
    assert message in str(info.value) and "--config" in str(info.value)


def test_other_file_kinds_are_refused_with_what_to_give(tmp_path):
    (tmp_path / "opts.yaml").write_text("population: 12")
    with pytest.raises(OptionsFileError, match="not a .toml or .json file"):
        _table().from_file(tmp_path / "opts.yaml")
    (tmp_path / "list.json").write_text("[1, 2]")
    with pytest.raises(OptionsFileError, match="holds list, not a table of options"):
        _table().from_file(tmp_path / "list.json")


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("options") / "run"
    argv = ["search", "--population", "4", "--generations", "0", "--num-prompts", "1", "--seeds", "1"]
    assert (
        main(
            [*argv, "--batch-size", "2", "--workers", "0", "--metric-option", "batch_size=2", "--quiet"]
            + ["--out", str(out)]
        )
        == 0
    )
    return out


def test_a_runs_config_json_reproduces_its_settings(finished_run, tmp_path, capsys):
    again = tmp_path / "again"
    assert main(["search", "--config", str(finished_run), "--out", str(again), "--workers", "0", "--quiet"]) == 0
    first, second = (json.loads((d / "config.json").read_text()) for d in (finished_run, again))
    assert second["config"] == first["config"] and second["config_hash"] == first["config_hash"]
    assert [p.key for p in load_run(again).points] == [p.key for p in load_run(finished_run).points]


def test_the_command_line_wins_over_the_file(finished_run, capsys):
    config = finished_run / "config.json"
    assert main(["search", "--config", str(config), "--population", "8", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "population 8, 0 generations" in out and "1 prompts x 1 seeds" in out


def test_search_config_errors_are_one_line(tmp_path, capsys):
    (tmp_path / "bad.toml").write_text("generations = -1\n")
    assert main(["search", "--config", str(tmp_path / "bad.toml"), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "bad.toml: option 'generations'" in err
