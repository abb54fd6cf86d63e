"""What a model-family adapter is: the one place that knows a family.

An adapter says how ecad sees one family of diffusers transformers: its block groups and
components and where they live in the module tree, the block path that skips the work of reused
components, how its pipelines encode prompts and run classifier-free guidance (how many
transformer calls a step makes), how a step subset is run, its MACs formulas read from the model
config, the component roles heuristic seeds use, its names in ECAD's files, and its offline tiny
pipeline. Every other module asks the adapter (`ecad.models.adapter_for`) instead of branching on
a family name, so adding a family is one adapter module and one registry line.
"""

from __future__ import annotations

import abc
import contextlib
import dataclasses
import inspect
import logging
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from ecad.errors import EcadError
from ecad.layouts import BlockGroup, Layout
from ecad.schedule import ScheduleError

logger = logging.getLogger(__name__)


class ModelWeightsError(EcadError, RuntimeError):
    """Weights are not available locally; the message says which and how to fetch them."""


class UnsupportedModelError(ScheduleError):
    """A transformer, pipeline or call that ecad's adapter for the family cannot run a schedule on
    correctly (a ScheduleError: it is what stops a schedule from being applied)."""


# ----------------------------------------------------------------- block paths
# A block path computes a block's output when some of its components are reused at this step:
# fn(block, kwargs, cached, exact) -> block output. `cached` holds the reused components' outputs;
# the others it computes by calling the (hooked) component modules. It skips the norms and
# modulation that only feed reused components. `exact`: keep the block's own op order, so results
# are bit-identical to running the stock block with cached outputs; otherwise fused multiply-adds.
BlockPathFn = Callable[[nn.Module, dict, dict[str, Any], bool], Any]


@dataclass(frozen=True)
class BlockPath:
    fn: BlockPathFn
    partial: bool  # also takes blocks where only some components are reused (else: fully reused only)


@dataclass(frozen=True)
class BlockKind:
    """One kind of block group a family's layouts are made of, in layout order."""

    name: str  # the transformer's ModuleList attribute
    components: tuple[str, ...]
    label: str  # short display name (heatmaps, report)
    key_prefix: str = ""  # ECAD's block-key prefix
    optional: bool = False  # a layout may have none of these blocks

    def group(self, count: int) -> BlockGroup:
        return BlockGroup(self.name, count, self.components, self.key_prefix, self.label)


@dataclass(frozen=True)
class StepSelection:
    """How a pipeline call runs only some steps of its base grid: extra call arguments, and a
    context entered around the call (for pipelines that take no `timesteps=`/`sigmas=`)."""

    kwargs: dict[str, Any]
    context: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext


# ----------------------------------------------------------------------- MACs
@dataclass(frozen=True, kw_only=True)
class TransformerDims:
    """Shapes that determine a transformer's MACs (weights and head splits do not). Each family
    subclasses it with its own fields; `family` picks the adapter whose formulas apply."""

    family: str
    hidden: int  # D = heads * head_dim
    patch_size: int = 2
    in_channels: int = 4
    out_channels: int = 4
    vae_scale_factor: int = 8  # pixels per latent cell; not in the transformer config
    text_len: int = 120  # default text tokens of the pipeline's prompt encoding

    @classmethod
    def from_transformer(cls, module: Any, vae_scale_factor: int = 8, text_len: int | None = None) -> TransformerDims:
        """From a loaded (or meta-device) diffusers transformer, through its family's adapter."""
        from ecad.models import adapter_for_transformer

        config = dict(module.config)
        config.setdefault("_class_name", type(module).__name__)
        return adapter_for_transformer(module).dims_from_config(config, vae_scale_factor, text_len)


@dataclass(frozen=True)
class Tokens:
    """Sequence lengths one transformer call sees."""

    image: int  # latent tokens (video: frames x patches)
    text: int  # text tokens


