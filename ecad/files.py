"""Files are written atomically (temp file, fsync, rename) and read strictly, the cache has one root,
and `json_safe` makes data strict JSON.

Every file a user hands ecad (schedules, search spaces, run records) is read through `read_text`,
`read_json` or `read_toml`: they turn every way a file can be unreadable (missing, a directory, not
UTF-8, too large, malformed, nested too deep, duplicate keys, NaN) into the caller's error class with
a message naming the file, so no reader has to think of these cases again, and each reader only
checks its own fields.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ecad.errors import EcadError

MAX_FILE_BYTES = 256 * 2**20  # the largest schedule ecad writes (1,000 steps x 1,000 blocks, ECAD layout) is ~80 MiB
MAX_NESTING = 32  # no ecad file nests deeper than ~6; the bound keeps every recursive reader far from Python's limit


def atomic_write(path: str | os.PathLike, write: Callable[[Path], Any]) -> Path:
    """Every file ecad writes goes through here: `write(tmp)` fills a temporary file beside `path`,
    which then replaces `path` in one rename, so a reader (or a killed writer) never sees half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def move(source: str | os.PathLike, target: str | os.PathLike) -> Path:
    """Rename a finished file in one step (the target is never half there)."""
    os.replace(source, target)
    return Path(target)


def cache_dir(*parts: str) -> Path:
    """ecad's one cache root: $ECAD_CACHE, else $XDG_CACHE_HOME/ecad, else ~/.cache/ecad (reference
    images, FID statistics, ...)."""
    root = os.environ.get("ECAD_CACHE") or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "ecad"
    return Path(root).joinpath(*parts)


def atomic_write_json(path: str | os.PathLike, data: Any) -> Path:
    """Strict JSON (NaN and infinities become null: JSON.parse and other tools reject them)."""
    return atomic_write_text(path, json.dumps(json_safe(data), indent=1, allow_nan=False) + "\n")


def json_safe(x: Any) -> Any:
    """JSON-safe: NaN/inf become null (JSON.parse rejects NaN), numpy scalars become Python ones."""
    if isinstance(x, dict):
        return {str(k): json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [json_safe(v) for v in x]
    if isinstance(x, bool) or x is None or isinstance(x, str):
        return x
    if isinstance(x, int):
        return x
    try:
        f = float(x)
    except (TypeError, ValueError):
        return str(x)
    return f if math.isfinite(f) else None


# ------------------------------------------------------- output locations
def _nearest_existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _probe(folder: Path, option: str, target: Path) -> None:
    """Write and remove a scratch file in `folder`: the one test that also holds for root on a
    read-only file system (permission bits alone say nothing there)."""
    try:
        probe = folder / f".ecad-probe.{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise EcadError(
            f"{option} {target}: cannot write in {folder} ({exc.strerror or exc}); choose another place or fix "
            "its permissions"
        ) from None


