"""UA-Backprop (Wang et al., 2023): uncertainty attribution by backpropagating U -> g -> z -> x."""

from __future__ import annotations

import warnings
from contextlib import closing
from typing import Any, Literal, Optional, Tuple, Union, overload

import torch
from captum.attr import GradientAttribution
from captum.log import log_usage
from torch import Tensor

from captum_uncertainty._validation import check_choice, check_optional_positive_int, check_positive_number
from captum_uncertainty.attr._utils.checks import (
    check_classifier_forward,
    check_floating_batch,
    check_image_inputs,
    check_n_steps,
)
from captum_uncertainty.attr._utils.formatting import TargetType, additional_args_tuple
from captum_uncertainty.attr._utils.gradients import unseen_bias_layers
from captum_uncertainty.attr._utils.ua_backprop import (
    PATH_INTEGRALS,
    class_relevances,
    logit_uncertainties,
    path_relevances,
    pixel_distribution,
    progress_bar,
    scale_space_path,
    straight_paths,
    warn_if_costly,
)
from captum_uncertainty.forward import MEASURES, Decomposition, UncertaintyForward

__all__ = [
    "UABackprop",
    "SUPPORTED_FULLGRAD_POSTPROCESS",
    "SUPPORTED_PATHS",
    "FULLGRAD_POSTPROCESS",
    "PATHS",
    "default_temperatures",
]

#: The ``path`` choices of :meth:`UABackprop.attribute`, the z -> x options: Eq. 10 (FullGrad),
#: App. D.4's Eq. 20-22, Blur IG in App. D.4's framework, and ``"auto"``: FullGrad where it reads
#: every bias of the images' model, else input x gradient.
SUPPORTED_PATHS = ("fullgrad", "grad", "inputgrad", "integrated_gradients", "blur_integrated_gradients", "auto")
#: Deprecated alias of :data:`SUPPORTED_PATHS`, kept for one release.
PATHS = SUPPORTED_PATHS

#: The ``fullgrad_postprocess`` choices of :meth:`UABackprop.attribute`: the two readings of Eq. 10's
#: FullGrad terms (see :ref:`ua-backprop-defaults`).
SUPPORTED_FULLGRAD_POSTPROCESS = ("reference", "raw")
#: Deprecated alias of :data:`SUPPORTED_FULLGRAD_POSTPROCESS`, kept for one release.
FULLGRAD_POSTPROCESS = SUPPORTED_FULLGRAD_POSTPROCESS

#: Wang et al. App. B.1.2: (tau1, tau2) for grayscale (MNIST) and colour images.
PAPER_TEMPERATURES = {1: (0.08, 0.3), 3: (0.55, 0.02)}


def default_temperatures(channels: int) -> Tuple[float, float]:
    """The paper's ``(tau1, tau2)`` for 1-channel (0.08, 0.3) and 3-channel (0.55, 0.02) images."""
    if channels not in PAPER_TEMPERATURES:
        raise ValueError(
            f"the paper gives temperatures for 1- and 3-channel images only; inputs have {channels} channels: "
            "pass tau1 and tau2 explicitly"
        )
    return PAPER_TEMPERATURES[channels]


def _map_shape(inputs: Tensor) -> Tuple[int, ...]:
    """``(N, 1, H, W)`` for images, the inputs' own shape otherwise."""
    return (inputs.shape[0], 1) + tuple(inputs.shape[2:]) if inputs.dim() == 4 else tuple(inputs.shape)


