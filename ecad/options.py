"""Command-line option types: every value is checked when the command line is parsed (range,
finiteness, syntax), so a bad option is refused with its name before any work starts."""

from __future__ import annotations

import argparse
import math
import re
from collections.abc import Callable


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
    import json

    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"{text!r} is not KEY=VALUE, e.g. weights=/path/to/ckpt or batch_size=8")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


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
