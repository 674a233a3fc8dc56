"""UA-Backprop (Wang et al., 2023): uncertainty attribution by backpropagating U -> g -> z -> x."""

from __future__ import annotations

from contextlib import closing, nullcontext
from typing import Any, Generator, List, Optional, Sequence, Tuple

import torch
from captum.attr import GradientAttribution
from captum.log import log_usage
from torch import Tensor

from captum_uncertainty.attr._utils.checks import (
    check_floating_batch,
    check_image_inputs,
    check_n_steps,
    check_uncertainty_forward,
)
from captum_uncertainty.attr._utils.formatting import (
    TargetType,
    additional_args_tuple,
    format_baselines,
    repeat_batch_args,
)
from captum_uncertainty.attr._utils.gradients import (
    captured_layer_outputs,
    check_classes_per_pass,
    check_record_rows,
    class_gradient_chunks,
    fullgrad_relevances,
)
from captum_uncertainty.attr._utils.path import (
    blur_levels,
    blur_path,
    default_max_sigma,
    integrate_path,
    quadrature,
    select_class,
    straight_path,
)
from captum_uncertainty.forward import MEASURES, Decomposition, UncertaintyForward, per_class_uncertainty
from captum_uncertainty.posterior import expand_to_samples

__all__ = ["UABackprop", "PATHS", "default_temperatures"]

#: The z -> x options: Eq. 10 (FullGrad), App. D.4's Eq. 20-22, and Blur IG in App. D.4's framework.
PATHS = ("fullgrad", "grad", "inputgrad", "integrated_gradients", "blur_integrated_gradients")

#: Finite-difference step in sigma of the Blur IG path (Blur IG's reference value).
BLUR_GRAD_STEP = 0.01
FULLGRAD_POSTPROCESS = ("reference", "raw")

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


