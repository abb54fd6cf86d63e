"""Command-line option types: every value is checked when the command line is parsed (range,
finiteness, syntax), so a bad option is refused with its name before any work starts."""

from __future__ import annotations

import argparse
import difflib
import json
import math
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from ecad.errors import EcadError, shown
from ecad.files import read_json, read_toml


def whole_number(low: int, high: int | None = None) -> Callable[[str], int]:
    """An argparse type: a whole number in [low, high], refused at parse time with the range."""
    span = f">= {low}" if high is None else f"{low}..{high}"

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number {span}") from None
        if value < low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number {span}")
        return value

    return parse


def number(low: float, high: float, low_open: bool = False) -> Callable[[str], float]:
    """An argparse type: a finite number in [low, high] (or (low, high])."""
    span = f"{'(' if low_open else '['}{low:g}, {high:g}]"

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not math.isfinite(value) or not (low < value if low_open else low <= value) or value > high:
            raise argparse.ArgumentTypeError(f"{text!r} is not a finite number in {span}")
        return value

    return parse


def parse_metric_option(text: str) -> tuple[str, object]:
    """`--metric-option KEY=VALUE`, VALUE read as JSON where it parses (8, false, 0.5), else kept as
    text (a path). Shared by every subcommand that builds a metric."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"{text!r} is not KEY=VALUE, e.g. weights=/path/to/ckpt or batch_size=8")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def on_off(text: str) -> bool:
    """A setting switched on or off (`--racing off`); a --config file may write true or false."""
    if text not in ("on", "off"):
        raise argparse.ArgumentTypeError(f"{text!r} is not on or off")
    return text == "on"


CELL_KINDS = ("compute", "reuse", "forecast")


def cell_kinds(text: str) -> list[str]:
    """`--cells compute,reuse[,forecast]`: the cell kinds a searched schedule may hold (compute and
    reuse always; a --config file may write them as a list)."""
    cells = [c.strip() for c in text.split(",") if c.strip()]
    unknown = [c for c in cells if c not in CELL_KINDS]
    if unknown or not {"compute", "reuse"} <= set(cells) or len(set(cells)) != len(cells):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a choice of cells: give compute,reuse or compute,reuse,forecast"
            + (f" ({', '.join(unknown)} is not a cell kind)" if unknown else "")
        )
    return cells


cell_kinds.comma_list = True  # a --config file's list is the comma-separated text


def worker_count(text: str) -> int | str:
    """`--workers`: a whole number >= 0, or "auto" (every GPU, or CPU slot, the cluster has)."""
    if text == "auto":
        return text
    return whole_number(0)(text)


ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def environment_variable(text: str) -> tuple[str, str]:
    """`--worker-env KEY=VALUE`: a variable name as a shell writes one, and any value."""
    key, sep, value = text.partition("=")
    if not sep or not ENV_NAME.match(key):
        raise argparse.ArgumentTypeError(f"{text!r} is not KEY=VALUE with KEY a variable name, e.g. HF_HOME=/data/hf")
    return key, value


class OptionsFileError(EcadError, ValueError):
    """A `--config` file that is unreadable, names an unknown option or holds a bad value."""


class OptionTable:
    """The options of one subcommand, kept as they are added, so a file of option values
    (`--config search.toml`, or a run's own config.json) is checked by the very types, ranges and
    choices the command line uses, and a bad entry is named by its file and key."""

    def __init__(self, parser: argparse.ArgumentParser):
        self.parser = parser
        self.actions: dict[str, argparse.Action] = {}
        self.repeated: set[str] = set()  # options given once per value (action="append")

    def add(self, *names: str, **kwargs: Any) -> argparse.Action:
        action = self.parser.add_argument(*names, **kwargs)
        self.actions[action.dest] = action
        if kwargs.get("action") == "append":
            self.repeated.add(action.dest)
        return action

    def from_file(
        self, path: str | Path, option: str = "--config", aliases: Mapping[str, str] | None = None
    ) -> dict[str, Any]:
        """Option values (by dest) from a TOML or JSON file. Keys are option names with `_` or `-`
        (`batch_size`, `batch-size`) or an alias (a config field's name); a null value is left
        unset; a run directory stands for its config.json, whose `config` object is read."""
        aliases = dict(aliases or {})
        file = Path(path).expanduser()
        if file.is_dir():
            file = file / "config.json"
        try:
            if file.suffix in (".toml", ".json"):
                read = read_toml if file.suffix == ".toml" else read_json
                data = read(file, OptionsFileError, f"{option} file")
        except OptionsFileError as exc:
            raise OptionsFileError(f"{option} {exc}") from None
        if file.suffix == ".json":
            if isinstance(data, dict) and "config" in data and set(data) <= {"config", "config_hash", "inputs"}:
                data = data["config"]  # a run's config.json: its settings
        elif file.suffix != ".toml":
            raise OptionsFileError(
                f"{option} {file}: not a .toml or .json file; give a TOML file of options (population = 12) "
                "or a run's config.json"
            )
        if not isinstance(data, dict):
            raise OptionsFileError(f"{option} {file}: holds {type(data).__name__}, not a table of options")
        settable = {dest for dest in self.actions if dest not in ("help", "config")}
        values: dict[str, Any] = {}
        for key, value in data.items():
            dest = aliases.get(key, key.replace("-", "_"))
            if dest not in settable:
                names = sorted(settable | set(aliases))
                close = difflib.get_close_matches(dest, names, n=1)
                raise OptionsFileError(
                    f"{option} {file}: unknown option {shown(key)}"
                    + (f" (did you mean {close[0]!r}?)" if close else "")
                    + f"; options: {', '.join(names)}"
                )
            if value is not None:
                values[dest] = self._value(dest, value, f"{option} {file}: option {key!r}")
        return values

    def _value(self, dest: str, value: Any, where: str) -> Any:
        action = self.actions[dest]
        if action.nargs == 0:  # a flag
            if not isinstance(value, bool):
                raise OptionsFileError(f"{where} is a switch; write true or false, not {shown(value)}")
            return value
        if isinstance(value, list) and getattr(action.type, "comma_list", False):
            if not all(isinstance(v, str) for v in value):
                raise OptionsFileError(f"{where}: {shown(value)} is not a list of names")
            value = ",".join(value)
        if dest in self.repeated:
            if isinstance(value, dict):  # KEY=VALUE options written as a table
                value = [f"{k}={v if isinstance(v, str) else json.dumps(v)}" for k, v in value.items()]
            elif not isinstance(value, list):
                value = [value]
            return [self._scalar(action, item, where) for item in value]
        return self._scalar(action, value, where)

    @staticmethod
    def _scalar(action: argparse.Action, value: Any, where: str) -> Any:
        if isinstance(value, bool) and action.type is on_off:  # config.json writes the setting as a bool
            return value
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise OptionsFileError(f"{where}: {shown(value)} is not a value it takes; write it as on the command line")
        text = value if isinstance(value, str) else json.dumps(value)
        try:
            converted = action.type(text) if action.type is not None else text
        except (argparse.ArgumentTypeError, ValueError) as exc:
            raise OptionsFileError(f"{where}: {exc}") from None
        if action.choices is not None and converted not in action.choices:
            raise OptionsFileError(f"{where}: {shown(value)} is not one of {', '.join(map(str, action.choices))}")
        return converted
