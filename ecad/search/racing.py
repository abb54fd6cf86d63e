"""Racing: evaluate a candidate chunk by chunk and stop it once it cannot reach the frontier.

The evaluation protocol (every prompt x seed) is a finite set of N images. A candidate is
rendered and scored on a fixed sequence of chunks of it; after each chunk its full-protocol
quality is estimated with a confidence bound, and a candidate whose optimistic bound, at its
known cost, is dominated by a fully evaluated point stops there. What is here:

- the chunk order (`chunk_order`, `chunk_bounds`): a deterministic, stratified permutation of
  the protocol, derived from the prompt count and the seeds only, in which every run of
  consecutive items spreads over the prompts and the seeds as evenly as it can, so an early
  chunk is a fair sample of the whole protocol;
- the paired estimate (`RaceState`): per image, the paired quantity is the candidate's quality
  minus the no-caching quality of the same prompt and seed. For a reference-free metric (CLIP,
  ImageReward, ...) the worker scores the no-caching images once, the race runs on the per-image
  differences d_i, and the estimate is Q_ref + mean(d) with Q_ref, the no-caching quality over
  the whole protocol, known exactly: the prompt-to-prompt spread, which dominates a raw mean's
  variance, cancels. For a reference-based metric (fidelity, PSNR) the reference's own score is a
  constant (SSIM 1), so the per-image score already is the paired quantity and the race runs on
  it directly. Set-level metrics (FID: no per-image score) cannot race (`metric_can_race`): the
  search evaluates them on the full protocol;
- the bound (`optimistic_bound`): mean +- t * s / sqrt(n) * sqrt((N - n) / (N - 1)), Student's t
  with a finite-population correction (after all N images the estimate is exact, the bound
  collapses onto it), one-sided, at `confidence` for the whole race of a candidate: the error
  level is split evenly over its looks (Bonferroni), since a candidate is tested after every chunk;
- the stop decision (`dominated`): strict Pareto dominance of (optimistic quality, cost) by a
  point of the archive of fully evaluated candidates; and, when the run sets a tolerance,
  `negligible`: the optimistic point would add at most that share to the archive's hypervolume.
  Dominance alone leaves the candidates that land between two frontier neighbours, most of a
  short search's offspring, to run whole; the tolerance trades a bounded share of hypervolume for
  them (off by default).

The sufficient statistics (count, mean, sum of squared deviations, combined chunk by chunk in
chunk order) are kept instead of per-image values: they continue a stopped or interrupted race
exactly, and take constant room in the evaluation log.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ecad.errors import EcadError

Item = tuple[int, int]  # (prompt index, seed)
DEFAULT_CONFIDENCE = 0.95
DEFAULT_CHUNKS = 10  # the auto chunk size splits the protocol into about this many chunks
# A generation races in this many waves (by key, `race_wave`); a wave is judged against the points
# its earlier waves completed too. Without waves, generation 0 would have nothing to stop against;
# each wave costs one wait for its slowest race.
WAVES = 4


class RacingError(EcadError, ValueError):
    """Racing settings or results that cannot work; the message names the option and the fix."""


# ---------------------------------------------------------------- chunk order
def chunk_order(num_prompts: int, seeds: Sequence[int]) -> list[Item]:
    """Every (prompt, seed) once, stratified: pass j lists every prompt once, prompt i (in a fixed
    shuffled order) with seed number (i + j) mod S, so any P consecutive items hold every prompt
    once and the seeds in equal shares. The prompt shuffle is seeded by the protocol's size only:
    the same protocol gives the same order in every run (and the same cached references)."""
    seeds = list(seeds)
    perm = np.random.default_rng(1_000_003 * num_prompts + len(seeds)).permutation(num_prompts)
    return [(int(perm[i]), seeds[(i + j) % len(seeds)]) for j in range(len(seeds)) for i in range(num_prompts)]


def auto_chunk_size(total: int, batch_size: int) -> int:
    """About a tenth of the protocol, rounded up to whole batches (a GPU renders full batches), but
    never the whole protocol when it holds two images or more: a race of one chunk cannot stop
    anything, so a protocol of one batch (the offline demo's) races in two halves."""
    size = max(1, math.ceil(math.ceil(total / DEFAULT_CHUNKS) / batch_size) * batch_size)
    return size if size < total else max(1, math.ceil(total / 2))


def chunk_bounds(total: int, chunk_size: int) -> list[tuple[int, int]]:
    """[start, end) of each chunk of the racing order; the last one may be shorter."""
    if chunk_size < 1:
        raise RacingError(f"racing chunk size must be >= 1 image, got {chunk_size}")
    return [(a, min(total, a + chunk_size)) for a in range(0, total, chunk_size)]


def metric_can_race(name: str) -> bool:
    """Whether a metric scores images one by one (racing needs per-image scores): its class's
    `per_image` (False for FID and shapes-fid: a subset's FID is not an estimate of the set's).
    A metric registered as a plain factory says nothing and is raced; one that then returns no
    per-image scores stops the search at its first chunk with the advice to turn racing off
    (`RaceState.add`)."""
    from ecad.metrics import registered_class

    cls = registered_class(name)
    return True if cls is None else bool(getattr(cls, "per_image", True))


# ---------------------------------------------------------------- statistics
@dataclass
class Moments:
    """Count, mean and sum of squared deviations of a stream of values, combined batch by batch
    (Chan et al.'s update): deterministic for a fixed order of batches, exact to rounding."""

    n: int = 0
    mean: float = 0.0
    m2: float = 0.0

    def add(self, values: Sequence[float] | np.ndarray) -> None:
        x = np.asarray(values, dtype=np.float64)
        if not x.size:
            return
        nb, mb = int(x.size), float(x.mean())
        m2b = float(((x - mb) ** 2).sum())
        n = self.n + nb
        delta = mb - self.mean
        self.mean += delta * nb / n
        self.m2 += m2b + delta * delta * self.n * nb / n
        self.n = n

    @property
    def variance(self) -> float:
        """Sample variance (n - 1 in the denominator); 0 below two values."""
        return self.m2 / (self.n - 1) if self.n > 1 else 0.0

    def to_json(self) -> list[float]:
        return [self.n, self.mean, self.m2]

    @classmethod
    def from_json(cls, d: Any) -> Moments:
        if not (isinstance(d, list) and len(d) == 3 and all(isinstance(v, (int, float)) for v in d)):
            raise RacingError("racing moments are not [n, mean, m2]")
        return cls(int(d[0]), float(d[1]), float(d[2]))


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the regularised incomplete beta function (Lentz's method)."""
    tiny, qab, qap, qam = 1e-300, a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 300):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < 1e-15:
            break
    return h


def _betainc(a: float, b: float, x: float) -> float:
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1.0 - x) / b


