"""Input gradients and FullGrad bias-gradient terms from one backward pass.

FullGrad (Srinivas & Fleuret, 2019) writes a ReLU network's output as
``f(x) = <df/dx, x> + sum_l <df/db_l, b_l>``: the input term plus one term per layer bias, where
``df/db_l`` is the gradient with respect to the layer's *output* multiplied by its (broadcast)
bias. Batch normalisation in eval mode is an affine map with the implicit bias
``beta - running_mean * gamma / sqrt(running_var + eps)``. The bias terms are read from the same
backward pass as the input gradient: forward hooks keep each biased layer's output, and
``torch.autograd.grad`` differentiates with respect to the input and those outputs together.
"""

from __future__ import annotations

from contextlib import contextmanager, nullcontext
from typing import Iterator, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from captum_uncertainty._hooks import temporary_hooks

__all__ = [
    "LayerOutput",
    "LayerRecords",
    "captured_layer_outputs",
    "check_layers_ran",
    "check_record_rows",
    "class_gradient_chunks",
    "fullgrad_relevances",
    "fullgrad_saliency",
    "unseen_bias_layers",
]

_BIASED_LAYERS = (
    nn.Conv1d,
    nn.Conv2d,
    nn.Conv3d,
    nn.ConvTranspose1d,
    nn.ConvTranspose2d,
    nn.ConvTranspose3d,
    nn.Linear,
    nn.modules.batchnorm._BatchNorm,
)


def _implicit_bias(module: nn.Module) -> Optional[Tensor]:
    """The additive bias of a conv / linear layer, or a BatchNorm layer's implicit bias."""
    if isinstance(module, nn.modules.batchnorm._BatchNorm):
        if module.training or module.running_mean is None or module.running_var is None:
            return None  # batch statistics: not an affine map of one input
        scale = torch.rsqrt(module.running_var + module.eps)
        if module.weight is not None:
            scale = scale * module.weight
        bias = -module.running_mean * scale
        return bias + module.bias if module.bias is not None else bias
    return getattr(module, "bias", None)


class LayerOutput:
    """A biased layer's output during one forward, with the rows' sample layout."""

    def __init__(self, module: nn.Module, output: Tensor, sample: Optional[int], bias: Tensor) -> None:
        self.module = module
        self.output = output
        self.sample = sample
        self.bias = bias  # read while the layer ran (BatchNorm's depends on its mode)

    def bias_term(self, gradient: Tensor) -> Tensor:
        """``gradient * bias`` broadcast over the layer's channel dimension.

        ``gradient`` is shaped like the output, optionally with leading extra dimensions (e.g. the
        classes of a batched backward pass); the channel dimension is the output's dim 1.
        """
        bias = self.bias
        channel_dim = gradient.dim() - self.output.dim() + 1
        shape = (1,) * channel_dim + (-1,) + (1,) * (gradient.dim() - channel_dim - 1)
        return gradient * bias.detach().to(gradient.dtype).view(shape)


class LayerRecords(List[LayerOutput]):
    """The records of one forward, and how many layers were hooked."""

    hooked: int = 0


#: How many of the layers FullGrad cannot see its refusal names (the count names them all).
_UNSEEN_LAYERS_NAMED = 3


def unseen_bias_layers(modules: Sequence[nn.Module]) -> List[Tuple[str, nn.Module]]:
    """Layers carrying a bias-like parameter that FullGrad's hooks do not cover (named by path).

    FullGrad's bias terms are read from convolution, linear and BatchNorm layers; any other
    layer with its own parameter named ``*bias*`` (LayerNorm, GroupNorm, recurrent layers,
    bayesian-torch's ``mu_bias``) would be missing from the map.
    """
    unseen = []
    for index, root in enumerate(modules):
        for name, module in root.named_modules():
            if isinstance(module, _BIASED_LAYERS):
                continue
            own = [p for p, value in module.named_parameters(recurse=False) if "bias" in p and value is not None]
            if own:
                where = f"modules[{index}]" + (f".{name}" if name else "")
                unseen.append((f"{where} ({type(module).__name__}: {', '.join(own)})", module))
    return unseen


