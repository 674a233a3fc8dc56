"""Input, baseline, target and argument formatting shared by every attribution class.

Captum accepts a tensor or a tuple of tensors as ``inputs`` and returns the same structure; the
helpers here turn both into a tuple and back, resolve baselines (names, numbers, tensors, tuples)
to one tensor per input on the inputs' device and dtype, and repeat per-example forward arguments
and targets over the points of an integration path.
"""

from __future__ import annotations

from typing import Any, List, Mapping, Sequence, Tuple, Union

import torch
from torch import Tensor

from captum_uncertainty._validation import check_choice

__all__ = [
    "BASELINE_NAMES",
    "SUPPORTED_BASELINE_NAMES",
    "BaselineType",
    "TargetType",
    "TensorOrTuple",
    "TensorsOrMapping",
    "additional_args_tuple",
    "format_baselines",
    "format_inputs",
    "format_output",
    "repeat_batch_args",
    "repeat_target",
    "rows_of_args",
    "rows_of_target",
]

TensorOrTuple = Union[Tensor, Tuple[Tensor, ...]]
#: Inputs of a method that also takes a tokenizer's output (a mapping of keyword inputs).
TensorsOrMapping = Union[Tensor, Tuple[Tensor, ...], Mapping[str, Any]]
TargetType = Union[None, int, Tuple[int, ...], Tensor, List[Any]]
BaselineType = Union[None, str, int, float, Tensor, Tuple[Union[int, float, Tensor], ...]]

#: The names the ``baselines`` argument of the path methods' ``attribute`` (read by
#: :func:`format_baselines`) accepts: zeros, ones, and the average of the two attributions
#: (Perez et al.'s "B+W").
SUPPORTED_BASELINE_NAMES = ("black", "white", "black_white")
#: Deprecated alias of :data:`SUPPORTED_BASELINE_NAMES`, kept for one release.
BASELINE_NAMES = SUPPORTED_BASELINE_NAMES


def format_inputs(inputs: Any, name: str = "inputs", floating: bool = True) -> Tuple[Tuple[Tensor, ...], bool]:
    """``(tuple_of_tensors, was_tuple)``: tensors with one common, non-empty batch size, floating
    point unless ``floating=False`` (token ids for layer methods)."""
    is_tuple = isinstance(inputs, tuple)
    tensors = inputs if is_tuple else (inputs,)
    if len(tensors) == 0:
        raise ValueError(f"{name} must be a tensor or a non-empty tuple of tensors")
    for tensor in tensors:
        if not isinstance(tensor, Tensor):
            raise TypeError(f"{name} must be a tensor or a tuple of tensors, got {type(tensor).__name__}")
        if floating and not tensor.is_floating_point():
            raise TypeError(f"{name} must be floating point tensors, got dtype {tensor.dtype}")
        if tensor.dim() < 1 or tensor.shape[0] == 0:
            raise ValueError(f"{name} must have a non-empty batch dimension, got shape {tuple(tensor.shape)}")
    batch = tensors[0].shape[0]
    if any(t.shape[0] != batch for t in tensors):
        raise ValueError(f"all {name} must have the same batch size, got {[t.shape[0] for t in tensors]}")
    for tensor in tensors[1:]:
        if tensor.device != tensors[0].device:
            raise ValueError(f"all {name} must be on one device, got {tensors[0].device} and {tensor.device}")
    return tuple(t.detach() for t in tensors), is_tuple


def format_output(values: Sequence[Tensor], is_tuple: bool) -> TensorOrTuple:
    """Return a tuple when the inputs were a tuple, else the single tensor."""
    return tuple(values) if is_tuple else values[0]