def t_cdf(t: float, df: float) -> float:
    """Student's t distribution function (no scipy in ecad's dependencies)."""
    x = df / (df + t * t)
    tail = 0.5 * _betainc(df / 2.0, 0.5, x)
    return 1.0 - tail if t > 0 else tail


def t_quantile(p: float, df: float) -> float:
    """The p-quantile of Student's t with df degrees of freedom (p in (0.5, 1)), by bisection."""
    lo, hi = 0.0, 1.0
    while t_cdf(hi, df) < p:
        hi *= 2.0
        if hi > 1e12:
            return hi
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if t_cdf(mid, df) < p:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-12 * max(1.0, hi):
            break
    return hi


def optimistic_bound(
    moments: Moments, total: int, confidence: float, looks: int, higher_is_better: bool, offset: float = 0.0
) -> float:
    """The optimistic end of a one-sided confidence interval for the mean over all `total` images:
    offset + mean + t * s / sqrt(n) * sqrt((total - n) / (total - 1)) (minus, for a metric where
    lower is better), with the error level (1 - confidence) split over `looks` tests. Infinite
    (nothing can be concluded) below two values; the mean itself once every image is in."""
    n = moments.n
    if n >= total:
        return offset + moments.mean
    if n < 2:
        return math.inf if higher_is_better else -math.inf
    alpha = (1.0 - confidence) / max(1, looks)
    fpc = math.sqrt((total - n) / (total - 1))
    half = t_quantile(1.0 - alpha, n - 1) * math.sqrt(moments.variance / n) * fpc
    return offset + moments.mean + (half if higher_is_better else -half)


def dominated(quality: float, cost: float, archive: Sequence[tuple[float, float]], higher_is_better: bool) -> bool:
    """Whether (quality, cost) is strictly Pareto-dominated by a point of `archive` (quality by the
    metric's direction, cost minimised): at least as good on both and better on one."""
    sign = 1.0 if higher_is_better else -1.0
    q = sign * quality
    for aq, ac in archive:
        aq = sign * aq
        if aq >= q and ac <= cost and (aq > q or ac < cost):
            return True
    return False


