"""Schedule format: ECAD import/export, our format, bit vectors, and every bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import ecad
from ecad.models.flux import flux_layout
from ecad.models.pixart import pixart_layout
from ecad.schedule import Schedule, ScheduleError, load_schedule

EXAMPLES = Path(__file__).resolve().parent / "data"  # ECAD-format example schedules
PIXART_EX = EXAMPLES / "ecad_pixart_every3.json"
FLUX_EX = EXAMPLES / "ecad_flux_every3.json"


@pytest.mark.parametrize("example", [PIXART_EX, FLUX_EX], ids=["pixart", "flux"])
def test_ecad_examples_round_trip_byte_for_byte(example, tmp_path):
    schedule = load_schedule(example)
    out = schedule.save(tmp_path / "out.json", format="ecad")
    assert out.read_text() == example.read_text()


@pytest.mark.parametrize("example", [PIXART_EX, FLUX_EX], ids=["pixart", "flux"])
def test_ecad_examples_decode_as_every_third_step(example):
    schedule = load_schedule(example)
    assert schedule.num_steps == 20
    expected = np.zeros(20, dtype=bool)
    expected[::3] = True
    assert (schedule.grid.all(axis=(1, 2)) == expected).all()
    assert (~schedule.grid[~expected]).all()


@pytest.mark.parametrize("example", [PIXART_EX, FLUX_EX], ids=["pixart", "flux"])
def test_our_format_round_trips_exactly(example, tmp_path):
    schedule = load_schedule(example)
    ours = schedule.save(tmp_path / "ours.json")
    back = load_schedule(ours)
    assert back == schedule
    assert back.save(tmp_path / "again.json").read_text() == ours.read_text()
    # and back to ECAD's layout unchanged
    assert back.save(tmp_path / "e.json", format="ecad").read_text() == example.read_text()


def test_our_format_is_one_line_per_step(tmp_path):
    s = Schedule.every_n(pixart_layout(4), 5, 2, height=256, width=256, guidance_scale=4.5)
    text = s.save(tmp_path / "s.json").read_text()
    data = json.loads(text)
    assert data["format"] == "ecad-schedule/1"
    assert data["grid"][1] == "000 000 000 000"
    assert '"111 111 111 111"' in text.splitlines()[text.splitlines().index('  "grid": [') + 1]


def test_timestep_selection_round_trips_in_both_formats(tmp_path):
    s = Schedule.full(pixart_layout(4), 10, timesteps=[0, 2, 5, 9])
    assert load_schedule(s.save(tmp_path / "a.json")).timesteps == [0, 2, 5, 9]
    assert load_schedule(s.save(tmp_path / "b.json", format="ecad")).timesteps == [0, 2, 5, 9]
    assert s.executed_grid().shape == (4, 4, 3)


def test_to_bits_is_ecad_order_and_from_bits_inverts_it():
    layout = flux_layout()
    rng = np.random.default_rng(0)
    grid = rng.random((20, 57, 3)) < 0.5
    grid[0] = True
    s = Schedule(layout, grid)
    bits = s.to_bits()
    assert bits.size == 20 * 57 * 3
    # step-major, then 19 double blocks, then 38 single blocks, then components
    assert bits[1 * 57 * 3 + 19 * 3 + 2] == grid[1, 19, 2]  # step 1, single_0, single_proj_out

    class Space:
        steps = 20

    Space.layout = layout
    assert Schedule.from_bits(bits, Space) == s


def test_pixart_bits_follow_the_ecad_json_keys():
    s = load_schedule(PIXART_EX)
    data = s.to_ecad_json()["cache_schedule"]["schedule"]
    flat = [data[f"{st:03d}"][str(b)][c] for st in range(20) for b in range(28) for c in ("attn1", "attn2", "ff")]
    assert list(s.to_bits()) == flat


def test_public_api_exports():
    for name in ("Schedule", "load_schedule", "apply_schedule", "remove_schedule", "ScheduleError"):
        assert hasattr(ecad, name)


# --------------------------------------------------------------- bad inputs
def _ecad_dict():
    return json.loads(PIXART_EX.read_text())


def _write(tmp_path, data) -> Path:
    p = tmp_path / "bad.json"
    p.write_text(data if isinstance(data, str) else json.dumps(data))
    return p


def test_malformed_json(tmp_path):
    with pytest.raises(ScheduleError, match=r"not valid JSON \(line 1, column"):
        load_schedule(_write(tmp_path, '{"cache_schedule": '))


def test_missing_file(tmp_path):
    with pytest.raises(ScheduleError, match="no such file"):
        load_schedule(tmp_path / "nope.json")


def test_unknown_component(tmp_path):
    d = _ecad_dict()
    d["cache_schedule"]["schedule"]["004"]["7"]["attn3"] = d["cache_schedule"]["schedule"]["004"]["7"].pop("attn2")
    with pytest.raises(ScheduleError, match=r"\['004'\]\['7'\]: unknown component 'attn3'; valid components"):
        load_schedule(_write(tmp_path, d))


def test_wrong_block_count(tmp_path):
    d = _ecad_dict()
    del d["cache_schedule"]["schedule"]["002"]["27"]
    with pytest.raises(ScheduleError, match=r"\['002'\] has 27 blocks, expected 28 \(missing \['27'\]"):
        load_schedule(_write(tmp_path, d))


def test_wrong_step_count(tmp_path):
    d = _ecad_dict()
    d["cache_schedule"]["num_inference_steps"] = 25
    with pytest.raises(ScheduleError, match="has 20 steps .* but num_inference_steps is 25"):
        load_schedule(_write(tmp_path, d))


def test_a_reuse_flag_at_step_0_runs_as_compute_and_round_trips(tmp_path):
    """ECAD's headline schedules carry reuse flags at step 0; nothing is cached yet, so ECAD (and
    ecad) computes it in full. The flags stay in the file."""
    d = _ecad_dict()
    d["cache_schedule"]["schedule"]["000"]["3"]["ff"] = False
    d["cache_schedule"]["schedule"]["000"]["7"]["attn1"] = False
    path = _write(tmp_path, json.dumps(d, indent=1))  # as ECAD writes its files
    s = load_schedule(path)
    assert not s.grid[0, 3, 2] and s.first_step_flags_ignored == 2  # kept as written
    assert s.executed_grid()[0].all() and s.effective_grid()[0].all()  # and run as compute
    out = s.save(tmp_path / "back.json", format="ecad")
    assert out.read_text() == path.read_text()  # byte for byte


def test_non_boolean_cell(tmp_path):
    d = _ecad_dict()
    d["cache_schedule"]["schedule"]["005"]["1"]["attn1"] = 1
    with pytest.raises(ScheduleError, match=r"\['attn1'\] is 1; use true \(compute\) or false \(reuse\)"):
        load_schedule(_write(tmp_path, d))


def test_non_boolean_cell_in_our_format(tmp_path):
    s = Schedule.full(pixart_layout(2), 3).to_json()
    s["grid"][1] = "1x1 111"
    with pytest.raises(ScheduleError, match=r"grid\[1\] block 0 is '1x1'"):
        load_schedule(_write(tmp_path, s))


@pytest.mark.parametrize(
    "timesteps, message",
    [
        ([], "selection is empty"),
        ([0, 20], r"\[20\] out of range"),
        ([0, -1], "out of range"),
        ([0, 3, 3], "strictly increasing"),
    ],
)
def test_bad_timestep_selection(tmp_path, timesteps, message):
    s = Schedule.full(pixart_layout(2), 20).to_json()
    s["timesteps"] = timesteps
    with pytest.raises(ScheduleError, match=message):
        load_schedule(_write(tmp_path, s))


def test_the_first_selected_step_computes_whatever_its_flags_say():
    grid = np.ones((5, 2, 3), dtype=bool)
    grid[2, 0, 0] = grid[4, 1, 1] = False
    s = Schedule(pixart_layout(2), grid, timesteps=[2, 4])
    assert s.executed_grid()[0].all() and not s.executed_grid()[1, 1, 1]
    assert s.first_step_flags_ignored == 1


def test_unknown_format_and_unknown_layout(tmp_path):
    with pytest.raises(ScheduleError, match="format 'other/2' is not supported"):
        load_schedule(_write(tmp_path, {"format": "other/2"}))
    with pytest.raises(ScheduleError, match="neither an ecad schedule"):
        load_schedule(_write(tmp_path, {"hello": 1}))
    s = Schedule.full(pixart_layout(2), 3).to_json()
    s["layout"]["groups"][0]["components"] = ["attn1", "attn2", "mlp"]
    with pytest.raises(ScheduleError, match=r"unknown component\(s\) \['mlp'\]"):
        load_schedule(_write(tmp_path, s))


def test_grid_shape_must_match_layout():
    with pytest.raises(ScheduleError, match="does not match the layout"):
        Schedule(pixart_layout(4), np.ones((3, 5, 3), dtype=bool))
    with pytest.raises(ScheduleError, match="must be booleans"):
        Schedule(pixart_layout(4), np.ones((3, 4, 3), dtype=int))


def test_a_flux_layout_missing_its_single_blocks_is_refused_clearly(tmp_path):
    s = Schedule.full(flux_layout(2, 2), 3).to_json()
    s["layout"]["groups"] = s["layout"]["groups"][:1]
    with pytest.raises(ScheduleError, match="not a flux layout: a FLUX.1 layout needs its single group"):
        load_schedule(_write(tmp_path, s))
