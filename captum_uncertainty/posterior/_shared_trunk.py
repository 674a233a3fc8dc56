"""Running the part of the network that posterior samples share once.

Samples that are copies of one architecture and differ only in some layers (last-layer Laplace's
weight samples, heads trained on one frozen backbone) compute the same values up to the first
layer that differs. :func:`differing_layers` finds those layers from the weights, and
:func:`run_shared` runs sample 0's module on the ``N`` inputs with hooks on them: the first one
reached repeats its ``N`` input rows once per sample (sample-major, as the unshared run lays them
out), and every differing layer computes block ``s`` of its rows with sample ``s``'s own layer.
Layers that do not differ see ``S * N`` rows and are the same for every block, so the result
equals running each sample on its own, and the backward pass goes through the shared part once.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from captum_uncertainty._hooks import temporary_hooks
from captum_uncertainty.posterior._utils import batch_size_of, check_member_output

__all__ = [
    "SHARE_TRUNK_CHOICES",
    "SharedTrunk",
    "check_share_trunk",
    "differing_layers",
    "input_layout",
    "run_shared",
    "shared_run_agrees",
]

#: The values of ``share_trunk`` (:class:`~captum_uncertainty.MCDropout`,
#: :class:`~captum_uncertainty.DeepEnsemble`).
SHARE_TRUNK_CHOICES = (True, False, "auto")


def check_share_trunk(value: Any) -> Any:
    if not any(value is choice or (isinstance(value, str) and value == choice) for choice in SHARE_TRUNK_CHOICES):
        raise ValueError(f"share_trunk must be True, False or 'auto', got {value!r}")
    return value


def _own_tensors(module: nn.Module) -> List[Tensor]:
    return list(module.parameters(recurse=False)) + list(module.buffers(recurse=False))


def _weights_version(members: Sequence[nn.Module]) -> Tuple[Any, ...]:
    """Changes whenever a weight of a member is replaced or modified in place."""
    return tuple((id(t), t._version) for member in members for t in member.parameters()) + tuple(
        (id(t), t._version) for member in members for t in member.buffers()
    )


def differing_layers(members: Sequence[nn.Module]) -> Optional[List[str]]:
    """Names of the modules (in ``members[0]``) whose own parameters or buffers differ between
    the members, or ``None`` when running them as one is not possible or gains nothing: members
    of different architectures, a differing module that has submodules, or every module with
    weights differing (independently trained members share nothing)."""
    named = [dict(member.named_modules()) for member in members]
    if any(list(names) != list(named[0]) for names in named[1:]):
        return None
    differing, weighted = [], 0
    for name, module in named[0].items():
        own = _own_tensors(module)
        if not own:
            continue
        weighted += 1
        others = [_own_tensors(names[name]) for names in named[1:]]
        if any(len(theirs) != len(own) for theirs in others):
            return None
        same = all(
            a is b or (a.shape == b.shape and a.dtype == b.dtype and torch.equal(a, b))
            for theirs in others
            for a, b in zip(own, theirs)
        )
        if not same:
            if any(True for _ in module.children()):
                return None
            differing.append(name)
    if not differing or len(differing) == weighted:
        return None
    return differing


def input_layout(inputs: Tuple[Any, ...]) -> Tuple[Any, ...]:
    """What a shared run's agreement is checked for: each input's shape beside the batch, dtype
    and device (the batch size itself does not change how rows are grouped)."""
    return tuple((tuple(x.shape[1:]), x.dtype, x.device) if isinstance(x, Tensor) else type(x) for x in inputs)


def shared_run_agrees(plain: Callable[[], Tensor], shared: Callable[[], Tensor]) -> bool:
    """The shared run gives the unshared run's outputs (within 1e-5) and does not fail; both run
    without gradients in a forked random state."""
    with torch.no_grad(), torch.random.fork_rng(devices=[]):
        expected = plain()
        try:
            found = shared()
        except (RuntimeError, ValueError, IndexError, TypeError):
            return False
    return found.shape == expected.shape and bool(torch.allclose(found, expected, rtol=1e-5, atol=1e-5))


class SharedTrunk:
    """The differing layers of ``members``, recomputed when a weight changes."""

    def __init__(self) -> None:
        self._version: Optional[Tuple[Any, ...]] = None
        self._layers: Optional[List[str]] = None

    def layers(self, members: Sequence[nn.Module]) -> Optional[List[str]]:
        version = _weights_version(members)
        if version != self._version:
            self._layers, self._version = differing_layers(members), version
        return self._layers


def run_shared(
    members: Sequence[nn.Module], layers: Sequence[str], inputs: Tuple[Any, ...], reader: Callable[[Any], Any]
) -> Tensor:
    """All members on the same ``inputs``, ``(S, N, C)``, through the shared part once.

    ``members[0]`` runs with hooks on its ``layers`` (:func:`differing_layers`); the hooks are
    removed afterwards, also when the run raises. A differing layer that meets a number of rows
    other than ``N`` (before the repeat) or ``S * N`` (after it) raises ``ValueError``: the model
    regroups its rows, and the caller runs the members one by one instead.
    """
    count, batch = len(members), batch_size_of(inputs)
    modules = [dict(member.named_modules()) for member in members]
    state: Dict[str, Any] = {"repeated": False}
    with temporary_hooks() as hooks:
        for name in layers:
            own = modules[0][name]
            counterparts = [names[name] for names in modules]
            hooks.forward_pre(own, _first_block(state, count, batch), with_kwargs=True)
            hooks.forward(own, _other_blocks(state, counterparts, batch), with_kwargs=True)
        output = members[0](*inputs)
    read = reader(output)
    if isinstance(read, Tensor) and read.dim() > 0 and read.shape[0] == batch and not state["repeated"]:
        read = read.repeat(count, *([1] * (read.dim() - 1)))  # no differing layer ran: all samples alike
    return check_member_output(read, 0, count * batch).reshape(count, batch, -1)


def _first_block(state: Dict[str, Any], count: int, batch: int) -> Callable[..., Any]:
    """Pre-hook: keeps the layer's full ``S * N`` rows for the post-hook and lets the layer itself
    (sample 0's) compute the first block only; the first differing layer reached repeats the
    trunk's ``N`` rows first."""

    def hook(_module: nn.Module, args: Tuple[Any, ...], kwargs: Dict[str, Any]) -> Any:
        if not args or not isinstance(args[0], Tensor):
            raise ValueError("a differing layer takes no tensor as its first input")
        rows = args[0]
        if not state["repeated"] and rows.shape[0] == batch:
            rows = rows.repeat(count, *([1] * (rows.dim() - 1)))
            state["repeated"] = True
        if rows.shape[0] != count * batch:
            raise ValueError(f"a differing layer met {rows.shape[0]} rows, expected {count * batch}")
        state["rows"], state["rest"], state["kwargs"] = rows, args[1:], kwargs
        return (rows[:batch],) + tuple(args[1:]), kwargs

    return hook


def _other_blocks(state: Dict[str, Any], counterparts: Sequence[nn.Module], batch: int) -> Callable[..., Any]:
    """Post-hook: appends blocks ``1..S-1``, each computed by that sample's own layer."""

    def hook(_module: nn.Module, _args: Any, _kwargs: Any, output: Any) -> Tensor:
        if not isinstance(output, Tensor):
            raise ValueError("a differing layer returns no tensor")
        rows, rest, kwargs = state["rows"], state["rest"], state["kwargs"]
        blocks = [output] + [
            layer(rows[s * batch : (s + 1) * batch], *rest, **kwargs) for s, layer in enumerate(counterparts) if s
        ]
        return torch.cat(blocks)

    return hook
