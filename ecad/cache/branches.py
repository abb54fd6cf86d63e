"""The guidance branch of a transformer call: the name of diffusers' cache context, if any.

Pipelines that run classifier-free guidance as two transformer calls per step (FLUX with
true CFG, Wan) wrap each in `transformer.cache_context("cond")` / `("uncond")`; diffusers sets
that name on every stateful hook's StateManager. Every ecad hook that keeps per-branch state
(the schedule's step counts and caches, the text K/V cache) reads it here.
"""

from __future__ import annotations

from diffusers.hooks import HookRegistry, ModelHook
from diffusers.hooks.hooks import BaseState, StateManager
from torch import nn

DEFAULT_BRANCH = "default"  # calls made outside any cache context

__all__ = ["DEFAULT_BRANCH", "CacheContextListener", "listen_for_branches"]


class _ContextReceiver(BaseState):
    """Nothing to keep: the step hook's StateManager only receives diffusers' cache context."""

    def reset(self, *args, **kwargs) -> None:
        pass


class CacheContextListener(ModelHook):
    """Knows the guidance branch of the current call: diffusers' `cache_context(name)` sets the
    caller's context on every stateful hook's StateManager, this one's included. Register one
    (`listen_for_branches`) to count steps per branch outside ecad's own hooks."""

    _is_stateful = True

    def __init__(self):
        super().__init__()
        self.context = StateManager(_ContextReceiver)

    def branch(self) -> str:
        try:
            return self.context.context.name
        except ValueError:  # no cache context set
            return DEFAULT_BRANCH

    def reset_state(self, module: nn.Module) -> nn.Module:
        return module


def listen_for_branches(transformer: nn.Module, name: str) -> CacheContextListener:
    listener = CacheContextListener()
    HookRegistry.check_if_exists_or_initialize(transformer).register_hook(listener, name)
    return listener