def _unseen_bias_message(unseen: Sequence[Tuple[str, nn.Module]]) -> str:
    """A few lines: the first unseen layers and their count, the paths that work, then a
    conversion hint only for the layers it helps (bayesian-torch's)."""
    named = "; ".join(name for name, _ in unseen[:_UNSEEN_LAYERS_NAMED])
    more = f" and {len(unseen) - _UNSEEN_LAYERS_NAMED} more" if len(unseen) > _UNSEEN_LAYERS_NAMED else ""
    message = (
        f"FullGrad reads Conv, Linear and BatchNorm biases; {len(unseen)} layer(s) carry biases it cannot "
        f"attribute: {named}{more}.\n"
        "UABackprop's path='inputgrad' (what path='auto' picks here), 'grad', 'integrated_gradients' or "
        "'blur_integrated_gradients' work on any layers."
    )
    if any(type(module).__module__.startswith("bayesian_torch") for _, module in unseen):
        message += (
            "\nFor bayesian-torch layers, captum_uncertainty.integrations.from_bayesian_torch samples plain "
            "Conv/Linear layers that FullGrad reads."
        )
    return message


@contextmanager
def captured_layer_outputs(
    modules: Sequence[nn.Module], posterior: Optional[object] = None, spatial_only: bool = False
) -> Iterator[LayerRecords]:
    """Record the outputs of every biased layer of ``modules`` while the block runs.

    Each record notes ``posterior.current_sample`` (which sample the rows belong to; ``None``
    means all samples stacked sample-major). Hooks are removed on exit, also after an error.
    A layer carrying a bias the hooks cannot read raises ``ValueError`` naming it (a map
    without those bias terms would be silently incomplete).
    """
    unseen = unseen_bias_layers(modules)
    if unseen:
        raise ValueError(_unseen_bias_message(unseen))
    records = LayerRecords()

    def hook(module: nn.Module, _inputs: object, output: Tensor) -> None:
        # the bias is checked when the layer runs: posteriors switch modules to eval mode
        # inside their call, after the hooks were registered
        bias = _implicit_bias(module) if isinstance(output, Tensor) and output.requires_grad else None
        if bias is not None:
            sample = getattr(posterior, "current_sample", None) if posterior is not None else None
            records.append(LayerOutput(module, output, sample, bias.detach()))

    with temporary_hooks() as hooks:
        seen = set()
        for root in modules:
            for module in root.modules():
                if id(module) in seen or not isinstance(module, _BIASED_LAYERS):
                    continue
                seen.add(id(module))
                if getattr(module, "bias", None) is None and not isinstance(module, nn.modules.batchnorm._BatchNorm):
                    continue
                if spatial_only and isinstance(module, nn.Linear):
                    continue
                hooks.forward(module, hook)
        records.hooked = len(hooks)
        # the hooks expect the posterior's row layout (S x N sample-major for MC dropout)
        hookable = getattr(posterior, "hookable", None)
        with hookable() if callable(hookable) else nullcontext():
            yield records


def _row_range(maps: Tensor) -> Tuple[Tensor, Tensor]:
    """Per-row minimum and (positive) max - min, each ``(B, 1)``.

    ``amin`` and ``amax`` separately: on CPU, ``torch.aminmax`` over a row took ten times their sum.
    """
    rows = maps.flatten(1)
    low, high = rows.amin(1, keepdim=True), rows.amax(1, keepdim=True)
    return low, (high - low).clamp_min(torch.finfo(maps.dtype).tiny)


def _normalized_channel_sum(term: Tensor, nonnegative: bool = False) -> Tensor:
    """``min_max(|term|).sum(1, keepdim=True)`` without normalising every element.

    The channel sum of ``(|t| - low) / span`` is ``(sum_c |t| - channels * low) / span``, so only
    the ``(B, 1, H, W)`` channel sum is rescaled. ``nonnegative=True`` skips the absolute value
    of a term that is one already.
    """
    magnitude = term if nonnegative else term.abs()
    low, span = _row_range(magnitude)
    view = (-1,) + (1,) * (term.dim() - 1)
    return (magnitude.sum(1, keepdim=True) - term.shape[1] * low.view(view)) / span.view(view)


