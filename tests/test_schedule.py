"""Schedule format: ECAD import/export, our format, bit vectors, and every bad input."""

from __future__ import annotations

import json
import random
import re
import signal
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


# ------------------------------------------------------------------ hostile input
def _ours(**changes) -> dict:
    data = Schedule.every_n(pixart_layout(4), 8, 2, height=256, width=256, guidance_scale=4.5).to_json()
    data.update(changes)
    return data


def _with(data: dict, path: tuple, value) -> dict:
    """`data` with the field at `path` (keys into nested objects) set to `value`."""
    node = data
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return data


@pytest.mark.parametrize(
    "text, field",
    [
        (json.dumps(_ours(height=-16)), "height"),
        (json.dumps(_ours(height="256")), "height"),
        (json.dumps(_ours(width=1000000)), "width"),
        (json.dumps(_ours(width=True)), "width"),
        (json.dumps(_ours(height=250)), "multiple of 16"),
        (json.dumps(_ours(guidance_scale=float("nan"))), "NaN is not JSON"),
        (json.dumps(_ours(guidance_scale=float("inf"))), "Infinity is not JSON"),
        (json.dumps(_ours(guidance_scale="4.5")), "guidance_scale"),
        (json.dumps(_ours(guidance_scale=1e300)), "guidance_scale"),
        (json.dumps(_ours(variant="gamma")), "variant"),
        (json.dumps(_ours(name=5)), "name"),
        (json.dumps(_ours(model=7)), "model"),
        (json.dumps(_ours(metrics=[1])), "metrics"),
        (json.dumps(_ours(attributes="x")), "attributes"),
        (json.dumps(_ours(extra=1)), "unknown field 'extra'"),
        (json.dumps(_ours(num_steps=10**7)), "num_steps"),
        ('{"format": "ecad-schedule/1", "name": "a", "name": "b"}', "'name' appears twice"),
        (json.dumps(_ours(timesteps=[0])), "at least 2"),
        (json.dumps(_with(_ours(), ("layout", "groups", 0, "num_blocks"), "4")), "num_blocks"),
        (json.dumps(_with(_ours(), ("layout", "groups", 0, "num_blocks"), 4.9)), "num_blocks"),
        (json.dumps(_with(_ours(), ("layout", "groups", 0, "num_blocks"), -3)), "num_blocks"),
        (json.dumps(_with(_ours(), ("layout", "groups", 0, "num_blocks"), 10**9)), "num_blocks"),
        (json.dumps(_with(_ours(), ("layout", "groups"), [])), "groups"),
        (json.dumps(_with(_ours(), ("layout", "groups"), [_ours()["layout"]["groups"][0]] * 2)), "layout"),
        ("[" * 5000 + "]" * 5000, "nested too deeply"),
        (json.dumps(_with(_ecad_dict(), ("cache_schedule", "num_inference_steps"), 10**7)), "num_inference_steps"),
        (json.dumps(_with(_ecad_dict(), ("cache_schedule", "num_blocks"), 4000)), "num_blocks"),
        (json.dumps(_with(_ecad_dict(), ("cache_schedule", "num_blocks"), "28")), "num_blocks"),
        (json.dumps(_with(_ecad_dict(), ("cache_schedule", "num_blocks"), 28.9)), "num_blocks"),
        (json.dumps(_with(_ecad_dict(), ("cache_schedule", "num_blocks"), -1)), "num_blocks"),
        (json.dumps(_with(_ecad_dict(), ("cache_schedule", "attributes"), [1])), "attributes"),
        (json.dumps(_with(_ecad_dict(), ("cache_schedule", "attributes"), {"ecad_timesteps": "0"})), "ecad_timesteps"),
        (json.dumps(_with(_ecad_dict(), ("config",), {"pipeline": "pixart_alpha"})), "pipeline"),
        (json.dumps(_with(_ecad_dict(), ("config",), {"pipeline": {"name": 3}})), "name"),
        (json.dumps(_with(_ecad_dict(), ("config",), {"pipeline": {"name": "pixart_gamma"}})), "pixart_gamma"),
        (json.dumps(_with(_ecad_dict(), ("config",), {"height": "256"})), "height"),
        (json.dumps(_with(_ecad_dict(), ("cache_schedule", "name"), ["x"])), "name"),
    ],
)
def test_every_invalid_field_is_refused_naming_the_file_and_field(tmp_path, text, field):
    path = _write(tmp_path, text)
    with pytest.raises(ScheduleError) as info:
        load_schedule(path)
    assert str(path) in str(info.value) and field in str(info.value)


def test_unreadable_files_are_refused_naming_the_file(tmp_path):
    (tmp_path / "bytes.json").write_bytes(b'{"format": "ecad-schedule/1", "name": "\xff\xfe"}')
    for path, says in ((tmp_path / "bytes.json", "not UTF-8"), (tmp_path, "is a directory")):
        with pytest.raises(ScheduleError, match=says) as info:
            load_schedule(path)
        assert str(path) in str(info.value)


