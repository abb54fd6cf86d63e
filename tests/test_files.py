"""Files: writes are atomic and leave nothing behind when they fail; strict readers name the file
for every way a file can be unreadable; output locations are checked before work starts."""

from __future__ import annotations

import errno
import json
from pathlib import Path

import pytest

from ecad.errors import EcadError
from ecad.files import (
    atomic_write,
    atomic_write_json,
    atomic_write_text,
    check_output_dir,
    check_output_file,
    read_json,
    read_toml,
)


def _disk_full(tmp: Path) -> None:
    tmp.write_bytes(b"half")
    raise OSError(errno.ENOSPC, "No space left on device", str(tmp))


def test_a_failed_write_leaves_neither_a_temp_file_nor_a_half_file(tmp_path):
    target = tmp_path / "out.json"
    atomic_write_text(target, "old")
    with pytest.raises(OSError, match="No space left"):
        atomic_write(target, _disk_full)
    (tmp_path / "dir.json").mkdir()
    with pytest.raises(OSError):  # the rename onto a directory fails after the temp file is whole
        atomic_write_text(tmp_path / "dir.json", "x")
    assert target.read_text() == "old"
    atomic_write_json(tmp_path / "nan.json", {"q": float("nan")})  # strict JSON: NaN is written as null
    assert json.loads((tmp_path / "nan.json").read_text()) == {"q": None}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dir.json", "nan.json", "out.json"]


def test_strict_json_refuses_what_other_tools_would_misread(tmp_path):
    cases = {
        b'{"a": 1, "a": 2}': "'a' appears twice",
        b'{"a": NaN}': "NaN is not JSON",
        b'{"a": -Infinity}': "-Infinity is not JSON",
        b"[1e999]": "out of range",
        b"[" * 100 + b"]" * 100: "nested too deeply",
        b"[" * 100_000 + b"]" * 100_000: "nested too deeply",
        b'{"a": "\xff"}': "not UTF-8 text (byte 7, line 1",
        b'{"a": ': "not valid JSON (line 1, column 7",
        b"1" * 5000: "not valid for ecad",  # more digits than Python converts
    }
    path = tmp_path / "f.json"
    for data, says in cases.items():
        path.write_bytes(data)
        with pytest.raises(EcadError, match=says.replace("(", r"\(")) as info:
            read_json(path, what="schedule file")
        assert str(path) in str(info.value)
    path.write_bytes(b'\xef\xbb\xbf{"a": 1}')  # a byte-order mark is not an error
    assert read_json(path) == {"a": 1}


def test_unreadable_paths_name_the_file(tmp_path):
    for path, says in ((tmp_path / "missing.json", "no such file"), (tmp_path, "is a directory")):
        with pytest.raises(EcadError, match=says) as info:
            read_json(path)
        assert str(path) in str(info.value)
    with pytest.raises(EcadError, match="not a regular file"):
        read_json("/dev/null" if Path("/dev/null").exists() else tmp_path)


def test_toml_errors_name_the_file(tmp_path):
    path = tmp_path / "s.toml"
    for data, says in ((b"a = [" * 3000, "nested too deeply|not valid TOML"), (b"a = 1\na = 2", "not valid TOML")):
        path.write_bytes(data)
        with pytest.raises(EcadError, match=says) as info:
            read_toml(path)
        assert str(path) in str(info.value)


def test_output_locations_are_checked_without_creating_anything(tmp_path):
    (tmp_path / "file").write_text("x")
    assert check_output_dir(tmp_path / "new" / "deeper", "--out") == tmp_path / "new" / "deeper"
    assert check_output_file(tmp_path / "new" / "x.json", "--out") == tmp_path / "new" / "x.json"
    for check, path, says in (
        (check_output_dir, tmp_path / "file", "is a file, not a directory"),
        (check_output_dir, tmp_path / "file" / "sub", "is a file, so no directory can be made"),
        (check_output_file, tmp_path, "is a directory; give a file name"),
        (check_output_dir, Path("/proc/ecad-out"), "cannot write in /proc"),
    ):
        with pytest.raises(EcadError, match=says) as info:
            check(path, "--out")
        assert f"--out {path}" in str(info.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]