def fullgrad_saliency(input_term: Tensor, bias_terms: Sequence[Tensor], size: Tuple[int, int]) -> Tensor:
    """FullGrad's saliency map ``(B, 1, H, W)`` from raw terms.

    Each term (the input term and every spatial bias term) is post-processed as in Srinivas &
    Fleuret's reference: absolute value, min-max normalisation per row, sum over channels, and
    bilinear resizing to the input's spatial ``size``; the maps are then added. Non-spatial
    terms (linear layers) have no location and are left out of the map, as in the reference.
    """
    saliency = _normalized_channel_sum(input_term)
    for term in bias_terms:
        if term.dim() != 4:
            continue
        layer_map = _normalized_channel_sum(term)
        saliency = saliency + F.interpolate(layer_map, size=size, mode="bilinear", align_corners=False)
    return saliency


def _magnitudes(gradients: Sequence[Tensor]) -> List[Tensor]:
    """``|g|`` of each gradient, in place where the tensor is this chunk's alone.

    A backward pass can hand one tensor to several layers (a residual sum passes its gradient
    unchanged to both branches, e.g. ResNet's ``bn2`` and ``downsample`` BatchNorms), so a
    gradient is overwritten only when no other gradient shares its storage; the others get a
    new tensor. Saves one allocation per layer and class, which dominated FullGrad's overhead.
    """
    storages = [g.untyped_storage().data_ptr() for g in gradients]
    return [
        g.abs_() if g.is_contiguous() and storages.count(pointer) == 1 else g.abs()
        for g, pointer in zip(gradients, storages)
    ]


def _bias_weighted_channel_sum(magnitude: Tensor, bias: Tensor) -> Tensor:
    """``sum_c |dz/dh_c| |b_c|`` of a ``(k, rows, C_l, h, w)`` magnitude: ``(k * rows, 1, h, w)``.

    One batched ``(1, C_l) @ (C_l, h w)`` product per row, reading the gradient in its own
    layout (an ``einsum`` over ``c`` first copied it channel-last).
    """
    k, rows, channels, height, width = magnitude.shape
    flat = magnitude.reshape(k * rows, channels, height * width)
    return torch.matmul(bias.view(1, 1, channels), flat).view(k * rows, 1, height, width)


def fullgrad_relevances(
    input_term: Tensor,
    records: Sequence[LayerOutput],
    gradients: Sequence[Tensor],
    postprocess: str,
    first_sample: int = 0,
) -> Tensor:
    """The FullGrad relevance ``M_i^s`` of every class of a chunk, sample and input, before psi.

    ``input_term`` is ``dz/dx * x`` shaped ``(k, S, N, C, H, W)``; ``gradients[t]`` is the
    gradient of the chunk's ``k`` logits with respect to ``records[t]``'s output, ``(k, rows,
    C_l, h, w)`` with one sample's ``N`` rows or all ``S * N`` sample-major rows (the gradients
    are consumed: they may be overwritten). Each spatial bias term ``|dz/dh_l * b_l|`` becomes
    one map per row and is resized bilinearly to ``(H, W)``; the maps are added into their own
    sample's slot (``record.sample - first_sample``: a chunk of one sample's backward passes holds
    ``S = 1`` slots), so no layer has to be matched across samples and no term is copied:

    * ``"raw"`` (Eq. 10 as written): ``|input term| + sum_l sum_c |dz/dh_{l,c}| |b_{l,c}|``
      (the bias maps added to every input channel), one contraction per layer;
    * ``"reference"`` (FullGrad's reference code): each term's absolute value min-max normalised
      per row and summed over channels, then added; ``(k, S, N, 1, H, W)``.
    """
    k, samples, batch = input_term.shape[:3]
    size = tuple(input_term.shape[-2:])
    if postprocess == "raw":
        total = input_term.abs()
    else:
        total = _normalized_channel_sum(input_term.flatten(0, 2)).view((k, samples, batch, 1) + size)
    spatial = [(record, g) for record, g in zip(records, gradients) if record.output.dim() == 4]
    magnitudes = _magnitudes([g for _, g in spatial])  # no location: left out of the map, as in the reference
    layers = torch.zeros((k, samples, batch, 1) + size, dtype=input_term.dtype, device=input_term.device)
    for (record, gradient), magnitude in zip(spatial, magnitudes):
        bias = record.bias.detach().to(gradient.dtype).abs()
        rows = gradient.shape[1]
        if postprocess == "raw":
            maps = _bias_weighted_channel_sum(magnitude, bias)
        else:
            maps = _normalized_channel_sum(magnitude.mul_(bias.view(-1, 1, 1)).flatten(0, 1), nonnegative=True)
        maps = F.interpolate(maps, size=size, mode="bilinear", align_corners=False).view((k, rows, 1) + size)
        if record.sample is None:
            layers += maps.view((k, samples, batch, 1) + size)
        else:
            layers[:, record.sample - first_sample] += maps
    return total + layers