def test_saved_metrics_are_strict_json(tmp_path):
    """A search's metrics can hold NaN (an infeasible candidate); the file stays standard JSON."""
    s = Schedule.every_n(pixart_layout(2), 4, 2, metrics={"quality": float("nan"), "x": [float("inf")]})
    for fmt in ("ecad-schedule", "ecad"):
        text = s.save(tmp_path / f"{fmt}.json", format=fmt).read_text()
        assert (
            json.loads(text, parse_constant=lambda c, f=fmt: pytest.fail(f"{c} in {f}"))["metrics"]["quality"] is None
        )
        assert load_schedule(tmp_path / f"{fmt}.json").metrics["x"] == [None]


def _hostile_values(rng) -> list:
    return [
        None, True, False, 0, -1, -16, 28.9, 10**30, 1e308, "", "256", "x" * 10_000, [], {}, [1, 2], {"a": 1},
        "\ud800", "NaN", [[[[[[[[[[]]]]]]]]]], rng.randrange(-(10**6), 10**6), rng.random() * 1e6,
    ]  # fmt: skip


def _mutant(rng, text: str) -> bytes:
    """One hostile variant of a schedule file: bytes damaged, or a field replaced, removed or added."""
    data = text.encode()
    kind = rng.randrange(9)
    if kind == 0:  # flip bytes
        b = bytearray(data)
        for _ in range(rng.randrange(1, 8)):
            b[rng.randrange(len(b))] = rng.randrange(256)
        return bytes(b)
    if kind == 1:  # truncate
        return data[: rng.randrange(len(data))]
    if kind == 2:  # insert junk (non-UTF-8 too)
        i = rng.randrange(len(data))
        return data[:i] + bytes(rng.randrange(256) for _ in range(rng.randrange(1, 6))) + data[i:]
    if kind == 3:  # a non-standard constant or an out-of-range number somewhere a number goes
        return re.sub(rb"\b(\d+(\.\d+)?)\b", rng.choice([b"NaN", b"Infinity", b"-Infinity", b"1e999"]), data, count=1)
    if kind == 4:  # a key written twice
        return data.replace(b"{", b'{"name": "dup", ', 1).replace(b'"name"', b'"name"', 1)
    tree = json.loads(text)
    nodes = [((), tree)]  # every (path, container) in the tree
    stack = [((), tree)]
    while stack:
        path, node = stack.pop()
        children = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
        for k, v in children:
            if isinstance(v, (dict, list)):
                nodes.append((path + (k,), v))
                if len(nodes) < 400:
                    stack.append((path + (k,), v))
    _, container = rng.choice(nodes)
    keys = list(container) if isinstance(container, dict) else list(range(len(container)))
    if kind == 5 and keys:  # remove a field
        del container[rng.choice(keys)]
    elif kind == 6 and isinstance(container, dict):  # add an unknown field
        container[rng.choice(["extra", "000", "27", "attn3", "single_0"])] = rng.choice(_hostile_values(rng))
    elif keys:  # replace a value
        container[rng.choice(keys)] = rng.choice(_hostile_values(rng))
    return json.dumps(tree).encode()


def test_fuzzed_schedule_files_load_valid_or_fail_naming_the_file(tmp_path):
    """Hundreds of seeded mutants of both formats: each loads as a valid schedule (it saves, as
    strict JSON, and reloads equal) or raises ScheduleError naming the file. Any other exception,
    or a load that hangs, fails."""
    rng = random.Random(0)
    ours = Schedule.every_n(pixart_layout(4), 8, 2, height=256, width=256, guidance_scale=4.5, timesteps=[0, 2, 5])
    sources = [PIXART_EX.read_text(), (EXAMPLES / "ecad_flux_step0_reuse.json").read_text(), _dumps(ours)]
    path = tmp_path / "mutant.json"
    loaded = refused = 0
    signal.signal(signal.SIGALRM, lambda *_: pytest.fail(f"loading hung on:\n{path.read_bytes()[:300]!r}"))
    try:
        for i in range(600):
            path.write_bytes(_mutant(rng, sources[i % len(sources)]))
            signal.alarm(5)
            try:
                schedule = load_schedule(path)
            except ScheduleError as exc:
                assert str(path) in str(exc), exc
                refused += 1
                continue
            except Exception as exc:  # noqa: BLE001 - the point of the test
                pytest.fail(f"{type(exc).__name__}: {exc}\non mutant {i}:\n{path.read_bytes()[:300]!r}")
            finally:
                signal.alarm(0)
            loaded += 1
            for fmt in ("ecad-schedule", "ecad"):
                out = schedule.save(tmp_path / "saved.json", format=fmt)
                assert load_schedule(out).to_json() == schedule.to_json() or fmt == "ecad"
    finally:
        signal.signal(signal.SIGALRM, signal.SIG_DFL)
    print(f"{loaded} loaded, {refused} refused")
    assert loaded > 20 and refused > 300  # both outcomes were exercised


def _dumps(schedule: Schedule) -> str:
    return json.dumps(schedule.to_json(), indent=2)
