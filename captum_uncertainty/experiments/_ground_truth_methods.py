"""The methods of the ground-truth benchmark (:mod:`captum_uncertainty.experiments.ground_truth`):
how each is called on an :class:`~captum_uncertainty.UncertaintyForward`, by name, and the
seeded call that turns its attributions into one map per image."""

from __future__ import annotations

import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Dict, Iterator, List, Optional

import torch
from torch import Tensor

from captum_uncertainty._hooks import temporary_hooks
from captum_uncertainty._methods import (
    as_map,
    build_blur_ig,
    build_captum_integrated_gradients,
    build_guided_ig,
    build_integrated_gradients,
    build_kernel_shap,
    build_lime,
    build_saliency,
    build_ua_backprop,
    clue_map,
    in_class_path_map,
    pixel_blocks,
)
from captum_uncertainty.forward import UncertaintyForward

if TYPE_CHECKING:
    from captum_uncertainty.experiments.ground_truth import GroundTruthConfig
    from captum_uncertainty.generative import VAE

__all__ = [
    "backward_rows",
    "Context",
    "Explainer",
    "GENERATIVE_METHODS",
    "METHODS",
    "ORACLE",
    "RANDOM",
    "seeded",
]

#: The map that ignores the input (uniform noise, seeded): the chance reference.
RANDOM = "Random"

#: Integrated Gradients of the uncertainty from the clean image: the oracle reference.
ORACLE = "Oracle: IG from the clean image"


@dataclass
class Context:
    """What a method may need besides the forward and the inputs."""

    config: GroundTruthConfig
    x_train: Tensor
    clean: Tensor
    _vae: Optional["VAE"] = field(default=None, repr=False)

    def vae(self) -> "VAE":
        if self._vae is None:
            from captum_uncertainty.generative import load_or_train_vae

            self._vae = load_or_train_vae(
                self.x_train,
                latent_dim=self.config.required("vae_latent"),
                epochs=self.config.required("vae_epochs"),
                seed=self.config.seed,
                cache_dir=self.config.cache_dir,
                progress=False,
            )
        return self._vae


Explainer = Callable[[UncertaintyForward, Tensor, Context], Tensor]


def _random(uf: UncertaintyForward, x: Tensor, ctx: Context) -> Tensor:
    generator = torch.Generator().manual_seed(ctx.config.seed)
    return torch.rand((x.shape[0], 1) + tuple(x.shape[2:]), generator=generator).to(x)


def _oracle(uf: UncertaintyForward, x: Tensor, ctx: Context) -> Tensor:
    return build_captum_integrated_gradients(uf).attribute(x, baselines=ctx.clean, n_steps=ctx.config.n_steps)


def _captum_ig(uf: UncertaintyForward, x: Tensor, ctx: Context) -> Tensor:
    return build_captum_integrated_gradients(uf).attribute(x, baselines=torch.zeros_like(x), n_steps=ctx.config.n_steps)


def _uig(baselines: str) -> Explainer:
    def explain(uf: UncertaintyForward, x: Tensor, ctx: Context) -> Tensor:
        return build_integrated_gradients(uf).attribute(x, baselines=baselines, n_steps=ctx.config.n_steps)

    return explain


def _saliency(uf: UncertaintyForward, x: Tensor, ctx: Context) -> Tensor:
    return build_saliency(uf).attribute(x, abs=True)


def _smoothgrad(uf: UncertaintyForward, x: Tensor, ctx: Context) -> Tensor:
    from captum.attr import NoiseTunnel

    return NoiseTunnel(build_saliency(uf)).attribute(
        x, nt_type="smoothgrad", nt_samples=ctx.config.smoothgrad_samples, stdevs=0.1, abs=True
    )


def _superpixels(x: Tensor) -> Tensor:
    """Feature ids ``(1, 1, H, W)`` of KernelShap and LIME: single pixels on images up to 16
    pixels a side, 2x2 blocks on larger ones."""
    return pixel_blocks(x, 1 if max(x.shape[-2:]) <= 16 else 2)


def _kernel_shap(uf: UncertaintyForward, x: Tensor, ctx: Context) -> Tensor:
    shap = build_kernel_shap(uf)
    mask = _superpixels(x)
    samples = ctx.config.shap_samples
    return torch.cat(
        [
            shap.attribute(
                x[i : i + 1],
                baselines=0.0,
                feature_mask=mask,
                n_samples=samples,
                perturbations_per_eval=samples,
            )
            for i in range(x.shape[0])
        ]
    )


def _lime(uf: UncertaintyForward, x: Tensor, ctx: Context) -> Tensor:
    """Captum's Lime with a ridge surrogate (:func:`~captum_uncertainty._methods.build_lime`): its
    default Lasso zeroes every coefficient when the target is an uncertainty of a few tenths of a nat."""
    lime = build_lime(uf)
    mask = _superpixels(x)
    samples = ctx.config.shap_samples
    return torch.cat(
        [
            lime.attribute(
                x[i : i + 1], baselines=0.0, feature_mask=mask, n_samples=samples, perturbations_per_eval=samples
            )
            for i in range(x.shape[0])
        ]
    )


def _ua_backprop(path: str) -> Explainer:
    def explain(uf: UncertaintyForward, x: Tensor, ctx: Context) -> Tensor:
        return build_ua_backprop(uf).attribute(x, path=path, n_steps=ctx.config.n_steps)

    return explain