def hypervolume_gain(
    quality: float, cost: float, archive: Sequence[tuple[float, float]], higher_is_better: bool, ref: Sequence[float]
) -> tuple[float, float] | None:
    """The hypervolume that (quality, cost) would add to `archive`'s, and the archive's own, against
    the run's reference point `ref` (minimisation coordinates: (-quality or quality, cost)), as
    (gain, archive hypervolume); None when the point lies outside the reference box, where the
    hypervolume cannot tell what it is worth (a cheaper or worse point than any generation 0 had)."""
    import moocore

    sign = -1.0 if higher_is_better else 1.0
    point = np.array([sign * quality, cost], dtype=float)
    r = np.asarray(ref, dtype=float)
    if not (point < r).all():
        return None
    pts = np.array([[sign * q, c] for q, c in archive], dtype=float).reshape(-1, 2)
    pts = pts[(pts < r).all(axis=1)]
    base = float(moocore.hypervolume(pts, ref=r)) if len(pts) else 0.0
    return float(moocore.hypervolume(np.vstack([pts, point]), ref=r)) - base, base


def negligible(
    quality: float,
    cost: float,
    archive: Sequence[tuple[float, float]],
    higher_is_better: bool,
    ref: Sequence[float] | None,
    tolerance: float,
) -> bool:
    """Whether even the optimistic (quality, cost) would add at most `tolerance` x the archive's
    hypervolume (the run's `--racing-tolerance`, an indifference zone: 0 turns the rule off). It
    stops races that could at best squeeze a point between two frontier neighbours; a point outside
    the reference box, or a run without a reference point yet (generation 0), is never negligible."""
    if tolerance <= 0 or ref is None or not archive:
        return False
    gain = hypervolume_gain(quality, cost, archive, higher_is_better, ref)
    if gain is None:
        return False
    added, base = gain
    return base > 0 and added <= tolerance * base


