"""Shared fixtures: offline tiny pipelines (real diffusers classes, seeded random weights)."""

from __future__ import annotations

import atexit
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # Ray's single-machine mode: loopback only
if "ECAD_CACHE" not in os.environ:  # the reference-image cache: one per test session, removed at its end
    os.environ["ECAD_CACHE"] = tempfile.mkdtemp(prefix="ecad-test-cache-")
    atexit.register(shutil.rmtree, os.environ["ECAD_CACHE"], ignore_errors=True)

import pytest
import torch

from ecad.models.flux import build_tiny_flux
from ecad.models.pixart import build_tiny_pixart
from ecad.search.run import SearchRun

torch.set_num_threads(2)

PIXART_CALL = dict(height=16, width=16, max_sequence_length=16, use_resolution_binning=False, clean_caption=False)
FLUX_CALL = dict(height=16, width=16, max_sequence_length=16)
# The smallest search that still runs selection and variation: initial population + 2 generations.
# One constant, so the search and report tests exercise the same run shape. Each test module starts
# its own run from it: tests resume, force-overwrite or write plots into their runs, so runs are not shared.
SMALL = dict(space="tiny-pixart", population=6, generations=2, num_prompts=2, seeds=1, batch_size=4)


def generate(pipe, prompt="a red cube on a table", seed=0, **kwargs):
    """One deterministic pipeline call returning image tensors."""
    base = PIXART_CALL if "PixArt" in type(pipe).__name__ else FLUX_CALL
    kw = {**base, "output_type": "pt", "generator": torch.Generator().manual_seed(seed), **kwargs}
    return pipe(prompt, **kw).images


@pytest.fixture
def tiny_pixart():
    pipe = build_tiny_pixart()
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture
def tiny_pixart_sigma():
    pipe = build_tiny_pixart("sigma")
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture
def tiny_flux():
    pipe = build_tiny_flux()
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="session")
def ray_cluster():
    """One local Ray cluster per test session (about 6 s to start), bound to loopback, shut down at the end."""
    ray = pytest.importorskip("ray")
    if not ray.is_initialized():
        ray.init(
            num_cpus=2,
            include_dashboard=False,
            log_to_driver=False,
            configure_logging=False,
            _node_ip_address="127.0.0.1",
        )
    yield ray
    ray.shutdown()


@pytest.fixture
def idle_cluster(ray_cluster):
    """The session cluster with all its CPUs free: the workers of a test before release theirs a
    moment after they are killed, and these tests count on what fits."""
    deadline = time.monotonic() + 60
    while ray_cluster.available_resources().get("CPU", 0) < ray_cluster.cluster_resources().get("CPU", 0):
        assert time.monotonic() < deadline, "the Ray cluster's CPUs did not free within 60 s"
        time.sleep(0.1)
    return ray_cluster


def candidate_tasks(space_name: str, n: int, seed: int = 5) -> list[tuple[str, dict]]:
    """`n` random candidates of a space as the search hands them to a pool: (genome hash, schedule JSON)."""
    import numpy as np

    from ecad.search.genome import GenomeSpec, genome_hash
    from ecad.search.seeds import random_genomes
    from ecad.spaces import load_space

    space = load_space(space_name)
    spec = GenomeSpec.for_space(space)
    return [
        (genome_hash(g), spec.to_schedule(g, space).to_json())
        for g in random_genomes(spec, np.random.default_rng(seed), n)
    ]


@pytest.fixture
def empty_caches(tmp_path, monkeypatch):
    """Offline, with every cache a metric or model could read its weights from empty (tmp_path/VAR)."""
    for var in ("HF_HOME", "HF_HUB_CACHE", "TORCH_HOME", "XDG_CACHE_HOME", "HPS_ROOT"):
        (tmp_path / var).mkdir()
        monkeypatch.setenv(var, str(tmp_path / var))
    monkeypatch.delenv("HUGGINGFACE_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HOME", str(tmp_path))
    return tmp_path


def tiny_family(family: str):
    """(space, pipeline) of a family's offline tiny space, on the CPU, progress bars off."""
    from ecad.models import load_pipeline
    from ecad.spaces import load_space

    space = load_space(f"tiny-{family}")
    pipe = load_pipeline(space, device="cpu")
    pipe.set_progress_bar_config(disable=True)
    return space, pipe


def run_space(pipe, space, prompts, steps: int | None = None, seed: int = 0, **overrides) -> torch.Tensor:
    """One call as the space makes it (seeds seed, seed+1, ... per prompt), its output images; steps=None
    leaves the step count to an applied schedule."""
    call = {**space.call_kwargs(), **overrides}
    call.pop("num_inference_steps")
    if steps is not None:
        call["num_inference_steps"] = steps
    gens = [torch.Generator().manual_seed(seed + i) for i in range(len(prompts))]
    return space.adapter.output_images(pipe(list(prompts), generator=gens, output_type="pt", **call))


class CutAfter(SearchRun):
    """A search interrupted (as Ctrl-C does) once it has written `n` evaluation records."""

    def __init__(self, *args, n: int, **kwargs):
        super().__init__(*args, **kwargs)
        self.n = n

    def _log(self, *args, **kwargs):
        if len(self.records) >= self.n:
            raise KeyboardInterrupt
        super()._log(*args, **kwargs)


def evaluation_steps(run_dir: Path) -> list[tuple[str, int | None]]:
    """(key, racing chunks done) of each record in a run's evaluations.jsonl. A raced candidate
    writes one record per chunk it ran, so "no candidate evaluated twice" means no pair twice."""
    steps = []
    for line in (Path(run_dir) / "evaluations.jsonl").read_text().splitlines():
        record = json.loads(line)
        steps.append((record["key"], (record.get("details") or {}).get("racing", {}).get("chunks")))
    return steps