def _blur_ig(uf: UncertaintyForward, x: Tensor, ctx: Context) -> Tensor:
    return build_blur_ig(uf).attribute(x, n_steps=ctx.config.n_steps)


def _guided_ig(uf: UncertaintyForward, x: Tensor, ctx: Context) -> Tensor:
    return build_guided_ig(uf).attribute(x, n_steps=ctx.config.n_steps)


def _distribution_std(uf: UncertaintyForward, x: Tensor, ctx: Context) -> Tensor:
    from captum.attr import IntegratedGradients

    from captum_uncertainty.attr import ExplanationDistribution

    return ExplanationDistribution(uf, IntegratedGradients).attribute(x, n_steps=ctx.config.n_steps).std


def _covariance(mode: str) -> Explainer:
    def explain(uf: UncertaintyForward, x: Tensor, ctx: Context) -> Tensor:
        from captum.attr import IntegratedGradients

        from captum_uncertainty.attr import CovarianceAttribution

        maps = CovarianceAttribution(uf, IntegratedGradients).attribute(x, mode=mode, n_steps=ctx.config.n_steps)
        assert isinstance(maps, Tensor)
        return maps

    return explain


def _clue(uf: UncertaintyForward, x: Tensor, ctx: Context) -> Tensor:
    return clue_map(uf, ctx.vae(), x, ctx.config.search_iterations)


def _counterfactual_path_ig(uf: UncertaintyForward, x: Tensor, ctx: Context) -> Tensor:
    return in_class_path_map(uf, ctx.vae(), x, ctx.config.n_steps, ctx.config.search_iterations)


def _sparse_counterfactual_ig(uf: UncertaintyForward, x: Tensor, ctx: Context) -> Tensor:
    from captum_uncertainty.attr import SparseCounterfactualIG

    return SparseCounterfactualIG(uf, ctx.vae()).attribute(x, n_steps=ctx.config.n_steps)


#: Every method, by name: how it is called on an :class:`~captum_uncertainty.UncertaintyForward`
#: of the cause's measure. IG-type baselines are black (zeros) unless named; KernelShap and LIME
#: perturb single pixels (2x2 blocks on images larger than 16 pixels) towards black.
#: ExplanationDistribution and CovarianceAttribution explain the members' logits of the
#: predicted class (their spread over the members), whatever the measure.
METHODS: Dict[str, Explainer] = {
    RANDOM: _random,
    ORACLE: _oracle,
    "Captum IG (black)": _captum_ig,
    "UncertaintyIG (white)": _uig("white"),
    "UncertaintyIG (black+white)": _uig("black_white"),
    "Saliency": _saliency,
    "SmoothGrad": _smoothgrad,
    "KernelShap": _kernel_shap,
    "LIME": _lime,
    "UA-Backprop+FullGrad": _ua_backprop("fullgrad"),
    "UA-Backprop+Grad": _ua_backprop("grad"),
    "UA-Backprop+InputGrad": _ua_backprop("inputgrad"),
    "UA-Backprop+IG": _ua_backprop("integrated_gradients"),
    "UA-Backprop+BlurIG": _ua_backprop("blur_integrated_gradients"),
    "Blur IG": _blur_ig,
    "Guided IG": _guided_ig,
    "ExplanationDistribution (IG) std": _distribution_std,
    "CovarianceAttribution (IG marginal)": _covariance("marginal"),
    "CovarianceAttribution (IG diagonal)": _covariance("diagonal"),
    "CLUE": _clue,
    "CF-path IG": _counterfactual_path_ig,
    "Sparse CF IG": _sparse_counterfactual_ig,
}

#: The methods that need a VAE (trained or loaded before their clock starts).
GENERATIVE_METHODS = ("CLUE", "CF-path IG", "Sparse CF IG")


def seeded(explain: Explainer, uf: UncertaintyForward, x: Tensor, ctx: Context) -> Tensor:
    """A method's maps with its random draws (SmoothGrad noise, KernelShap and LIME samples)
    seeded with the run's seed, so that they do not depend on which methods ran before."""
    with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Input Tensor .* did not already require gradients")
        torch.manual_seed(ctx.config.seed)
        return as_map(explain(uf, x, ctx))


@contextmanager
def backward_rows(uf: UncertaintyForward) -> Iterator[List[int]]:
    """A one-element list counting the rows back-propagated through the posterior's samples while
    the block runs: a forward pre-hook on each sample module's first layer with parameters puts a
    gradient hook on the layer's input, which counts the rows of every gradient reaching it (every
    backward pass to the input goes through it, also those taken from tensors a method captured
    inside the model; pre-hooks leave MC dropout's one batch alone). Every hook is removed
    afterwards."""
    counted = [0]
    handles: List[Any] = []

    def count(grad: Tensor) -> None:
        counted[0] += int(grad.shape[0])

    def watch(_module: torch.nn.Module, args: Any) -> None:
        if torch.is_grad_enabled() and args and isinstance(args[0], Tensor) and args[0].requires_grad:
            handles.append(args[0].register_hook(count))

    try:
        with temporary_hooks() as hooks:
            for module in {id(m): m for m in uf.posterior.sample_modules()}.values():
                first = next((m for m in module.modules() if any(True for _ in m.parameters(recurse=False))), None)
                if first is not None:
                    hooks.forward_pre(first, watch)
            yield counted
    finally:
        for handle in handles:
            handle.remove()
