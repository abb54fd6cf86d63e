"""A candidate evaluator holding one loaded pipeline: the body of every Ray actor.

Loading a pipeline costs far more than evaluating one candidate, so a worker loads it once,
encodes the calibration prompts once (then frees the text encoders), produces the uncached
reference images once when the metric or the latency cost needs them (or reads them from the
disk cache), and then only swaps schedules.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ecad.files import atomic_write, cache_dir
from ecad.generation import Renderer
from ecad.schedule import load_schedule
from ecad.search.racing import chunk_bounds, chunk_order
from ecad.spaces import SearchSpace


@dataclass(frozen=True)
class WorkerConfig:
    """What every worker of a run needs; identical on all workers of the run."""

    # the parsed space, sent whole: a worker on another machine has no copy of a `--space my.toml`
    # the driver read (a name or path is loaded on the worker: handy in tests and single machines)
    space: SearchSpace | str
    prompts: tuple[str, ...]
    seeds: tuple[int, ...]
    metric: str = "fidelity"
    metric_options: dict[str, Any] = field(default_factory=dict)
    cost: str = "macs"  # or "latency"
    batch_size: int = 8
    device: str | None = None  # None: cuda if available, else cpu
    reference_cache: str | None = None  # directory; None: references/ in ecad's cache root (ecad.files.cache_dir)
    threads: int = 1  # torch threads per CPU worker
    # racing (ecad.search.racing): images per chunk of the stratified racing order; None renders
    # the protocol prompt by prompt and evaluates candidates whole only
    chunk_size: int | None = None
    # the lossless text K/V cache under every candidate (the run's --text-kv-cache): it does not
    # change the images, but it changes what --cost latency measures
    text_kv_cache: bool = True


class CandidateEvaluator:
    """Evaluate schedules (JSON dicts) on one device: a `Renderer` for the images, a metric for
    their score. Plain class; `ray.remote` wraps it."""

    def __init__(self, config: WorkerConfig):
        from ecad.metrics import get_metric
        from ecad.spaces import load_space

        t0 = time.perf_counter()
        self.config = config
        device = torch.device(config.device or ("cuda" if torch.cuda.is_available() else "cpu"))
        if device.type == "cpu":
            torch.set_num_threads(max(1, config.threads))
        self.space = load_space(config.space) if isinstance(config.space, str) else config.space
        self.renderer = Renderer(self.space, config.prompts, device, text_kv_cache=config.text_kv_cache)
        self.device = self.renderer.device
        if config.chunk_size is None:
            self.items = self.renderer.items(config.seeds)
            self.chunks = [(0, len(self.items))]
        else:  # the racing order: chunks of it are rendered alike for references and candidates
            self.items = chunk_order(len(config.prompts), config.seeds)
            self.chunks = chunk_bounds(len(self.items), config.chunk_size)
        self.metric = get_metric(config.metric, device=self.device, **config.metric_options)
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}:{self.device}"
        self.references, self.reference_ms = self._references()
        # racing a reference-free metric pairs each image with the no-caching score of its prompt
        # and seed: scored once here, from the same reference images
        self.reference_scores: np.ndarray | None = None
        if config.chunk_size is not None and not self.metric.needs_reference:
            self.reference_scores = self._reference_scores()
        self.init_seconds = time.perf_counter() - t0

    @property
    def pipe(self):
        return self.renderer.pipe

    # ------------------------------------------------------------ set-up
    def _weights_fingerprint(self) -> str:
        """Cheap identity of the loaded weights (a strided sample of every tensor), so cached
        references never outlive a change of weights behind the same model id."""
        h = hashlib.sha256()
        with torch.no_grad():
            for module in (self.pipe.transformer, self.pipe.vae):
                for name, p in module.state_dict().items():
                    flat = p.reshape(-1)
                    sample = flat[:: max(1, flat.numel() // 64)].double().cpu().numpy()
                    h.update(name.encode() + str(tuple(p.shape)).encode() + sample.tobytes())
            for name, e in sorted(self.renderer.embeds.items()):  # tokenizer + text encoder, through their output
                h.update(name.encode() + e.reshape(-1)[:: max(1, e.numel() // 256)].double().cpu().numpy().tobytes())
        return h.hexdigest()[:16]

    def _reference_key(self) -> str:
        """Everything the uncached images depend on: batching and the GPU model change the last
        bits of the outputs, so a cache shared between machines or batch sizes must tell them apart."""
        from ecad.metrics.latency import device_name

        ident = {
            "weights": self._weights_fingerprint(),
            "model": self.space.model,
            "space": self.space.name,
            "steps": self.space.steps,
            "scheduler": type(self.pipe.scheduler).__name__,
            "size": [self.space.height, self.space.width],
            "guidance": self.space.guidance_scale,
            "dtype": str(self.pipe.transformer.dtype),
            "device": self.device.type,
            "device_name": device_name(self.device),
            "batch_size": self.config.batch_size,
            # CPU results depend on the thread set-up: a Ray actor and the driver process differ
            "threads": [torch.get_num_threads(), os.environ.get("OMP_NUM_THREADS")],
            "prompts": list(self.config.prompts),
            "seeds": list(self.config.seeds),
            "call": {k: v for k, v in self.space.call_kwargs().items()},
        }
        if self.config.chunk_size is not None:  # rendered in the racing order, batched within chunks
            ident["racing_chunk_size"] = self.config.chunk_size
            ident["order"] = [list(item) for item in self.items]
        return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:32]

    def _references(self) -> tuple[torch.Tensor | None, float]:
        """Uncached images of every prompt x seed (from the disk cache when present), kept on the
        worker's device, and, for the latency cost, the worker's own no-caching ms per image.

        Both cost a whole no-caching pass over the prompts, so they are only made when used: the
        images when the metric compares against references, the timing for the latency cost.
        Otherwise (None, NaN)."""
        from safetensors.torch import load_file, save_file

        racing_reference_free = self.config.chunk_size is not None and not self.metric.needs_reference
        if not self.metric.needs_reference and self.config.cost != "latency" and not racing_reference_free:
            return None, float("nan")
        directory = Path(self.config.reference_cache) if self.config.reference_cache else cache_dir("references")
        path = directory / f"{self._reference_key()}.safetensors"
        self.renderer.apply(self.space.full_schedule())
        if self.config.cost == "latency":  # warm kernels before the run that sets the yardstick
            self.renderer.images(self.items[: self.config.batch_size])
        if path.exists() and self.config.cost != "latency":
            return load_file(str(path))["images"].to(self.device), float("nan")
        images, ms, _ = self._render_all(self.config.batch_size)
        if not path.exists():
            atomic_write(
                path,
                lambda tmp: save_file(
                    {"images": images.cpu().contiguous()}, str(tmp), metadata={"space": self.space.name}
                ),
            )
        return (images if self.metric.needs_reference or racing_reference_free else None), (
            ms if self.config.cost == "latency" else float("nan")
        )

    def _reference_scores(self) -> np.ndarray:
        """The metric's per-image score of every no-caching image (racing order), then the images are
        dropped: a reference-free metric never compares against them."""
        assert self.references is not None
        scores = []
        for a, b in self.chunks:
            images, prompts = self._chunk_images(self.references, a, b)
            scores.append(self._per_item(self.metric.score(images, prompts).per_image, b - a))
        self.references = None
        return np.concatenate(scores) if scores else np.zeros(0)

    def _chunk_images(self, images: torch.Tensor, a: int, b: int) -> tuple[torch.Tensor, list[str]]:
        """Images (all frames) and one prompt per image of items a..b of `self.items`."""
        frames = images.shape[0] // len(self.items)
        prompts = [self.config.prompts[p] for p, _ in self.items[a:b] for _ in range(frames)]
        return images[a * frames : b * frames], prompts

    @staticmethod
    def _per_item(per_image: np.ndarray, items: int) -> np.ndarray:
        """One value per item: a video's frame scores averaged (fidelity of a video is its frames' mean)."""
        values = np.asarray(per_image, dtype=np.float64)
        return values.reshape(items, -1).mean(axis=1) if items else values

    def _render_items(self, a: int, b: int, batch_size: int):
        """Items a..b of `self.items`, chunk by chunk in batches of `batch_size` within each chunk, so
        a chunk is rendered in the same batches whether it is rendered alone (racing) or with the
        rest (references, full evaluations): the batch a row lands in can change its last bits."""
        images, ms, full, finite = [], [], [], True
        for ca, cb in self.chunks:
            lo, hi = max(a, ca), min(b, cb)
            if lo >= hi:
                continue
            if (lo, hi) != (ca, cb):
                raise ValueError(f"items {a}..{b} do not cover whole chunks")
            r = self.renderer.render(self.items[lo:hi], batch_size)
            images.append(r.images)
            ms += r.ms_per_item
            full += r.full_batches
            finite &= r.finite
        return (torch.cat(images) if images else torch.empty(0, dtype=torch.uint8)), ms, full, finite

    def _render_all(self, batch_size: int) -> tuple[torch.Tensor, float, bool]:
        """Every prompt x seed: 8-bit images on the worker's device, the median ms per image over
        full batches (the first batch when none is full), and whether every image was finite."""
        images, ms, full_batches, finite = self._render_items(0, len(self.items), batch_size)
        full = [m for m, whole in zip(ms, full_batches) if whole]
        return images, float(np.median(full or ms[:1])), finite

    # ------------------------------------------------------------ evaluation
    def ready(self) -> dict[str, Any]:
        return {
            "worker": self.worker_id,
            "pid": os.getpid(),
            "device": str(self.device),
            "init_seconds": round(self.init_seconds, 2),
            "reference_ms_per_image": self.reference_ms,
            "metric": self.metric.name,
            "higher_is_better": self.metric.higher_is_better,
        }

    def pid(self) -> int:
        return os.getpid()

    def evaluate(self, schedule_json: dict[str, Any], warmup: bool = False, chunk: int | None = None) -> dict[str, Any]:
        """Apply, generate every prompt x seed (or only chunk `chunk` of the racing order), score.
        Failures come back as infeasible results with a reason (NaN images, OOM even at batch 1),
        never as exceptions."""
        self.renderer.apply(load_schedule(schedule_json))
        if chunk is not None:
            return self.evaluate_chunk(chunk)
        return self.evaluate_current(warmup)

    def evaluate_chunk(self, chunk: int) -> dict[str, Any]:
        """One chunk of a race (ecad.search.racing) with the schedule applied now: per-image scores
        of its items, in the racing order, with what pairs them. For a reference-based metric the
        scores compare each image with its own no-caching image, so they are the paired quantity; for
        a reference-free one the no-caching scores of the same items come with them
        (`reference_per_image`), and their mean over the whole protocol (`reference_summary`)."""
        if self.config.chunk_size is None:
            raise ValueError("this worker was not configured for racing (WorkerConfig.chunk_size)")
        if not 0 <= chunk < len(self.chunks):
            raise ValueError(f"chunk {chunk} out of range: the racing order has {len(self.chunks)} chunks")
        a, b = self.chunks[chunk]
        t0 = time.perf_counter()
        bs = self.config.batch_size
        while True:
            try:
                images, ms, full, finite = self._render_items(a, b, bs)
                break
            except torch.OutOfMemoryError:
                if self.device.type == "cuda":
                    torch.cuda.empty_cache()
                if bs == 1:
                    return {**self._infeasible("CUDA out of memory even at batch size 1", t0), "images": b - a}
                bs = max(1, bs // 2)
        t1 = time.perf_counter()
        if not finite or images.numel() == 0:
            return {**self._infeasible("non-finite images", t0), "images": b - a}
        frames = images.shape[0] // (b - a)
        prompts = [self.config.prompts[p] for p, _ in self.items[a:b] for _ in range(frames)]
        references = None
        if self.metric.needs_reference:
            references = self.references[a * frames : b * frames]
        result = self.metric.score(images, prompts, references)
        t2 = time.perf_counter()
        out = {
            "feasible": True,
            "chunk": chunk,
            "images": b - a,
            "per_image": self._per_item(result.per_image, b - a).tolist(),
            "reference_per_image": None,
            "reference_summary": None,
            "higher_is_better": result.higher_is_better,
            "extras": {k: self._per_item(v, b - a).tolist() for k, v in result.extras.items()},
            "batch_ms": ms,
            "full_batches": full,
            "batch_size": bs,
            "worker": self.worker_id,
            "timings": {"generate_s": round(t1 - t0, 4), "score_s": round(t2 - t1, 4)},
        }
        if self.reference_scores is not None:
            out["reference_per_image"] = self.reference_scores[a:b].tolist()
            out["reference_summary"] = float(np.mean(self.reference_scores))
        if self.config.cost == "latency":
            out["reference_ms_per_image"] = self.reference_ms
        return out

    def evaluate_current(self, warmup: bool = False) -> dict[str, Any]:
        """Generate and score with the pipeline as it is now configured (a schedule, or a peer
        cache that `ecad compare` enabled). `warmup` runs one untimed batch first: for a new kind
        of pipeline set-up (a peer cache); the search's schedule swaps reuse warm kernels."""
        t0 = time.perf_counter()
        bs = self.config.batch_size
        if warmup:
            self.renderer.images(self.items[:bs])
        while True:
            try:
                images, ms, finite = self._render_all(bs)
                break
            except torch.OutOfMemoryError:
                if self.device.type == "cuda":
                    torch.cuda.empty_cache()
                if bs == 1:
                    return self._infeasible("CUDA out of memory even at batch size 1", t0)
                bs = max(1, bs // 2)
        t1 = time.perf_counter()
        if not finite or images.numel() == 0:
            return self._infeasible("non-finite images", t0)
        frames = images.shape[0] // len(self.items)  # 1 for images; a video's frames are scored one by one
        prompts = [self.config.prompts[p] for p, _ in self.items for _ in range(frames)]
        # uint8 as saved: the metric converts (QualityMetric.score), once, on its own device
        result = self.metric.score(images, prompts, self.references if self.metric.needs_reference else None)
        t2 = time.perf_counter()
        if not np.isfinite(result.summary):
            return self._infeasible(f"metric {result.name} returned {result.summary}", t0)
        out = {
            "feasible": True,
            "quality": float(result.summary),
            "higher_is_better": result.higher_is_better,
            "extras": {k: float(np.nanmean(v)) for k, v in result.extras.items()},
            "ms_per_image": ms,
            "batch_size": bs,
            "worker": self.worker_id,
            "timings": {"generate_s": round(t1 - t0, 4), "score_s": round(t2 - t1, 4)},
        }
        if self.config.cost == "latency":
            from ecad.metrics.latency import device_name

            out["relative_latency"] = ms / self.reference_ms
            out["reference_ms_per_image"] = self.reference_ms
            out["latency_settings"] = {
                "device": device_name(self.device),
                "dtype": str(self.pipe.transformer.dtype),
                "batch": bs,
                "resolution": [self.space.height, self.space.width],
                "steps": self.space.steps,
            }
        return out

    def _infeasible(self, reason: str, t0: float) -> dict[str, Any]:
        return {
            "feasible": False,
            "reason": reason,
            "worker": self.worker_id,
            "timings": {"generate_s": round(time.perf_counter() - t0, 4), "score_s": 0.0},
        }