def check_record_rows(records: LayerRecords, batch: int, num_samples: int) -> None:
    """Each hooked layer call must hold one sample's ``N`` rows, or all ``S * N`` sample-major rows.

    Posteriors that run their modules per sample (:class:`DeepEnsemble`, :class:`WeightSamples`)
    or as one sample-major batch (:class:`MCDropout`) satisfy this; opaque callables may not.
    """
    check_layers_ran(records)
    for record in records:
        expected = batch if record.sample is not None else batch * num_samples
        if record.output.shape[0] != expected:
            raise ValueError(
                f"path='fullgrad' hooks the posterior's layers, but a {type(record.module).__name__} layer saw "
                f"{record.output.shape[0]} rows where {expected} were expected (N = {batch}, S = {num_samples}); "
                "FullGrad bias terms need a DeepEnsemble, WeightSamples or MCDropout posterior: use "
                "path='inputgrad', 'grad' or 'integrated_gradients' for this posterior"
            )


def check_layers_ran(records: LayerRecords) -> None:
    """Hooked layers that never ran mean the forward used other modules: no bias term would be read."""
    if not records and records.hooked:
        raise ValueError(
            f"FullGrad hooked {records.hooked} biased layers of the posterior's modules, but none of them ran: "
            "the posterior runs other modules than those it lists (e.g. a deep copy of the model, as laplace-torch "
            "does), so the map would lack every bias term. Use a posterior that runs the listed modules (e.g. "
            "captum_uncertainty.integrations.from_laplace), or path='inputgrad', 'grad' or 'integrated_gradients'"
        )


def class_gradient_chunks(
    outputs: Tensor, wrt: Sequence[Tensor], classes_per_pass: Optional[int] = None, keep_graph: bool = False
) -> Iterator[Tuple[int, int, List[Tensor]]]:
    """Vector-Jacobian products of ``outputs`` (``(..., C)``) with every one-hot class vector.

    Yields ``(start, stop, gradients)`` for consecutive class chunks, where ``gradients[t]`` is
    ``(stop - start, *wrt[t].shape)``: the gradient of ``outputs[..., i].sum()`` with respect to
    ``wrt[t]`` for ``i`` in ``[start, stop)`` (zeros where ``wrt[t]`` is unused). Every chunk is
    ONE backward pass over all rows of ``outputs`` at once: a chunk of one class is a plain
    backward, a larger chunk uses ``torch.autograd.grad(..., is_grads_batched=True)`` with the
    chunk's one-hot vectors. ``classes_per_pass=None`` puts all ``C`` classes in one pass. The
    graph is freed by the last pass unless ``keep_graph`` (more backward passes follow).
    """
    num_classes = outputs.shape[-1]
    step = num_classes if classes_per_pass is None else min(classes_per_pass, num_classes)
    eye = torch.eye(num_classes, dtype=outputs.dtype, device=outputs.device)
    for start in range(0, num_classes, step):
        stop = min(start + step, num_classes)
        retain = keep_graph or stop < num_classes
        if stop - start == 1:
            grads = torch.autograd.grad(outputs[..., start].sum(), wrt, retain_graph=retain, allow_unused=True)
            grads = tuple(None if g is None else g.unsqueeze(0) for g in grads)
        else:
            one_hot = eye[start:stop].view((stop - start,) + (1,) * (outputs.dim() - 1) + (num_classes,))
            grads = torch.autograd.grad(
                outputs,
                wrt,
                grad_outputs=one_hot.expand((stop - start,) + tuple(outputs.shape)),
                retain_graph=retain,
                allow_unused=True,
                is_grads_batched=True,
            )
        filled = [
            g if g is not None else torch.zeros((stop - start,) + tuple(t.shape), dtype=t.dtype, device=t.device)
            for g, t in zip(grads, wrt)
        ]
        yield start, stop, filled
