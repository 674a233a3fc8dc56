"""The one place that registers PyTorch module hooks for a while and removes them again.

:func:`temporary_hooks` gives a :class:`HookSet`; every forward or forward pre-hook registered
through it is removed when the block ends, also when the block raises and when registering one
of the hooks raised. Hooks are removed last registered first.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Callable, Iterator, List

from torch import nn
from torch.utils.hooks import RemovableHandle

__all__ = ["temporary_hooks", "HookSet"]


class HookSet:
    """Hooks registered through it, removed together by remove() (last registered first)."""

    def __init__(self) -> None:
        self._handles: List[RemovableHandle] = []

    def forward(self, module: nn.Module, hook: Callable[..., Any], **kwargs: Any) -> None:
        """``module.register_forward_hook(hook, **kwargs)``, removed with the others."""
        self._handles.append(module.register_forward_hook(hook, **kwargs))

    def forward_pre(self, module: nn.Module, hook: Callable[..., Any], **kwargs: Any) -> None:
        """``module.register_forward_pre_hook(hook, **kwargs)``, removed with the others."""
        self._handles.append(module.register_forward_pre_hook(hook, **kwargs))

    def __len__(self) -> int:
        """The hooks registered and not yet removed."""
        return len(self._handles)

    def remove(self) -> None:
        """Removes every hook, last registered first; calling it again does nothing."""
        while self._handles:
            self._handles.pop().remove()


@contextmanager
def temporary_hooks() -> Iterator[HookSet]:
    """A HookSet whose hooks are all removed when the block ends, also when it raises (and when
    registering one of them raised)."""
    hooks = HookSet()
    try:
        yield hooks
    finally:
        hooks.remove()
