"""The block paths check themselves against the stock block forward on real calls.

A block path re-expresses a diffusers block's arithmetic (to skip the work of reused components),
so it is only trusted where it has been seen to agree with the stock forward on the arguments the
transformer really passes. The first time a path runs for a given (family, block class, group,
argument names, dtype, device, mode), the stock forward runs beside it on the same arguments, with
the same cached outputs standing in for the reused components:

- exact mode must agree bit for bit;
- the fast path (fused multiply-adds) and a folded run of reused steps must agree within
  `TOLERANCE[dtype]` of the stock result's magnitude (they reorder float additions).

On a mismatch ecad warns once and uses the stock forward for that key from then on: results stay
correct, only slower. A diffusers release that changed a block, or a call argument the path does
not read (an attention mask, say), is caught on the first call that uses it.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import nn

from ecad.layouts import BlockGroup
from ecad.models import FamilyAdapter

logger = logging.getLogger(__name__)

# max |path - stock| allowed, relative to max(1, max |stock|), for the fast path and the fold
TOLERANCE = {torch.float32: 1e-4, torch.float64: 1e-9, torch.float16: 1e-2, torch.bfloat16: 4e-2}
VERDICTS: dict[tuple, bool] = {}  # check key -> whether the path agreed


def check_key(adapter: FamilyAdapter, block: nn.Module, group: BlockGroup, kwargs: dict, mode: str) -> tuple:
    """Everything a verdict holds for: a block of the same class and configuration, called with the
    same arguments, in the same dtype, on the same kind of device."""
    hidden = kwargs.get("hidden_states")
    present = tuple(sorted(k for k, v in kwargs.items() if v is not None))
    dtype = hidden.dtype if torch.is_tensor(hidden) else None
    device = hidden.device.type if torch.is_tensor(hidden) else None
    return adapter.family, type(block), group.components, present, dtype, device, mode


def stock_with_outputs(
    adapter: FamilyAdapter, block: nn.Module, group: BlockGroup, kwargs: dict, outputs: dict[str, Any]
) -> Any:
    """The stock block forward with each reused component returning its cached output (reuse by
    hand); the computed components run as they are."""
    modules = {name: m for name, m in adapter.component_modules(block, group).items() if name in outputs}
    saved = {name: m.__dict__.get("forward") for name, m in modules.items()}
    try:
        for name, m in modules.items():
            m.forward = lambda *a, _out=outputs[name], **k: _out
        return type(block).forward(block, **kwargs)
    finally:
        for name, m in modules.items():
            if saved[name] is None:
                del m.forward
            else:
                m.forward = saved[name]


def agrees(out: Any, reference: Any, exact: bool) -> bool:
    a, b = _tensors(out), _tensors(reference)
    if len(a) != len(b):
        return False
    for x, y in zip(a, b):
        if x is None or y is None:
            if x is not y:
                return False
        elif exact:
            if not torch.equal(x, y):
                return False
        elif x.shape != y.shape or not _close(x, y):
            return False
    return True


def _close(x: torch.Tensor, y: torch.Tensor) -> bool:
    tol = TOLERANCE.get(y.dtype, 1e-2)
    scale = max(1.0, float(y.float().abs().max())) if y.numel() else 1.0
    return bool(((x.float() - y.float()).abs().max() <= tol * scale).item()) if y.numel() else True


def _tensors(x: Any) -> tuple:
    return (x,) if x is None or torch.is_tensor(x) else tuple(x)


def record(key: tuple, ok: bool, what: str) -> bool:
    VERDICTS[key] = ok
    if not ok:
        _, cls, _, present, dtype, device, mode = key[:7]
        classes = key[7] if len(key) > 7 else (cls,)  # a fold's key carries every block's class
        logger.warning(
            "%s differs from ecad's %s %s on a real call (arguments %s, %s on %s); those blocks run the stock "
            "forward from now on (correct, slower)",
            "/".join(f"{c.__name__}.forward" for c in dict.fromkeys(classes)),
            key[0],
            what if mode == "fold" else f"block path ({mode})",
            ", ".join(present),
            str(dtype).replace("torch.", ""),
            device,
        )
    return ok