def format_baselines(baselines: BaselineType, inputs: Tuple[Tensor, ...]) -> List[Tuple[Tensor, ...]]:
    """The baseline sets, each one tensor per input of exactly that input's shape.

    ``None`` or ``"black"``: zeros; ``"white"``: ones; ``"black_white"``: two sets, zeros and
    ones, whose attributions the caller averages; a number; a tensor of the input's shape, or of
    one example's shape ``inputs.shape[1:]`` / ``(1, *inputs.shape[1:])`` shared by all
    examples; or a tuple with one of those per input. Tensors land on each input's device and
    dtype.
    """
    if baselines is None or isinstance(baselines, str):
        name = check_choice(
            "black" if baselines is None else baselines,
            "baselines",
            SUPPORTED_BASELINE_NAMES,
            extra="or a number or a tensor",
        )
        fills = {"black": (0.0,), "white": (1.0,), "black_white": (0.0, 1.0)}[name]
        return [tuple(torch.full_like(t, fill) for t in inputs) for fill in fills]
    items = baselines if isinstance(baselines, tuple) else (baselines,)
    if len(items) != len(inputs):
        raise ValueError(f"baselines must give one baseline per input ({len(inputs)}), got {len(items)}")
    return [tuple(_one_baseline(item, tensor) for item, tensor in zip(items, inputs))]


def _one_baseline(baseline: Any, tensor: Tensor) -> Tensor:
    """One input's baseline: a number, or a tensor of the input's or one example's shape."""
    if isinstance(baseline, (int, float)) and not isinstance(baseline, bool):
        return torch.full_like(tensor, float(baseline))
    if not isinstance(baseline, Tensor):
        raise TypeError(f"baselines must be None, a name, numbers or tensors, got {type(baseline).__name__}")
    if baseline.device != tensor.device:
        raise ValueError(f"baselines are on device {baseline.device} but the inputs are on {tensor.device}")
    baseline = baseline.detach().to(dtype=tensor.dtype)
    if baseline.shape == tensor.shape:
        return baseline
    if baseline.shape in (tensor.shape[1:], (1,) + tuple(tensor.shape[1:])):
        return baseline.reshape((1,) + tuple(tensor.shape[1:])).expand_as(tensor)
    if baseline.dim() == 0:
        return baseline.expand_as(tensor)
    raise ValueError(
        f"baselines must have the inputs' shape {tuple(tensor.shape)} or one example's shape "
        f"{tuple(tensor.shape[1:])}, got {tuple(baseline.shape)}"
    )


def additional_args_tuple(additional_forward_args: Any) -> Tuple[Any, ...]:
    """Captum's convention: ``None`` is no argument, a tuple is several, anything else is one."""
    if additional_forward_args is None:
        return ()
    return additional_forward_args if isinstance(additional_forward_args, tuple) else (additional_forward_args,)


def repeat_batch_args(args: Tuple[Any, ...], batch: int, repeats: int) -> Tuple[Any, ...]:
    """Repeat the per-example arguments (tensors whose first dimension is the batch size)
    ``repeats`` times along dim 0, step-major (block ``r`` is copy ``r``), as Captum expands them
    over path steps; other arguments are passed unchanged."""
    if repeats == 1:
        return args
    return tuple(
        arg.repeat((repeats,) + (1,) * (arg.dim() - 1))
        if isinstance(arg, Tensor) and arg.dim() > 0 and arg.shape[0] == batch
        else arg
        for arg in args
    )


def repeat_target(target: TargetType, batch: int, repeats: int) -> TargetType:
    """Repeat a per-example target like :func:`repeat_batch_args` (an int or a one-element
    target applies to every row and is kept)."""
    if repeats == 1 or target is None or isinstance(target, (int, tuple)):
        return target
    if isinstance(target, Tensor):
        return target if target.numel() == 1 else target.repeat((repeats,) + (1,) * (target.dim() - 1))
    if isinstance(target, list):
        return list(target) * repeats if len(target) == batch else target
    raise TypeError(f"target must be None, an int, a tuple, a tensor or a list, got {type(target).__name__}")


def rows_of_args(args: Tuple[Any, ...], batch: int, start: int, stop: int) -> Tuple[Any, ...]:
    """Rows ``start:stop`` of the per-example arguments (tensors whose first dimension is the
    batch size); other arguments are passed unchanged."""
    return tuple(
        arg[start:stop] if isinstance(arg, Tensor) and arg.dim() > 0 and arg.shape[0] == batch else arg for arg in args
    )


def rows_of_target(target: TargetType, batch: int, start: int, stop: int) -> TargetType:
    """Rows ``start:stop`` of a per-example target (a shared target is kept)."""
    if isinstance(target, Tensor) and target.numel() > 1 and target.shape[0] == batch:
        return target[start:stop]
    if isinstance(target, list) and len(target) == batch:
        return target[start:stop]
    return target
