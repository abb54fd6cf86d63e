"""Shipped search spaces, prompts and report assets are found in a checkout and after a wheel install."""

from __future__ import annotations

import subprocess
import sys
import sysconfig
from pathlib import Path

from ecad.resources import shipped_dir, shipped_file

ROOT = Path(__file__).resolve().parents[1]


def test_checkout_finds_the_source_tree_copies():
    assert shipped_dir("search_spaces") == ROOT / "search_spaces"
    assert (
        shipped_file("calibration_prompts/image_reward_100.txt")
        == ROOT / "calibration_prompts" / "image_reward_100.txt"
    )
    assert shipped_file("calibration_prompts/missing.txt") is None
    assert shipped_file("elsewhere/image_reward_100.txt") is None


def test_wheel_install_ships_spaces_and_prompts(tmp_path):
    """`pip install ecad` (no source tree) still lists the spaces and resolves the default prompts."""
    wheels, venv = tmp_path / "wheels", tmp_path / "venv"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(wheels), str(ROOT)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    # dependencies from this environment; its editable ecad is not activated (a path, not a .pth run)
    Path(site, "deps.pth").write_text(sysconfig.get_path("purelib") + "\n")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(python),
            "install",
            "-q",
            "--no-deps",
            *map(str, wheels.glob("ecad-*.whl")),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    probe = (
        "import ecad, ecad.spaces as s, ecad.prompts as p, ecad.report.html as h; print(ecad.__file__); "
        "print(s.load_space('tiny-pixart').source); print(p.resolve_prompts('calibration_prompts/parti.txt')); "
        "print(len(h.asset('report.js')) > 1000 and 'report-data' in h.asset('report.html')); "
        "import ecad.catalog as c; print(c.schedules_dir(), c.resolve('tiny-pixart:demo').name)"
    )
    out = subprocess.run(
        [str(python), "-c", probe], check=True, capture_output=True, text=True, cwd=tmp_path, timeout=300
    ).stdout.split()
    assert out[0].startswith(site)  # the installed copy, not this checkout
    assert out[1] == str(venv / "share" / "ecad" / "search_spaces" / "tiny-pixart.toml")
    assert out[2] == str(venv / "share" / "ecad" / "calibration_prompts" / "parti.txt")
    assert out[4:] == [str(venv / "share" / "ecad" / "schedules"), "tiny-pixart:demo"]  # searched schedules too
    assert out[3] == "True"  # the report page's assets ship as package data