# ---------------------------------------------------------------- a race
@dataclass
class RaceState:
    """How far one candidate's race got, enough to continue it exactly from its next chunk.

    `quality` holds the per-image scores (their mean is the full-protocol quality once every chunk
    is in); `paired` the paired quantity the bound is computed on: the scores themselves for a
    reference-based metric, the differences to the no-caching scores for a reference-free one, in
    which case `reference_mean` is the no-caching quality over the whole protocol."""

    total_chunks: int
    total_images: int
    chunks: int = 0
    quality: Moments = field(default_factory=Moments)
    paired: Moments = field(default_factory=Moments)
    reference_mean: float | None = None
    extras: dict[str, list[float]] = field(default_factory=dict)  # name -> [count, sum]
    batch_ms: list[float] = field(default_factory=list)  # ms per image of each full batch (latency cost)
    first_batch_ms: float | None = None  # of the first batch, when no batch was full
    reference_ms: float | None = None
    # per full batch, its ms per image over the no-caching ms of the worker that rendered it: the
    # chunks of one race may run on different GPUs, each compared with its own yardstick
    relative: list[float] = field(default_factory=list)
    stopped: bool = False

    @property
    def complete(self) -> bool:
        return self.chunks >= self.total_chunks

    @property
    def looks(self) -> int:
        return max(1, self.total_chunks - 1)

    def add(self, result: dict[str, Any]) -> None:
        """One chunk's worker result (CandidateEvaluator.evaluate with a chunk), which must be the
        next chunk of this race."""
        if result.get("chunk") != self.chunks:
            raise RacingError(f"chunk {result.get('chunk')} arrived, chunk {self.chunks} was expected")
        q = np.asarray(result["per_image"], dtype=np.float64)
        if not np.isfinite(q).all():
            raise RacingError(
                "the metric gave no finite per-image scores, so it cannot race; search with racing off (--racing off)"
            )
        ref = result.get("reference_per_image")
        self.quality.add(q)
        if ref is None:
            self.paired.add(q)
        else:
            self.paired.add(q - np.asarray(ref, dtype=np.float64))
            self.reference_mean = float(result["reference_summary"])
        for name, values in (result.get("extras") or {}).items():
            v = np.asarray(values, dtype=np.float64)
            v = v[np.isfinite(v)]
            n, s = self.extras.get(name, [0, 0.0])
            self.extras[name] = [n + int(v.size), s + float(v.sum())]
        yardstick = result.get("reference_ms_per_image")
        if yardstick is not None:
            self.reference_ms = float(yardstick)
        batches = list(zip(result.get("batch_ms", []), result.get("full_batches", [])))
        for ms, whole in batches:
            if whole:
                self.batch_ms.append(float(ms))
                if yardstick:
                    self.relative.append(float(ms) / float(yardstick))
            elif self.first_batch_ms is None:
                self.first_batch_ms = float(ms)
        if yardstick and batches and not any(whole for _, whole in batches) and not self.relative:
            self.relative.append(float(batches[0][0]) / float(yardstick))
        self.chunks += 1

    def estimate(self) -> float:
        """The full-protocol quality estimated from the chunks so far (exact once complete)."""
        if self.complete or self.reference_mean is None:
            return self.quality.mean
        return self.reference_mean + self.paired.mean

    def bound(self, confidence: float, higher_is_better: bool) -> float:
        offset = self.reference_mean if self.reference_mean is not None else 0.0
        if self.complete:
            return self.quality.mean
        return optimistic_bound(self.paired, self.total_images, confidence, self.looks, higher_is_better, offset)

    def ms_per_image(self) -> float:
        """Median ms per image over the full batches so far (the first batch when none was full)."""
        if self.batch_ms:
            return float(np.median(self.batch_ms))
        return self.first_batch_ms if self.first_batch_ms is not None else float("nan")

    def relative_latency(self) -> float:
        """Median, over the full batches so far, of ms per image relative to the no-caching ms of
        the worker that rendered the batch (NaN without latency timings)."""
        return float(np.median(self.relative)) if self.relative else float("nan")

    def extras_means(self) -> dict[str, float]:
        return {k: (s / n if n else float("nan")) for k, (n, s) in self.extras.items()}

    def to_json(self) -> dict[str, Any]:
        return {
            "chunks": self.chunks,
            "total_chunks": self.total_chunks,
            "total_images": self.total_images,
            "n": self.quality.n,
            "quality": self.quality.to_json(),
            "paired": self.paired.to_json(),
            "reference_mean": self.reference_mean,
            "extras": self.extras,
            "batch_ms": self.batch_ms,
            "first_batch_ms": self.first_batch_ms,
            "reference_ms": self.reference_ms,
            "relative": self.relative,
            "stopped": self.stopped,
        }

    @classmethod
    def from_json(cls, d: Any) -> RaceState:
        """What to_json wrote (the `racing` entry of an evaluation's details), or RacingError."""
        try:
            return cls(
                total_chunks=int(d["total_chunks"]),
                total_images=int(d["total_images"]),
                chunks=int(d["chunks"]),
                quality=Moments.from_json(d["quality"]),
                paired=Moments.from_json(d["paired"]),
                reference_mean=None if d.get("reference_mean") is None else float(d["reference_mean"]),
                extras={str(k): [int(v[0]), float(v[1])] for k, v in (d.get("extras") or {}).items()},
                batch_ms=[float(v) for v in d.get("batch_ms") or []],
                first_batch_ms=None if d.get("first_batch_ms") is None else float(d["first_batch_ms"]),
                reference_ms=None if d.get("reference_ms") is None else float(d["reference_ms"]),
                relative=[float(v) for v in d.get("relative") or []],
                stopped=bool(d.get("stopped", False)),
            )
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise RacingError(f"racing state is not what ecad writes ({exc})") from None


def race_wave(key: str) -> int:
    """Which of a generation's `WAVES` waves a candidate races in, from its genome hash alone, so
    the split is the same however the candidates are listed (a resume lists fewer)."""
    return int(key[:8], 16) % WAVES


def raced_in(key: str, details: dict[str, Any]) -> tuple[int, int]:
    """The generation a candidate's race last ran in (the one it completed in, once complete) and
    its wave there, as its evaluation record says: (-1, hash wave) for a record evaluated whole
    without racing, and the hash's wave for records from before waves were recorded."""
    racing = details.get("racing")
    if not isinstance(racing, dict):
        return -1, race_wave(key)
    return int(racing.get("generation", -1)), int(racing.get("wave", race_wave(key)))
