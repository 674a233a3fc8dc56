"""The one home for temporary module hooks: registered through a HookSet, always removed."""

from __future__ import annotations

from typing import Any, Dict, List

import pytest
import torch
from torch import nn

from captum_uncertainty._hooks import HookSet, temporary_hooks


def _linear() -> nn.Linear:
    torch.manual_seed(0)
    return nn.Linear(3, 2)


class _FakeHandle:
    def __init__(self, name: str, log: List[str]) -> None:
        self.name, self.log = name, log

    def remove(self) -> None:
        self.log.append(self.name)


class _FakeModule:
    """Stands in for an ``nn.Module``: hands out handles that log their removal, keeps the kwargs."""

    def __init__(self, log: List[str]) -> None:
        self.log = log
        self.kwargs: List[Dict[str, Any]] = []

    def register_forward_hook(self, hook: Any, **kwargs: Any) -> _FakeHandle:
        self.kwargs.append(kwargs)
        return _FakeHandle(f"forward {hook}", self.log)

    def register_forward_pre_hook(self, hook: Any, **kwargs: Any) -> _FakeHandle:
        self.kwargs.append(kwargs)
        return _FakeHandle(f"pre {hook}", self.log)


def test_a_hook_fires_inside_the_block_and_is_gone_after():
    layer, x = _linear(), torch.randn(4, 3)
    plain = layer(x)
    calls = []
    with temporary_hooks() as hooks:
        hooks.forward_pre(layer, lambda module, args: calls.append("pre"))
        hooks.forward(layer, lambda module, args, output: output * 2)
        assert len(layer._forward_hooks) == 1 and len(layer._forward_pre_hooks) == 1
        torch.testing.assert_close(layer(x), 2 * plain)
        assert calls == ["pre"]
    assert not layer._forward_hooks and not layer._forward_pre_hooks
    torch.testing.assert_close(layer(x), plain)
    assert calls == ["pre"]
    assert len(hooks) == 0


def test_every_hook_is_removed_when_the_block_raises():
    layers = [_linear(), _linear()]
    with pytest.raises(RuntimeError, match="inside"):
        with temporary_hooks() as hooks:
            for layer in layers:
                hooks.forward_pre(layer, lambda module, args: None)
                hooks.forward(layer, lambda module, args, output: None)
            assert len(hooks) == 4
            raise RuntimeError("inside")
    for layer in layers:
        assert not layer._forward_hooks and not layer._forward_pre_hooks


def test_hooks_registered_before_a_failing_registration_are_removed():
    layer = _linear()

    class Refusing(nn.Module):
        def register_forward_hook(self, *args: Any, **kwargs: Any) -> Any:
            raise RuntimeError("refused")

    with pytest.raises(RuntimeError, match="refused"):
        with temporary_hooks() as hooks:
            hooks.forward(layer, lambda module, args, output: None)
            hooks.forward(Refusing(), lambda module, args, output: None)
    assert not layer._forward_hooks
    assert len(hooks) == 0


def test_with_kwargs_reaches_the_pre_hook_registration():
    layer, x = _linear(), torch.randn(4, 3)
    seen = []

    def pre(module: nn.Module, args: Any, kwargs: Dict[str, Any]) -> None:
        seen.append(dict(kwargs))

    with temporary_hooks() as hooks:
        hooks.forward_pre(layer, pre, with_kwargs=True)  # without it the hook would get two arguments
        layer(x)
    assert seen == [{}]
    assert not layer._forward_pre_hooks

    fake = _FakeModule([])
    with temporary_hooks() as hooks:
        hooks.forward_pre(fake, "p", with_kwargs=True)
        hooks.forward(fake, "f", with_kwargs=True, always_call=True)
    assert fake.kwargs == [{"with_kwargs": True}, {"with_kwargs": True, "always_call": True}]


def test_remove_goes_last_registered_first_and_is_idempotent():
    log: List[str] = []
    fake = _FakeModule(log)
    hooks = HookSet()
    hooks.forward(fake, "a")
    hooks.forward_pre(fake, "b")
    hooks.forward(fake, "c")
    hooks.remove()
    assert log == ["forward c", "pre b", "forward a"]
    hooks.remove()
    assert log == ["forward c", "pre b", "forward a"]
    assert len(hooks) == 0


def test_the_block_removes_last_registered_first():
    log: List[str] = []
    fake = _FakeModule(log)
    with temporary_hooks() as hooks:
        hooks.forward_pre(fake, "pre")
        hooks.forward(fake, "post")
        assert log == []
    assert log == ["forward post", "pre pre"]


def test_len_counts_the_live_hooks():
    layer = _linear()
    hooks = HookSet()
    assert len(hooks) == 0
    hooks.forward(layer, lambda module, args, output: None)
    assert len(hooks) == 1
    hooks.forward_pre(layer, lambda module, args: None)
    assert len(hooks) == 2
    hooks.remove()
    assert len(hooks) == 0
    assert not layer._forward_hooks and not layer._forward_pre_hooks
    hooks.forward(layer, lambda module, args, output: None)
    assert len(hooks) == 1
    hooks.remove()
    assert not layer._forward_hooks