def check_output_dir(path: str | os.PathLike, option: str) -> Path:
    """Refuse, before any expensive work, a directory ecad could not write its outputs into: a
    file in the way, or a parent that cannot be written. Creates nothing."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise EcadError(f"{option} {path} is a file, not a directory; give a directory")
    existing = _nearest_existing(path)
    if not existing.is_dir():
        raise EcadError(f"{option} {path}: {existing} is a file, so no directory can be made under it")
    _probe(existing, option, path)
    return path


def check_output_file(path: str | os.PathLike, option: str) -> Path:
    """The same for one output file: not a directory, and its folder writable (or creatable)."""
    path = Path(path)
    if path.is_dir():
        raise EcadError(f"{option} {path} is a directory; give a file name (e.g. {path / 'out.json'})")
    check_output_dir(path.parent, option)
    return path


# ----------------------------------------------------------------- reading
def read_text(path: str | os.PathLike, error: type[Exception] = EcadError, what: str = "file") -> str:
    """The UTF-8 text of a regular file, or `error` naming the file and what to do."""
    path = Path(path)
    try:
        info = path.stat()
    except FileNotFoundError:
        raise error(f"{path}: no such file (a {what} was expected there); check the path") from None
    except OSError as exc:
        raise error(f"{path}: cannot be read ({exc.strerror or exc}); check the path and its permissions") from None
    if path.is_dir():
        raise error(f"{path} is a directory, not a {what}; give the path of the file itself")
    if not path.is_file():
        raise error(f"{path} is not a regular file; give the path of a {what}")
    if info.st_size > MAX_FILE_BYTES:
        raise error(
            f"{path}: {info.st_size / 2**20:.0f} MiB is too large for a {what} (at most {MAX_FILE_BYTES // 2**20} "
            "MiB); check that this is the right file"
        )
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise error(f"{path}: cannot be read ({exc.strerror or exc}); check its permissions") from None
    try:
        return data.decode("utf-8-sig")  # a byte-order mark, as some editors write, is not an error
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise error(
            f"{path}: not UTF-8 text (byte {exc.start}, line {line}: {data[exc.start : exc.start + 1]!r}); "
            f"save the {what} as UTF-8"
        ) from None


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _StrictJSONError(f"key {key!r} appears twice in one object; keep one of them")
        out[key] = value
    return out


def _no_constant(name: str) -> Any:
    raise _StrictJSONError(f"{name} is not JSON (a finite number or null is)")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _StrictJSONError(f"number {text[:40]} is out of range")
    return value


class _StrictJSONError(ValueError):
    pass


def is_integer(x: Any) -> bool:
    """A JSON integer (True and False are not counts)."""
    return isinstance(x, int) and not isinstance(x, bool)


def is_finite_number(x: Any) -> bool:
    """A JSON number a float holds finitely (an integer of 400 digits is valid JSON but no quantity)."""
    if not isinstance(x, (int, float)) or isinstance(x, bool):
        return False
    try:
        return math.isfinite(float(x))
    except OverflowError:
        return False


def nesting_depth(data: Any) -> int:
    """How deep lists and objects nest (a scalar is 0); iterative, so any depth is safe to measure."""
    deepest, stack = 0, [(data, 1)]
    while stack:
        node, depth = stack.pop()
        children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else None
        if children is None:
            continue
        deepest = max(deepest, depth)
        stack.extend((child, depth + 1) for child in children)
    return deepest


def parse_json(text: str, where: str, error: type[Exception] = EcadError, what: str = "file") -> Any:
    """Strict JSON: no duplicate keys, no NaN/Infinity, numbers in range, nesting bounded."""
    try:
        data = json.loads(
            text, object_pairs_hook=_no_duplicate_keys, parse_constant=_no_constant, parse_float=_finite_float
        )
    except json.JSONDecodeError as exc:
        raise error(
            f"{where}: not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg}); fix the {what}"
        ) from None
    except RecursionError:
        raise error(f"{where}: nested too deeply to be a {what} (at most {MAX_NESTING} levels)") from None
    except ValueError as exc:  # our strict checks, and integers of more digits than Python converts
        raise error(f"{where}: not valid for ecad ({exc}); fix the {what}") from None
    if nesting_depth(data) > MAX_NESTING:
        raise error(f"{where}: nested too deeply to be a {what} (at most {MAX_NESTING} levels)")
    return data


def read_json(path: str | os.PathLike, error: type[Exception] = EcadError, what: str = "file") -> Any:
    """A whole file of strict JSON (see `parse_json`), or `error` naming the file."""
    return parse_json(read_text(path, error, what), str(path), error, what)


def read_toml(path: str | os.PathLike, error: type[Exception] = EcadError, what: str = "file") -> dict[str, Any]:
    """A TOML file as a dict, or `error` naming the file. TOML's own nan/inf are left to the
    reader's field checks (each field says which values it takes)."""
    import tomllib

    text = read_text(path, error, what)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise error(f"{path}: not valid TOML ({exc}); fix the syntax") from None
    except RecursionError:
        raise error(f"{path}: nested too deeply to be a {what} (at most {MAX_NESTING} levels)") from None
    except ValueError:  # tomllib lets int()'s digit limit through (an integer of over 4,300 digits)
        raise error(
            f"{path}: not valid TOML (a number of more than 4,300 digits, which no field takes); shorten it"
        ) from None
    if nesting_depth(data) > MAX_NESTING:
        raise error(f"{path}: nested too deeply to be a {what} (at most {MAX_NESTING} levels)")
    return data
