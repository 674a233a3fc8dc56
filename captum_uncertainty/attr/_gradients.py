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

from contextlib import contextmanager
from typing import Iterator, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

BIASED_LAYERS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear, nn.modules.batchnorm._BatchNorm)


def implicit_bias(module: nn.Module) -> Optional[Tensor]:
    """The additive bias of a conv / linear layer, or a BatchNorm layer's implicit bias."""
    if isinstance(module, nn.modules.batchnorm._BatchNorm):
        if module.training or module.running_mean is None:
            return None  # batch statistics: not an affine map of one input
        scale = torch.rsqrt(module.running_var + module.eps)
        if module.weight is not None:
            scale = scale * module.weight
        bias = -module.running_mean * scale
        return bias + module.bias if module.bias is not None else bias
    return getattr(module, "bias", None)


class LayerOutput:
    """A biased layer's output during one forward, with the rows' sample layout."""

    def __init__(self, module: nn.Module, output: Tensor, sample: Optional[int]) -> None:
        self.module = module
        self.output = output
        self.sample = sample

    def bias_term(self, gradient: Tensor) -> Tensor:
        """``gradient * bias`` broadcast over the channel dimension (dim 1)."""
        bias = implicit_bias(self.module)
        shape = (1, -1) + (1,) * (gradient.dim() - 2)
        return gradient * bias.detach().to(gradient.dtype).view(shape)


@contextmanager
def captured_layer_outputs(
    modules: Sequence[nn.Module], posterior: Optional[object] = None, spatial_only: bool = False
) -> Iterator[List[LayerOutput]]:
    """Record the outputs of every biased layer of ``modules`` while the block runs.

    Each record notes ``posterior.current_sample`` (which sample the rows belong to; ``None``
    means all samples stacked sample-major). Hooks are removed on exit, also after an error.
    """
    records: List[LayerOutput] = []
    handles = []

    def hook(module: nn.Module, _inputs: object, output: Tensor) -> None:
        if isinstance(output, Tensor) and output.requires_grad:
            sample = getattr(posterior, "current_sample", None) if posterior is not None else None
            records.append(LayerOutput(module, output, sample))

    try:
        seen = set()
        for root in modules:
            for module in root.modules():
                if id(module) in seen or not isinstance(module, BIASED_LAYERS):
                    continue
                seen.add(id(module))
                if implicit_bias(module) is None:
                    continue
                if spatial_only and isinstance(module, nn.Linear):
                    continue
                handles.append(module.register_forward_hook(hook))
        yield records
    finally:
        for handle in handles:
            handle.remove()


def min_max(maps: Tensor) -> Tensor:
    """Per-row min-max normalisation over all but the first dimension (constant rows -> 0)."""
    flat = maps.flatten(1)
    low = flat.min(1, keepdim=True).values
    span = (flat.max(1, keepdim=True).values - low).clamp_min(torch.finfo(maps.dtype).tiny)
    return ((flat - low) / span).view_as(maps)


def fullgrad_saliency(input_term: Tensor, bias_terms: Sequence[Tensor], size: Tuple[int, int]) -> Tensor:
    """FullGrad's saliency map ``(B, 1, H, W)`` from raw terms.

    Each term (the input term and every spatial bias term) is post-processed as in Srinivas &
    Fleuret's reference: absolute value, min-max normalisation per row, sum over channels, and
    bilinear resizing to the input's spatial ``size``; the maps are then added. Non-spatial
    terms (linear layers) have no location and are left out of the map, as in the reference.
    """
    saliency = min_max(input_term.abs()).sum(1, keepdim=True)
    for term in bias_terms:
        if term.dim() != 4:
            continue
        layer_map = min_max(term.abs()).sum(1, keepdim=True)
        saliency = saliency + F.interpolate(layer_map, size=size, mode="bilinear", align_corners=False)
    return saliency


def bias_terms_by_sample(records: Sequence[LayerOutput], gradients: Sequence[Tensor], num_samples: int) -> List[Tensor]:
    """Bias terms per layer, each arranged ``(S * N, ...)`` sample-major.

    Records made while one sample ran (``sample = s``) hold that sample's N rows; a record made
    with all samples batched (``sample = None``) already holds ``S * N`` rows. Layers are matched
    across samples by their position in the forward pass of each sample.
    """
    per_sample: dict = {}
    stacked: List[Tensor] = []
    for record, gradient in zip(records, gradients):
        term = record.bias_term(gradient)
        if record.sample is None:
            stacked.append(term)
        else:
            per_sample.setdefault(record.sample, []).append(term)
    if per_sample:
        counts = {len(terms) for terms in per_sample.values()}
        if len(per_sample) != num_samples or len(counts) != 1:
            raise ValueError("the posterior's samples do not share one layer structure; FullGrad terms need it")
        stacked += [torch.cat([per_sample[s][k] for s in range(num_samples)]) for k in range(counts.pop())]
    return stacked