def check_temperature(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(f"{name} must be a positive number, got {value!r}")
    return float(value)


def logit_coefficients(g: Tensor, tau1: float, normalize: bool) -> Tensor:
    """``c[s, n, j, i]``, the share of ``U_{g_j}`` that logit ``z_i`` receives (Eq. 7-8).

    ``dg_j/dz_i / (g_j tau1) = (delta_ij - g_i) / tau1``, so Eq. 8's softmax over ``i`` is taken
    of that (exact even where ``g_j`` underflows to 0). Without normalisation (App. D.7) the raw
    softmax Jacobian ``dg_j/dz_i = g_j (delta_ij - g_i)`` is used.
    """
    eye = torch.eye(g.shape[-1], dtype=g.dtype, device=g.device)
    difference = eye - g.unsqueeze(-2)  # [..., j, i] = delta_ij - g_i
    if normalize:
        return torch.softmax(difference / tau1, dim=-1)
    return g.unsqueeze(-1) * difference


def pixel_distribution(relevance: Tensor, tau2: float, normalize: bool) -> Tensor:
    """psi of Eq. 10: for images ``(B, C, H, W)`` the channel mean, then a softmax over pixels
    with temperature ``tau2``; for inputs of any other shape ``(B, ...)`` (tabular features,
    sequences) the softmax is taken over all features of a row, with no channel mean."""
    mean = relevance.mean(1, keepdim=True) if relevance.dim() == 4 else relevance
    if not normalize:
        return mean
    return torch.softmax(mean.flatten(1) / tau2, dim=1).view_as(mean)


def map_shape(inputs: Tensor) -> Tuple[int, ...]:
    """``(N, 1, H, W)`` for images, the inputs' own shape otherwise."""
    return (inputs.shape[0], 1) + tuple(inputs.shape[2:]) if inputs.dim() == 4 else tuple(inputs.shape)


class UABackprop(GradientAttribution):
    r"""UA-Backprop (Wang et al., 2023, Algorithm 1): attribute a Bayesian classifier's uncertainty.

    The uncertainty ``U`` (the :class:`~captum_uncertainty.UncertaintyForward`'s measure) is
    passed backwards through the softmax probabilities ``g``, the logits ``z`` of every posterior
    sample ``s`` and the network to the input:

    1. ``U -> g`` (Eq. 4): the per-class terms ``U_{g_j}`` of the decomposition, which sum to
       ``U`` and are shared by all samples;
    2. ``g -> z`` (Eq. 5, 7, 8): ``U_{z_i^s} = sum_j c_{j->i}^s U_{g_j}`` with
       ``c_{j->i}^s = softmax_i((dg_j^s/dz_i^s) / (g_j^s tau1))``;
    3. ``z -> x`` (Eq. 9-10): ``M(x) = 1/S sum_s sum_i U_{z_i^s} M_i^s(x)``, where each relevance
       map ``M_i^s`` is psi(channel mean, then softmax over pixels with temperature ``tau2``) of:

       * ``"fullgrad"`` (default, Eq. 10): ``|dz_i^s/dx * x| + sum_l |dz_i^s/db_l * b_l|`` over
         every convolution and BatchNorm layer (implicit bias ``beta - mean gamma / sqrt(var +
         eps)``). The paper combines the terms by "the implementation available at
         fullgrad-saliency with the default hyperparameters" *and* writes Eq. 10 with raw terms;
         the two readings differ, so both are offered (``fullgrad_postprocess``):
         ``"raw"`` (default) adds the raw absolute terms as Eq. 10 is written (bias terms
         summed over their channels and resized), where the input term dominates;
         ``"reference"`` post-processes each term as that reference does (absolute value,
         min-max over the map, channel sum, bilinear resize to the input), which makes the bias
         terms dominate. ``"raw"`` is the default because it won every measurement of the
         blurring test (MURR, higher is better; ``benchmarks/RESULTS.md``): 0.480 vs 0.267 at
         2% on the bundled-MNIST quick run, 0.293 vs 0.272 at 2% on the full run (100 digits),
         and 0.549 / 0.696 vs 0.252 / 0.436 at 5% / 10% on a held-out data set measured outside
         the project;
       * ``"grad"`` (Eq. 20): ``dz_i^s/dx``;
       * ``"inputgrad"`` (Eq. 21): ``x * dz_i^s/dx``;
       * ``"integrated_gradients"`` (Eq. 22): ``(x - x0) * int_0^1 dz_i^s/dx(x0 + a(x - x0)) da``;
       * ``"blur_integrated_gradients"`` (App. D.4's framework with another gradient method):
         Blur IG of ``z_i^s`` (Xu et al., 2020; see
         :class:`~captum_uncertainty.BlurIntegratedGradients`), the integral of ``dz_i^s/dx``
         along the scale-space path from ``gaussian_blur(x, max_sigma)`` to ``x``, ``n_steps``
         Riemann steps.

       Eq. 20-22 put the signed relevance into psi (no absolute value), as written in the paper.

    Properties: *completeness* (``sum M(x) = U(x)``, App. A.3, Eq. 19) for every measure and
    path when ``normalize=True``, since every coefficient set and every pixel distribution sums
    to one; *positivity* for the epistemic and aleatoric measures and for total uncertainty
    (every ``U_{g_j} >= 0``: for epistemic by Jensen's inequality per class), so the map is a
    distribution of ``U`` over pixels. ``normalize=False`` (App. D.7 ablation) uses the raw
    softmax Jacobian as coefficients and the plain channel mean as relevance: neither property
    then holds.

    Choices where the paper leaves room: ``U_{g_j}`` (Eq. 4) is computed once from all samples
    and shared by every sample's coefficients, as stated below Eq. 4; Eq. 8's argument
    ``(dg_j/dz_i) / (g_j tau1)`` is evaluated as ``(delta_ij - g_i) / tau1`` (the same number,
    exact where ``g_j`` underflows); the 1/S of Eq. 9 is kept, so completeness uses
    ``sum_i U_{z_i^s} = U`` for every ``s``.

    Cost: one forward pass of all ``S`` samples (each on its own copy of ``x``, via
    ``posterior.forward_per_sample``) plus ``C`` vector-Jacobian products, each ONE backward pass
    through all samples and inputs at once; ``classes_per_pass=None`` folds the ``C`` products
    into a single ``is_grads_batched`` backward instead (identical maps, slower on CPU and ``C``
    times the memory). The FullGrad bias terms come from the same backward passes, through
    temporary forward hooks on the conv / BatchNorm layers of ``posterior.sample_modules()``
    (removed afterwards, also on error); they need a posterior that runs its modules per sample
    (:class:`~captum_uncertainty.DeepEnsemble`, ``WeightSamples``) or as one sample-major batch
    (:class:`~captum_uncertainty.MCDropout`). ``decompose=True`` reuses the passes for all three
    measures. The IG path costs ``n_steps`` times as much.

    Args:
        forward_func (UncertaintyForward): the uncertainty to explain; members must return
            logits (or probabilities, whose logarithm is used as the logits).

    Examples::

        >>> uf = UncertaintyForward(models, measure="epistemic")
        >>> maps = UABackprop(uf).attribute(x)                      # (N, 1, H, W), sums to uf(x)
        >>> maps = UABackprop(uf).attribute(x, path="inputgrad", tau1=0.08, tau2=0.3)
        >>> total, aleatoric, epistemic = UABackprop(uf).attribute(x, decompose=True)
    """

    def __init__(self, forward_func: UncertaintyForward) -> None:
        super().__init__(check_uncertainty_forward(forward_func))

    @property
    def multiplies_by_inputs(self) -> bool:
        return True

    def has_convergence_delta(self) -> bool:
        return False

    @log_usage()
    def attribute(  # type: ignore[override]
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
    ) -> Any:
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
                term ``U_{g_i}`` in step 1, so the map sums to ``U_{g_i}(x)``.
            additional_forward_args (Any, optional): extra arguments of the posterior's models;
                tensors whose first dimension is the batch size follow their rows (along the IG
                path too).
            n_steps (int): integration points of the IG path. Default: 50.
            method (str): integration rule of the IG path (Captum's names). Default:
                ``"gausslegendre"``.
            internal_batch_size (int, optional): at most this many path points (inputs x steps)
                per forward pass of the IG path.
            path (str, keyword only): the z -> x method: ``"fullgrad"`` (default, images only),
                ``"grad"``, ``"inputgrad"``, ``"integrated_gradients"`` or
                ``"blur_integrated_gradients"`` (images only).
            max_sigma (float, optional): largest blur of the Blur IG path. Default: Blur IG's,
                ``50 * max(H, W) / 224``.
            tau1 (float, optional): temperature of the logit coefficients (Eq. 8). Default: the
                paper's, 0.08 for 1-channel and 0.55 for 3-channel images; required otherwise.
            tau2 (float, optional): temperature of the pixel softmax (Eq. 10). Default: 0.3 for
                1-channel and 0.02 for 3-channel images; required otherwise.
            normalize (bool): apply the two normalisations (default). ``False`` is the App. D.7
                ablation (no completeness).
            decompose (bool): return a :class:`~captum_uncertainty.Decomposition` of the total,
                aleatoric and epistemic maps, from the same backward passes.
            classes_per_pass (int or None): how many classes share one backward pass. Every
                backward pass covers all posterior samples and inputs at once; ``1`` (default)
                runs ``C`` such passes, ``None`` runs one pass for all ``C`` classes
                (``torch.autograd.grad(..., is_grads_batched=True)``), values in between
                chunk the classes. The results are identical; on CPU the default was measured
                faster and needs ``C`` times less memory (``benchmarks/bench_ua_backprop.py``).
            fullgrad_postprocess (str): how the FullGrad terms become ``M_i^s`` before psi
                (``path="fullgrad"`` only): ``"reference"`` (the FullGrad reference
                implementation's per-term min-max) or ``"raw"`` (Eq. 10 as written). Default:
                ``"raw"``, the reading that scored higher in every blurring-test measurement (see
                the class docstring).

        Returns:
            Tensor or Decomposition: maps ``(N, 1, H, W)`` for images (permute to ``(H, W, 1)``
            for ``captum.attr.visualization``), of the inputs' shape otherwise, summing to
            ``U(x)`` per input (with ``normalize=True``).
        """
        forward: UncertaintyForward = self.forward_func
        check_floating_batch(inputs)
        if path not in PATHS:
            raise ValueError(f"path must be one of {PATHS}, got {path!r}")
        if path in ("fullgrad", "blur_integrated_gradients"):
            check_image_inputs(inputs, f"UABackprop(path={path!r})")
        check_n_steps(n_steps)
        check_classes_per_pass(classes_per_pass)
        if fullgrad_postprocess not in FULLGRAD_POSTPROCESS:
            raise ValueError(
                f"fullgrad_postprocess must be one of {FULLGRAD_POSTPROCESS}, got {fullgrad_postprocess!r}"
            )
        tau1, tau2 = resolve_temperatures(inputs, tau1, tau2)
        args = additional_args_tuple(additional_forward_args)
        forward.posterior.check_inputs((inputs,) + args)
        forward.posterior.check_deterministic((inputs,) + args)  # its calls also tell a SampleCallable its S
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
            shares = logit_uncertainties(logits, tau1, normalize, measures, target)  # (M, S, N, C)
            maps = torch.zeros((len(measures),) + map_shape(inputs), dtype=inputs.dtype, device=inputs.device)
            for start, stop, relevance in chunks:  # relevance (k, S, N, *input shape)
                distribution = pixel_distribution(relevance.flatten(0, 2), tau2, normalize)
                distribution = distribution.view(tuple(relevance.shape[:3]) + tuple(distribution.shape[1:]))
                # Eq. 9: sum over classes of the chunk and over samples, weighted by U_{z_i^s}
                maps = maps + torch.einsum(
                    "mskn,ksn...->mn...", shares[..., start:stop].transpose(-1, -2), distribution
                )
        result = maps / logits.shape[0]  # Eq. 9: 1/S
        if decompose:
            return Decomposition(*result)
        return result[0]


def resolve_temperatures(inputs: Tensor, tau1: Optional[float], tau2: Optional[float]) -> Tuple[float, float]:
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
    return check_temperature(tau1, "tau1"), check_temperature(tau2, "tau2")


def logit_uncertainties(
    logits: Tensor, tau1: float, normalize: bool, measures: Sequence[str], target: TargetType = None
) -> Tensor:
    """``U_{z_i^s}`` for each measure, shape ``(M, S, N, C)`` (Eq. 4, 5, 8).

    Eq. 4's ``U_{g_j}`` is computed once from all samples (it is a term of the entropy of the
    predictive mean and of the mean member entropy) and shared by every sample ``s``, as the
    paper states below Eq. 4; only the coefficients ``c^s`` are per sample. With ``target``,
    only the target class's term ``U_{g_target}`` is passed on.
    """
    logits = logits.detach()
    per_class = per_class_uncertainty(logits, probabilities=False, validate=False)
    coefficients = logit_coefficients(torch.softmax(logits, dim=-1), tau1, normalize)  # (S, N, j, i)
    terms: List[Tensor] = [per_class.select(m) for m in measures]
    if target is not None:
        terms = [only_class(term, target) for term in terms]
    return torch.stack([torch.einsum("snji,nj->sni", coefficients, term) for term in terms])


def only_class(per_class: Tensor, target: TargetType) -> Tensor:
    """``(N, C)`` terms with every column but ``target``'s set to zero."""
    kept = select_class(per_class, target)  # validates target
    index = torch.as_tensor(target, device=per_class.device).reshape(-1, 1).expand(per_class.shape[0], 1)
    return torch.zeros_like(per_class).scatter(1, index, kept.unsqueeze(1))


RelevanceChunks = Generator[Any, None, None]


def class_relevances(
    forward: UncertaintyForward,
    inputs: Tensor,
    args: Tuple[Any, ...],
    path: str,
    classes_per_pass: Optional[int],
    fullgrad_postprocess: str = "raw",
) -> RelevanceChunks:
    """First yield the logits ``(S, N, C)`` at ``x``, then ``(start, stop, relevance)`` per class chunk.

    ``relevance`` is ``(stop - start, S, N, *input shape)``: the relevance of logit ``z_i^s``
    for each class ``i`` of the chunk, every sample ``s`` and input ``n``. Each chunk costs one
    backward pass through all samples and inputs at once (see
    :func:`~captum_uncertainty.attr._utils.gradients.class_gradient_chunks`).
    """
    posterior = forward.posterior
    num_samples = posterior.num_samples
    fullgrad = path == "fullgrad"
    if fullgrad and not posterior.sample_modules():
        raise ValueError(
            f"path='fullgrad' needs the posterior's modules to hook their layers, but {type(posterior).__name__} "
            "lists none (pass modules=... to SampleCallable), or use path='inputgrad', 'grad' or "
            "'integrated_gradients'"
        )
    capture = (
        captured_layer_outputs(posterior.sample_modules(), posterior, spatial_only=True)
        if fullgrad
        else nullcontext([])
    )
    with torch.enable_grad(), posterior.hookable(), capture as records:
        points = inputs.unsqueeze(0).expand((num_samples,) + tuple(inputs.shape)).clone().requires_grad_(True)
        logits = sample_logits(forward, points, args)
        if fullgrad:
            check_record_rows(records, inputs.shape[0], num_samples)
        yield logits.detach()
        wrt = [points] + [record.output for record in records]
        for start, stop, gradients in class_gradient_chunks(logits, wrt, classes_per_pass):
            input_term = gradients[0] if path == "grad" else gradients[0] * inputs
            if fullgrad:
                input_term = fullgrad_relevances(input_term, records, gradients[1:], fullgrad_postprocess)
            yield start, stop, input_term.detach()


def sample_logits(forward: UncertaintyForward, points: Tensor, args: Tuple[Any, ...] = ()) -> Tensor:
    """Sample ``s``'s logits on ``points[s]`` (and its share of ``args``): raw outputs, or
    log-probabilities for probability members."""
    outputs = forward.class_outputs(
        forward.posterior.forward_per_sample(points, *expand_to_samples(args, points.shape[0]))
    )
    if forward.probabilities:
        return torch.log(outputs.clamp_min(torch.finfo(outputs.dtype).tiny))
    return outputs


#: A path for :func:`path_relevances`: the path function, its nodes and weights, and the
#: displacement that multiplies the integral (``x - x0`` for a straight path, ``None`` when the
#: velocity is part of the path).
RelevancePath = Tuple[Any, Tensor, Tensor, Optional[Tensor]]


def straight_paths(inputs: Tensor, baselines: Any, method: str, n_steps: int) -> List[RelevancePath]:
    """Eq. 22's straight paths from each reference (two for ``"black_white"``)."""
    nodes, weights = quadrature(method, n_steps, inputs)
    return [
        (straight_path((inputs,), reference), nodes, weights, inputs - reference[0])
        for reference in format_baselines(baselines, (inputs,))
    ]


def scale_space_path(inputs: Tensor, max_sigma: Optional[float], n_steps: int) -> List[RelevancePath]:
    """Blur IG's path from ``gaussian_blur(x, max_sigma)`` to ``x``: Riemann steps of width ``d sigma``."""
    if max_sigma is None:
        max_sigma = default_max_sigma(inputs.shape[2], inputs.shape[3])
    if isinstance(max_sigma, bool) or not isinstance(max_sigma, (int, float)) or not 0 < max_sigma < float("inf"):
        raise ValueError(f"max_sigma must be a finite number > 0, got {max_sigma!r}")
    sigmas = blur_levels(float(max_sigma), n_steps, device=inputs.device)
    widths = (sigmas[1:] - sigmas[:-1]).to(inputs.dtype)
    return [(blur_path((inputs,), BLUR_GRAD_STEP), sigmas[:-1], widths, None)]


def path_relevances(
    forward: UncertaintyForward,
    inputs: Tensor,
    args: Tuple[Any, ...],
    paths: Sequence[RelevancePath],
    internal_batch_size: Optional[int],
    classes_per_pass: Optional[int],
) -> RelevanceChunks:
    """Path-integrated relevances of every class logit of every sample, by the path engine:
    ``int dz_i^s/dx . gamma'`` (times ``x - x0`` for straight paths), averaged over the paths.

    Yields the logits at ``x``, then one chunk with all classes.
    """
    num_samples, batch = forward.posterior.num_samples, inputs.shape[0]
    with torch.no_grad():
        logits = sample_logits(forward, inputs.unsqueeze(0).expand((num_samples,) + tuple(inputs.shape)), args)
    yield logits
    num_classes = logits.shape[-1]

    def class_gradients(points: Tuple[Tensor, ...], count: int) -> List[Tuple[Tensor, ...]]:
        (flat,) = points
        stacked = flat.unsqueeze(0).expand((num_samples,) + tuple(flat.shape)).clone().requires_grad_(True)
        with torch.enable_grad():
            path_logits = sample_logits(forward, stacked, repeat_batch_args(args, batch, count))
            chunks = [gradient for _, _, (gradient,) in class_gradient_chunks(path_logits, [stacked], classes_per_pass)]
        return [(torch.cat(chunks),)]  # (C, S, count * N, ...)

    relevance = torch.zeros((num_classes, num_samples) + tuple(inputs.shape), dtype=inputs.dtype, device=inputs.device)
    for path_function, nodes, weights, displacement in paths:
        ((integral,),) = integrate_path(path_function, class_gradients, nodes, weights, batch, internal_batch_size)
        relevance += (integral if displacement is None else integral * displacement) / len(paths)
    yield 0, num_classes, relevance