class UABackprop(GradientAttribution):
    r"""UA-Backprop (Wang et al., 2023, Algorithm 1): attribute a Bayesian classifier's uncertainty.

    The uncertainty ``U`` of the :class:`~captum_uncertainty.UncertaintyForward` is passed back
    through the probabilities ``g``, the logits ``z`` of every posterior sample ``s`` and the
    network to the input: the per-class terms ``U_{g_j}`` of Eq. 4 (shared by all samples) go to
    the logits by ``U_{z_i^s} = sum_j c_{j->i}^s U_{g_j}`` with ``c_{j->i}^s =
    softmax_i((dg_j^s/dz_i^s) / (g_j^s tau1))`` (Eq. 5-8), and
    ``M(x) = 1/S sum_s sum_i U_{z_i^s} psi(M_i^s(x))`` (Eq. 9-10), where ``M_i^s`` is a relevance
    map of logit ``z_i^s`` (FullGrad, gradient, input x gradient, IG or Blur IG: ``path``) and psi
    a softmax over pixels with temperature ``tau2``.

    Properties (with ``normalize=True``): *completeness*, ``sum M(x) = U(x)`` (App. A.3), for every
    measure and path; *positivity* for the epistemic, aleatoric and total measures (every
    ``U_{g_j} >= 0``). The readings where the paper leaves room, the costs and the measurements
    behind the defaults are on :ref:`ua-backprop-defaults`. A call whose backward passes (one per
    class, and per path point on the path integrals) reach 20 times Blur IG's default call warns
    once, naming the cheaper methods, and shows a progress bar over the classes and samples when
    stderr is a terminal.

    Args:
        forward_func (UncertaintyForward): the uncertainty to explain, of a classifier; the
            forward's likelihood turns the members' outputs into logits (declared probabilities
            become their logarithm, a :class:`~captum_uncertainty.Bernoulli` logit ``z`` the two
            classes ``[0, z]``).

    Examples::

        >>> uf = UncertaintyForward(models, measure="epistemic")
        >>> maps = UABackprop(uf).attribute(x)                      # (N, 1, H, W), sums to uf(x)
        >>> maps = UABackprop(uf).attribute(x, path="inputgrad", tau1=0.08, tau2=0.3)
        >>> total, aleatoric, epistemic = UABackprop(uf).attribute(x, decompose=True)
    """

    def __init__(self, forward_func: UncertaintyForward) -> None:
        super().__init__(check_classifier_forward(forward_func, "UABackprop", "the softmax (Wang et al. Eq. 4-8)"))

    @property
    def multiplies_by_inputs(self) -> bool:
        return True

    def has_convergence_delta(self) -> bool:
        return False

    @overload
    def attribute(
        self,
        inputs: Tensor,
        baselines: Any = None,
        target: TargetType = None,
        additional_forward_args: Any = None,
        n_steps: int = 50,
        method: str = "gausslegendre",
        internal_batch_size: Optional[int] = None,
        *,
        path: str = "fullgrad",
        max_sigma: Optional[float] = None,
        tau1: Optional[float] = None,
        tau2: Optional[float] = None,
        normalize: bool = True,
        decompose: Literal[False] = False,
        classes_per_pass: Optional[int] = 1,
        fullgrad_postprocess: str = "raw",
    ) -> Tensor: ...

    @overload
    def attribute(
        self,
        inputs: Tensor,
        baselines: Any = None,
        target: TargetType = None,
        additional_forward_args: Any = None,
        n_steps: int = 50,
        method: str = "gausslegendre",
        internal_batch_size: Optional[int] = None,
        *,
        path: str = "fullgrad",
        max_sigma: Optional[float] = None,
        tau1: Optional[float] = None,
        tau2: Optional[float] = None,
        normalize: bool = True,
        decompose: Literal[True],
        classes_per_pass: Optional[int] = 1,
        fullgrad_postprocess: str = "raw",
    ) -> Decomposition: ...

    @overload
    def attribute(
        self,
        inputs: Tensor,
        baselines: Any = None,
        target: TargetType = None,
        additional_forward_args: Any = None,
        n_steps: int = 50,
        method: str = "gausslegendre",
        internal_batch_size: Optional[int] = None,
        *,
        path: str = "fullgrad",
        max_sigma: Optional[float] = None,
        tau1: Optional[float] = None,
        tau2: Optional[float] = None,
        normalize: bool = True,
        decompose: bool = False,
        classes_per_pass: Optional[int] = 1,
        fullgrad_postprocess: str = "raw",
    ) -> Union[Tensor, Decomposition]: ...

    @log_usage()
    def attribute(
        self,
        inputs: Tensor,
        baselines: Any = None,
        target: TargetType = None,
        additional_forward_args: Any = None,
        n_steps: int = 50,
        method: str = "gausslegendre",
        internal_batch_size: Optional[int] = None,
        *,
        path: str = "fullgrad",
        max_sigma: Optional[float] = None,
        tau1: Optional[float] = None,
        tau2: Optional[float] = None,
        normalize: bool = True,
        decompose: bool = False,
        classes_per_pass: Optional[int] = 1,
        fullgrad_postprocess: str = "raw",
    ) -> Union[Tensor, Decomposition]:
        r"""The uncertainty attribution map ``M(x)``.

        The positional arguments are Captum's (``IntegratedGradients.attribute``'s order); the
        method's own options are keyword-only.

        Args:
            inputs (Tensor): images ``(N, C, H, W)``, or for ``path`` ``"grad"``,
                ``"inputgrad"`` and ``"integrated_gradients"`` inputs of any shape ``(N, ...)``
                (tabular features, sequences).
            baselines (None, str or Tensor): reference ``x0`` of the IG path: ``None``/"black"
                (zeros), ``"white"`` (ones), ``"black_white"`` (average), a number or a tensor.
            target (int, Tensor or list, optional): ``None`` (default) attributes the whole
                uncertainty ``U``; a class ``i`` (or one per input) keeps only that class's Eq. 4
                term ``U_{g_i}``, so the map sums to ``U_{g_i}(x)``.
            additional_forward_args (Any, optional): extra arguments of the posterior's models;
                tensors whose first dimension is the batch size follow their rows (along the IG
                path too).
            n_steps (int): integration points of the IG and Blur IG paths. Default: 50.
            method (str): integration rule of the IG path (Captum's names). Default:
                ``"gausslegendre"``.
            internal_batch_size (int, optional): at most this many path points (inputs x steps)
                per forward pass of the IG and Blur IG paths. Default: as many as keep one
                chunk's class gradients (``C x S x points x features``) within 2**25 numbers, at
                least one step of the batch, because unbounded they grew to 18.5 GB at
                ``C = 1000`` (:ref:`ua-backprop-defaults`).
            path (str, keyword only): the z -> x method: ``"fullgrad"`` (Eq. 10, images only),
                ``"grad"`` (Eq. 20), ``"inputgrad"`` (Eq. 21), ``"integrated_gradients"``
                (Eq. 22) or ``"blur_integrated_gradients"`` (Blur IG of every logit, images
                only). ``"fullgrad"`` hooks the conv / BatchNorm layers of
                ``posterior.sample_modules()`` and needs a posterior that runs them per sample
                or as one sample-major batch (DeepEnsemble, WeightSamples, MCDropout).
                ``"auto"`` runs ``"fullgrad"`` where it reads every bias of images' models and
                ``"inputgrad"`` (the same cost) otherwise, e.g. for LayerNorm transformers, says so
                in a warning and records the choice in :attr:`chosen_path`. Default:
                ``"fullgrad"``, the paper's method, which localised anomalies best at the cost of
                ``"inputgrad"`` (:ref:`ua-backprop-defaults`); it refuses models whose biases it
                cannot read, naming them.
            max_sigma (float, optional): largest blur of the Blur IG path. Default: Blur IG's,
                ``50 * max(H, W) / 224``.
            tau1 (float, optional): temperature of the logit coefficients (Eq. 8). Default: the
                paper's (App. B.1.2), 0.08 for 1-channel and 0.55 for 3-channel images;
                required otherwise.
            tau2 (float, optional): temperature of the pixel softmax (Eq. 10). Default: the
                paper's, 0.3 for 1-channel and 0.02 for 3-channel images; required otherwise.
            normalize (bool): apply the two normalisations (default). ``False`` is the App. D.7
                ablation: raw softmax Jacobian and plain channel mean, no completeness.
            decompose (bool): return a :class:`~captum_uncertainty.Decomposition` of the total,
                aleatoric and epistemic maps, from the same backward passes.
            classes_per_pass (int or None): how many classes share one backward pass (each
                covers all samples and inputs); ``None`` puts all ``C`` classes in one
                ``is_grads_batched`` pass; the maps are identical. Default: ``1``, measured
                faster on CPU and ``C`` times lighter in memory (:ref:`ua-backprop-defaults`).
            fullgrad_postprocess (str): how the FullGrad terms become ``M_i^s``
                (``path="fullgrad"`` only): ``"reference"`` (the FullGrad reference code's
                per-term min-max) or ``"raw"`` (Eq. 10 as written). Default: ``"raw"``, which
                scored the higher MURR in every blurring test measured
                (:ref:`ua-backprop-defaults`).

        Returns:
            Tensor or Decomposition: maps ``(N, 1, H, W)`` for images (permute to ``(H, W, 1)``
            for ``captum.attr.visualization``), of the inputs' shape otherwise, summing to
            ``U(x)`` per input (with ``normalize=True``).
        """
        return self._attribute(
            inputs,
            baselines,
            target,
            additional_forward_args,
            n_steps,
            method,
            internal_batch_size,
            path,
            max_sigma,
            tau1,
            tau2,
            normalize,
            decompose,
            classes_per_pass,
            fullgrad_postprocess,
        )

    def _attribute(
        self,
        inputs: Tensor,
        baselines: Any,
        target: TargetType,
        additional_forward_args: Any,
        n_steps: int,
        method: str,
        internal_batch_size: Optional[int],
        path: str,
        max_sigma: Optional[float],
        tau1: Optional[float],
        tau2: Optional[float],
        normalize: bool,
        decompose: bool,
        classes_per_pass: Optional[int],
        fullgrad_postprocess: str,
    ) -> Union[Tensor, Decomposition]:
        forward: UncertaintyForward = self.forward_func
        check_floating_batch(inputs)
        check_choice(path, "path", SUPPORTED_PATHS)
        path = self._resolved_path(path, inputs)
        if path in ("fullgrad", "blur_integrated_gradients"):
            check_image_inputs(inputs, f"UABackprop(path={path!r})")
        check_n_steps(n_steps)
        check_optional_positive_int(classes_per_pass, "classes_per_pass")
        check_choice(fullgrad_postprocess, "fullgrad_postprocess", SUPPORTED_FULLGRAD_POSTPROCESS)
        tau1, tau2 = _resolve_temperatures(inputs, tau1, tau2)
        args = additional_args_tuple(additional_forward_args)
        forward.check_inputs(inputs, *args)  # its calls also tell a SampleCallable its S
        inputs = inputs.detach()
        measures = MEASURES if decompose else (forward.measure,)
        if path == "integrated_gradients":
            chunks = path_relevances(
                forward,
                inputs,
                args,
                straight_paths(inputs, baselines, method, n_steps),
                internal_batch_size,
                classes_per_pass,
            )
        elif path == "blur_integrated_gradients":
            chunks = path_relevances(
                forward,
                inputs,
                args,
                scale_space_path(inputs, max_sigma, n_steps),
                internal_batch_size,
                classes_per_pass,
            )
        else:
            chunks = class_relevances(forward, inputs, args, path, classes_per_pass, fullgrad_postprocess)
        with closing(chunks):
            logits = next(chunks)
            warn_if_costly(logits.shape[-1], path, n_steps)
            shares = logit_uncertainties(logits, tau1, normalize, measures, target)  # (M, S, N, C)
            maps = torch.zeros((len(measures),) + _map_shape(inputs), dtype=inputs.dtype, device=inputs.device)
            # the path integrals show their own bar over path points; the class paths one over classes
            classes = logits.shape[-1]
            progress = (
                None
                if path in PATH_INTEGRALS
                else progress_bar(classes, classes * logits.shape[0], "UABackprop class x sample relevances")
            )
            try:
                for samples, start, stop, relevance in chunks:  # relevance (k, S', N, *input shape)
                    distribution = pixel_distribution(relevance.flatten(0, 2), tau2, normalize)
                    distribution = distribution.view(tuple(relevance.shape[:3]) + tuple(distribution.shape[1:]))
                    # Eq. 9: sum over classes of the chunk and over its samples, weighted by U_{z_i^s}
                    weights = shares[:, samples, :, start:stop].transpose(-1, -2)
                    maps = maps + torch.einsum("mskn,ksn...->mn...", weights, distribution)
                    if progress is not None:
                        progress.update(int(relevance.shape[0] * relevance.shape[1]))
            finally:
                if progress is not None:
                    progress.close()
        result = maps / logits.shape[0]  # Eq. 9: 1/S
        if decompose:
            return Decomposition(*result)
        return result[0]

    #: The path the last ``attribute`` call ran (what ``path="auto"`` chose), or ``None`` before any call.
    chosen_path: Optional[str] = None

    def _resolved_path(self, path: str, inputs: Tensor) -> str:
        """``path``, or for ``"auto"`` the path it stands for, recorded in :attr:`chosen_path`;
        choosing anything but FullGrad is said in a warning (never a silent fallback)."""
        if path == "auto":
            modules = self.forward_func.posterior.sample_modules()
            unseen = unseen_bias_layers(modules) if modules else []
            path = "fullgrad" if inputs.dim() == 4 and modules and not unseen else "inputgrad"
            if path != "fullgrad":
                reason = (
                    f"FullGrad cannot read the biases of {len(unseen)} layer(s), first {unseen[0][0]}"
                    if unseen
                    else "FullGrad needs images (N, C, H, W) and the posterior's modules"
                )
                warnings.warn(
                    f"UABackprop(path='auto') chose path='inputgrad': {reason}; pass path='inputgrad' to choose it "
                    "explicitly",
                    UserWarning,
                    stacklevel=5,
                )
        self.chosen_path = path
        return path


def _resolve_temperatures(inputs: Tensor, tau1: Optional[float], tau2: Optional[float]) -> Tuple[float, float]:
    """The given temperatures, or the paper's for 1- and 3-channel images."""
    if tau1 is None or tau2 is None:
        if inputs.dim() != 4:
            raise ValueError(
                f"the paper gives temperatures for images only; inputs have shape {tuple(inputs.shape)}: "
                "pass tau1 and tau2 explicitly"
            )
        defaults = default_temperatures(inputs.shape[1])
        tau1 = defaults[0] if tau1 is None else tau1
        tau2 = defaults[1] if tau2 is None else tau2
    return float(check_positive_number(tau1, "tau1")), float(check_positive_number(tau2, "tau2"))