# ------------------------------------------------------------------- adapter
class FamilyAdapter(abc.ABC):
    """How ecad sees one model family. One stateless instance per family, in the registry
    (`ecad.models.ADAPTERS`). Subclasses set the class attributes and the family-specific methods
    (the abstract ones: an adapter missing one fails when it is instantiated, naming it); the
    defaults here are what most DiT pipelines do."""

    family: ClassVar[str]  # registry key, written into schedules and spaces
    display_name: ClassVar[str]  # "PixArt", "FLUX.1", ...
    block_kinds: ClassVar[tuple[BlockKind, ...]]
    # variant -> diffusers pipeline class; the variant None when the family has one pipeline
    pipeline_classes: ClassVar[Mapping[str | None, str]]
    transformer_classes: ClassVar[tuple[str, ...]]
    # component -> role: "attention", "cross_attention" (reads the text), "mlp" or "text_mlp" (the
    # text stream's MLP of joint blocks). Heuristic seeds cache by role (attention-only, T-GATE-like).
    roles: ClassVar[Mapping[str, str]]
    ecad_pipeline_names: ClassVar[Mapping[str | None, str]] = {}  # variant -> ECAD's `config.pipeline.name`
    video: ClassVar[bool] = False  # outputs frames: spaces set `frames`, fidelity averages over frames
    folds_reused_steps: ClassVar[bool] = False  # has step_reuse_prepare/apply (checked at class creation)
    tiny_models: ClassVar[Mapping[str, Callable[[], Any]]] = {}  # "ecad-tiny/..." -> builder
    vae_class: ClassVar[str] = "AutoencoderKL"
    preset_vae_scale_factor: ClassVar[int] = 8  # pixels per latent cell of the published checkpoints' VAE
    benchmark_space: ClassVar[str] = ""  # the shipped space benchmarks/ time this family in
    size_multiple: ClassVar[int] = 16  # heights and widths its pipelines take (VAE scale x patch size)
    # where a block's output holds the image tokens: None when blocks return them alone, else the
    # index in the tuple they return (joint blocks return (text stream, image stream))
    image_output_index: ClassVar[int | None] = None
    # classifier-free guidance's unconditional branch runs as a second transformer call per step
    # (Wan) instead of as the doubled batch of one call (PixArt, SD3, Sana)
    unconditional_call: ClassVar[bool] = False
    # the transformer call's inputs that hold the (unconditional, conditional) batch where CFG
    # doubles it: what FasterCache splits when it skips the unconditional branch
    cfg_batched_inputs: ClassVar[tuple[str, ...]] = (
        "hidden_states",
        "encoder_hidden_states",
        "timestep",
        "attention_mask",
        "encoder_attention_mask",
    )

    # ------------------------------------------------------------ layouts
    @property
    def default_variant(self) -> str | None:
        return next(iter(self.pipeline_classes))

    def layout(self, counts: Sequence[int]) -> Layout:
        """The layout with `counts[i]` blocks of `block_kinds[i]` (0 only for optional kinds)."""
        if len(counts) != len(self.block_kinds):
            raise ValueError(
                f"{self.display_name} layouts take {len(self.block_kinds)} block counts "
                f"({', '.join(k.label for k in self.block_kinds)}), got {list(counts)}"
            )
        groups = []
        for kind, n in zip(self.block_kinds, counts):
            if n < 0 or (n == 0 and not kind.optional):
                raise ValueError(
                    f"{self.display_name}: {kind.label} blocks must number >= {0 if kind.optional else 1}, got {n}"
                )
            if n:
                groups.append(kind.group(int(n)))
        return Layout(self.family, tuple(groups))

    def layout_from_groups(self, groups: Sequence[tuple[str, Sequence[str], int]]) -> Layout:
        """The layout of (name, components, count) groups as a file lists them, or a ValueError
        that says which group is wrong and what this family's groups are."""
        counts = [0] * len(self.block_kinds)
        k = 0
        for i, (name, components, count) in enumerate(groups):
            components = tuple(components)
            while k < len(self.block_kinds) and not (
                self.block_kinds[k].name == name and self.block_kinds[k].components == components
            ):
                if not self.block_kinds[k].optional:
                    break
                k += 1
            if (
                k >= len(self.block_kinds)
                or self.block_kinds[k].name != name
                or self.block_kinds[k].components != components
            ):
                raise ValueError(
                    f"group {i + 1} ({name} {list(components)}) is not where a {self.display_name} layout "
                    f"has it; the groups, in order, are: {self.describe_kinds()}"
                )
            counts[k] = int(count)
            k += 1
        missing = [kind.label for kind, n in zip(self.block_kinds, counts) if n == 0 and not kind.optional]
        if missing:
            raise ValueError(
                f"a {self.display_name} layout needs its {', '.join(missing)} group(s); the groups, "
                f"in order, are: {self.describe_kinds()}"
            )
        return self.layout(counts)

    def describe_kinds(self) -> str:
        return "; ".join(
            f"{k.name} {list(k.components)}" + (" (optional)" if k.optional else "") for k in self.block_kinds
        )

    def block_kind_of(self, block: nn.Module, list_name: str) -> BlockKind:
        """Which kind a block of module list `list_name` is; one kind per list unless overridden."""
        kinds = [k for k in self.block_kinds if k.name == list_name]
        return kinds[0]

    def layout_of(self, transformer: nn.Module) -> Layout:
        """The layout of a loaded transformer, read off its module tree."""
        counts = [0] * len(self.block_kinds)
        order: list[int] = []
        for list_name in dict.fromkeys(k.name for k in self.block_kinds):
            for i, block in enumerate(getattr(transformer, list_name)):
                k = self.block_kinds.index(self.block_kind_of(block, list_name))
                if order and order[-1] != k and k in order:
                    raise UnsupportedModelError(
                        f"{type(transformer).__name__}: block {list_name}[{i}] is a {self.block_kinds[k].label} block "
                        f"after other kinds; ecad's {self.display_name} layouts hold {self.describe_kinds()}, in order"
                    )
                if not order or order[-1] != k:
                    order.append(k)
                counts[k] += 1
        if order != sorted(order):
            raise UnsupportedModelError(
                f"{type(transformer).__name__}: its block kinds come in an order ecad's "
                f"{self.display_name} layouts do not have ({self.describe_kinds()})"
            )
        return self.layout(counts)

    def component_modules(self, block: nn.Module, group: BlockGroup) -> dict[str, nn.Module]:
        """Component name -> the sub-module whose output is cached (taken before the gate)."""
        return {name: getattr(block, name) for name in group.components}

    # ------------------------------------------------------------ block paths
    def block_path(self, block: nn.Module, group: BlockGroup) -> BlockPath | None:
        """The block's path for reused components, or None where this block's configuration is one
        the path does not know (the stock forward then runs, with cached component outputs)."""
        return None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.__dict__.get("folds_reused_steps"):
            missing = [
                m for m in ("step_reuse_prepare", "step_reuse_apply") if getattr(cls, m) is getattr(FamilyAdapter, m)
            ]
            if missing:
                raise TypeError(f"{cls.__name__} sets folds_reused_steps but does not define {', '.join(missing)}")

    def step_reuse_prepare(self, blocks: list[nn.Module], cached: list[dict[str, Any]]) -> Any:
        """Fold the cached outputs of all blocks into a few tensors once per run of fully reused
        steps. Only called where `folds_reused_steps` is set, which requires defining it."""
        raise TypeError(f"{type(self).__name__} does not fold reused steps (folds_reused_steps is False)")

    def step_reuse_apply(self, blocks: list[nn.Module], kwargs: dict, consts: Any) -> Any:
        """The last block's output from the first block's input, in a folded step."""
        raise TypeError(f"{type(self).__name__} does not fold reused steps (folds_reused_steps is False)")

    # ------------------------------------------------------------ pipeline calls
    def check_call(self, pipe: Any, kwargs: Mapping[str, Any]) -> None:
        """Raise UnsupportedModelError for pipeline options under which a schedule cannot run
        as searched (extra transformer calls per step, a second transformer). Default: none."""
        return None

    def select_steps(self, pipe: Any, selected: list[int], base_steps: int) -> StepSelection:
        """Run only the `selected` steps of the scheduler's `base_steps` grid. Default: wrap the
        scheduler's set_timesteps for the call so it builds the base grid and keeps the chosen
        timesteps and sigmas (and the final sigma): works for pipelines that take neither
        `timesteps=` nor `sigmas=`, and for schedulers that would rebuild a custom grid."""
        return StepSelection(
            {"num_inference_steps": base_steps}, lambda: scheduler_subset(pipe.scheduler, selected, base_steps)
        )

    @abc.abstractmethod
    def encode_prompts(self, pipe: Any, prompts: list[str], call: Mapping[str, Any], device) -> dict[str, torch.Tensor]:
        """Prompt (and negative-prompt) embeddings for `prompts`, one row per prompt, keyed by the
        call argument they are passed as; made the way the pipeline's own call makes them."""

    def embeds_call_kwargs(self) -> dict[str, Any]:
        """Extra call arguments when prompts are passed as embeddings (e.g. negative_prompt=None)."""
        return {}

    def image_stream(self, block_output: Any) -> torch.Tensor:
        """The image tokens a block returned (what first-block caches compare step to step)."""
        return block_output if self.image_output_index is None else block_output[self.image_output_index]

    def output_images(self, out: Any) -> torch.Tensor:
        """[N, 3, H, W] images in [0, 1] of an `output_type="pt"` call (video: every frame)."""
        return out.images

    def transformer_batch(self, batch: int, guidance_scale: float | None) -> int:
        """Transformer rows per step for `batch` images: CFG (guidance_scale > 1) adds an
        unconditional row per image, as a doubled batch or as a second call."""
        return 2 * batch if guidance_scale is None or guidance_scale > 1.0 else batch

    # ------------------------------------------------------------ MACs
    @abc.abstractmethod
    def dims_from_config(
        self, config: Mapping[str, Any], vae_scale_factor: int = 8, text_len: int | None = None
    ) -> TransformerDims:
        """The dimensions MACs are counted from, read from a transformer config."""

    @abc.abstractmethod
    def preset_config(self, space: Any) -> dict[str, Any]:
        """The transformer config of the published checkpoint a space names (keys that differ from
        the diffusers class defaults): MACs presets and full-size random-weight benchmarks."""

    def preset_dims(self, space: Any) -> TransformerDims:
        """Dimensions of a published checkpoint named by a space, without loading it."""
        import diffusers

        cls = getattr(diffusers, self.transformer_classes[0])
        defaults = {
            name: p.default
            for name, p in inspect.signature(cls.__init__).parameters.items()
            if p.default is not inspect.Parameter.empty
        }
        config = {**defaults, **self.preset_config(space), "_class_name": cls.__name__}
        return self.dims_from_config(config, self.preset_vae_scale_factor, space.text_length)

    def dims_for_pipeline(self, pipe: Any, space: Any) -> TransformerDims:
        """Dimensions of a loaded pipeline (the offline tiny ones)."""
        return TransformerDims.from_transformer(
            pipe.transformer, vae_scale_factor=pipe.vae_scale_factor, text_len=space.text_length
        )

    @abc.abstractmethod
    def layout_of_dims(self, dims: TransformerDims) -> Layout:
        """The block groups and components of a transformer of these dimensions."""

    def tokens(self, dims: TransformerDims, height: int, width: int, text_len: int | None = None) -> Tokens:
        cell = dims.vae_scale_factor * dims.patch_size
        return Tokens((height // cell) * (width // cell), text_len or dims.text_len)

    @abc.abstractmethod
    def group_macs(
        self, dims: TransformerDims, group: BlockGroup, tokens: Tokens, attention_matmuls: bool
    ) -> dict[str, float]:
        """MACs of one block of `group` at batch 1, by component."""

    @abc.abstractmethod
    def fixed_macs(self, dims: TransformerDims, tokens: Tokens) -> float:
        """MACs every step runs whatever the schedule (embedders, modulation, output head), batch 1."""

    def output_elements(self, dims: TransformerDims, group: BlockGroup, tokens: Tokens) -> dict[str, float]:
        """Elements of each component's cached output at batch 1: what a forecast cell combines
        element-wise (its MACs, reported beside the block MACs). Default: image tokens x width."""
        return {c: float(tokens.image * dims.hidden) for c in group.components}

    # ------------------------------------------------------------ text K/V of cross-attention
    def text_projections(self, block: nn.Module, group: BlockGroup) -> dict[str, list[nn.Module]]:
        """Component name -> the projections (cross-attention's to_k, to_v) whose input is a function
        of the transformer call's `encoder_hidden_states` alone (no timestep, no image tokens): their
        outputs are the same at every step of a call, so ecad.cache.text_kv computes them once.
        Families with joint attention (text and image tokens projected together) have none."""
        return {}

    def text_kv_macs(self, dims: TransformerDims, group: BlockGroup, tokens: Tokens) -> dict[str, float]:
        """The part of `group_macs` (batch 1, by component) spent in `text_projections`: counted once
        per call and branch where the text K/V cache is on, at every computed step where it is off."""
        return {}

    # ------------------------------------------------------------ test and benchmark models
    @abc.abstractmethod
    def build_tiny(self, num_blocks: int | None = None) -> Any:
        """The family's offline tiny pipeline; `num_blocks` changes its depth (benchmarks)."""

    @abc.abstractmethod
    def vae_config(self, space: Any) -> dict[str, Any]:
        """A VAE config of the published checkpoint's shape (`vae_class`), for random-weight timing."""

    def scheduler_config(self, space: Any) -> dict[str, Any]:
        """Config of the space's scheduler as the published checkpoint ships it."""
        return {}

    @abc.abstractmethod
    def random_prompt_kwargs(self, pipe: Any, batch: int, text_len: int, generator: torch.Generator) -> dict[str, Any]:
        """Random prompt embeddings of the right shapes for `batch` images (CPU tensors)."""

    def random_pipeline(self, space: Any, device: str, dtype: torch.dtype) -> Any:
        """A full-size pipeline with random weights and no text encoders (prompts come as
        embeddings): random weights time exactly like trained ones. Models are built directly on
        `device` in `dtype` (a FLUX-size model in fp32 first would need 48 GB); the scheduler
        outside, since its tables are numpy-backed and stay on the CPU."""
        import diffusers

        previous = torch.get_default_dtype()
        torch.set_default_dtype(dtype)
        try:
            with torch.device(device):
                torch.manual_seed(0)
                transformer = getattr(diffusers, self.transformer_classes[0])(**self.preset_config(space))
                vae = getattr(diffusers, self.vae_class)(**self.vae_config(space))
        finally:
            torch.set_default_dtype(previous)
        pipeline_cls = getattr(diffusers, space.pipeline_class)
        params = inspect.signature(pipeline_cls.__init__).parameters
        parts = {
            name: None
            for name, p in params.items()
            if name not in ("self", "transformer", "vae", "scheduler") and p.default is inspect.Parameter.empty
        }
        scheduler = getattr(diffusers, space.scheduler)(**self.scheduler_config(space))
        return pipeline_cls(
            transformer=transformer.to(dtype).eval(), vae=vae.to(dtype).eval(), scheduler=scheduler, **parts
        )

    # ------------------------------------------------------------ elsewhere
    def mag_ratios(self, steps: int) -> list[float] | None:
        """Published MagCache ratios for this family at `steps` steps, if diffusers ships them."""
        return None

    # ECAD's `cache_schedule` keys holding the block count of each kind, in block_kinds order
    # (empty: ECAD has no schedules of this family)
    ecad_count_keys: ClassVar[tuple[str, ...]] = ()

    def ecad_claims(self, cache_schedule: Mapping[str, Any]) -> bool:
        """Whether an ECAD `cache_schedule` is of this family (families with more block kinds are
        asked first)."""
        return False

    def ecad_block_counts(self, layout: Layout) -> dict[str, int]:
        if not self.ecad_count_keys:
            raise UnsupportedModelError(
                f"ECAD's schedule format has no {self.display_name} schedules; save this one "
                "in ecad's own format (ecad-schedule/1) instead"
            )
        return {key: g.num_blocks for key, g in zip(self.ecad_count_keys, layout.groups)}

    def min_run_steps(self, variant: str | None) -> tuple[int, str]:
        """The fewest steps a call of this family's pipeline can run, and why (a schedule that runs
        fewer is refused when it loads, not halfway through a call)."""
        return 1, ""

    def variant_error(self, variant: Any) -> str | None:
        """Why `variant` is not one of this family's, or None."""
        if variant in self.pipeline_classes:
            return None
        if list(self.pipeline_classes) == [None]:
            return f"field 'variant' is not used by {self.display_name}; remove it"
        return (
            f"field 'variant' must be one of {', '.join(str(v) for v in self.pipeline_classes)} for "
            f"{self.display_name}, got {variant!r}"
        )

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.family!r}>"


def signature_default(fn: Callable, name: str) -> Any:
    """A parameter's default (pipelines' own call defaults, so embeddings match the call's)."""
    return inspect.signature(fn).parameters[name].default


# --------------------------------------------------------------- step subsets
@contextlib.contextmanager
def scheduler_subset(scheduler: Any, selected: list[int], base_steps: int) -> Iterator[None]:
    """While active, `scheduler.set_timesteps(...)` builds its `base_steps` grid and keeps the
    `selected` entries (timesteps and sigmas, plus the final sigma the last step steps to)."""
    original = scheduler.set_timesteps
    own = "set_timesteps" in vars(scheduler)  # already wrapped by someone: put theirs back
    index = torch.as_tensor(selected)

    def set_timesteps(*args, **kwargs):
        kwargs.pop("num_inference_steps", None)
        if args:
            args = args[1:]
        original(base_steps, *args, **kwargs)
        timesteps, sigmas = scheduler.timesteps, getattr(scheduler, "sigmas", None)
        scheduler.timesteps = timesteps[index.to(timesteps.device)]
        if sigmas is not None and len(sigmas) == len(timesteps) + 1:
            keep = torch.cat([index, torch.tensor([len(timesteps)])]).to(sigmas.device)
            scheduler.sigmas = sigmas[keep]
        elif sigmas is not None:
            raise UnsupportedModelError(
                f"{type(scheduler).__name__}: its sigmas do not line up with its timesteps, "
                "so ecad cannot run a step subset on it; use a schedule without a timestep "
                "selection or another scheduler"
            )
        if hasattr(scheduler, "num_inference_steps"):
            scheduler.num_inference_steps = len(selected)

    scheduler.set_timesteps = set_timesteps
    try:
        yield
    finally:
        if own:
            scheduler.set_timesteps = original
        else:
            del scheduler.set_timesteps  # the class's method shows again


# ------------------------------------------------------------------- loading
def load_pretrained(pipeline_cls, hub_id: str, dtype: torch.dtype, device: str | torch.device | None, **kwargs):
    """from_pretrained with a user-facing error when weights are missing offline. Passes `dtype`:
    the diffusers ecad requires reads it, and warns on every load given the deprecated `torch_dtype`."""
    try:
        pipe = pipeline_cls.from_pretrained(hub_id, dtype=dtype, **kwargs)
    except (OSError, ValueError) as exc:  # hub errors subclass OSError; offline misses may raise ValueError
        local = os.path.isdir(hub_id)
        hint = (
            f"the directory {hub_id!r} does not hold a complete diffusers pipeline"
            if local
            else f"the weights of {hub_id!r} are not in the local Hugging Face cache and cannot be downloaded "
            f"(offline or no access). Fetch them on a machine with internet: `hf download {hub_id}` "
            f"(accept the model's licence on the Hub first if it is gated), then copy the cache "
            f"(~/.cache/huggingface) here or pass a local directory as the model id"
        )
        raise ModelWeightsError(f"cannot load {pipeline_cls.__name__}: {hint}. Cause: {exc}") from exc
    return pipe.to(device) if device is not None else pipe


def block_costs(
    adapter: FamilyAdapter, dims: TransformerDims, layout: Layout, tokens: Tokens, attention_matmuls: bool
) -> np.ndarray:
    """[blocks, components] MACs of one block each at batch 1, in grid order; padding cells 0."""
    out = np.zeros((layout.num_blocks, layout.num_components), dtype=np.float64)
    per_group = {g: adapter.group_macs(dims, g, tokens, attention_matmuls) for g in layout.groups}
    for b, (group, _) in enumerate(layout.blocks()):
        out[b, : len(group.components)] = [per_group[group][c] for c in group.components]
    return out


def text_kv_costs(adapter: FamilyAdapter, dims: TransformerDims, layout: Layout, tokens: Tokens) -> np.ndarray:
    """[blocks, components] MACs of the text K/V projections of one block each at batch 1 (the part
    of `block_costs` a text K/V cache computes once per call); 0 where a component has none."""
    out = np.zeros((layout.num_blocks, layout.num_components), dtype=np.float64)
    per_group = {g: adapter.text_kv_macs(dims, g, tokens) for g in layout.groups}
    for b, (group, _) in enumerate(layout.blocks()):
        out[b, : len(group.components)] = [per_group[group].get(c, 0.0) for c in group.components]
    return out


def output_sizes(adapter: FamilyAdapter, dims: TransformerDims, layout: Layout, tokens: Tokens) -> np.ndarray:
    """[blocks, components] elements of each component's output at batch 1; padding cells 0."""
    out = np.zeros((layout.num_blocks, layout.num_components), dtype=np.float64)
    per_group = {g: adapter.output_elements(dims, g, tokens) for g in layout.groups}
    for b, (group, _) in enumerate(layout.blocks()):
        out[b, : len(group.components)] = [per_group[group][c] for c in group.components]
    return out


def replace_dims(dims: TransformerDims, **changes) -> TransformerDims:
    return dataclasses.replace(dims, **changes)
