"""UA-Backprop's pieces (Wang et al., 2023): the Eq. 4-8 logit shares, the Eq. 10 pixel
distribution and the relevance generators of the z -> x paths."""

from __future__ import annotations

import math
import warnings
from contextlib import contextmanager, nullcontext
from typing import Any, ContextManager, Dict, Generator, Iterator, List, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from captum_uncertainty._hooks import temporary_hooks
from captum_uncertainty._validation import check_positive_number
from captum_uncertainty.attr._utils.formatting import TargetType, format_baselines, repeat_batch_args
from captum_uncertainty.attr._utils.gradients import (
    captured_layer_outputs,
    check_record_rows,
    class_gradient_chunks,
    fullgrad_relevances,
)
from captum_uncertainty.attr._utils.path import (
    BLUR_IG_METHOD,
    blur_path,
    blur_quadrature,
    default_max_sigma,
    integrate_path,
    quadrature,
    select_class,
    straight_path,
)
from captum_uncertainty.forward import UncertaintyForward, per_class_uncertainty
from captum_uncertainty.posterior import Posterior, tensor_output

__all__ = [
    "COST_WARNING_FACTOR",
    "PATH_INTEGRALS",
    "PROGRESS_DISABLE",
    "progress_bar",
    "warn_if_costly",
    "BLUR_GRAD_STEP",
    "RELEVANCE_NUMBERS_PER_CHUNK",
    "RelevanceChunks",
    "RelevancePath",
    "class_relevances",
    "logit_uncertainties",
    "bounded_path_points",
    "path_relevances",
    "pixel_distribution",
    "scale_space_path",
    "straight_paths",
]

#: Finite-difference step in sigma of the Blur IG path (Blur IG's reference value).
BLUR_GRAD_STEP = 0.01

#: First the logits ``(S, N, C)`` at ``x``, then ``(samples, start, stop, relevance)`` per chunk:
#: the slice of samples and the classes ``[start, stop)`` whose relevance ``(k, S', N, ...)`` it holds.
RelevanceChunks = Generator[Any, None, None]

#: A path for :func:`path_relevances`: the path function, its nodes and weights, and the
#: displacement that multiplies the integral (``x - x0`` for a straight path, ``None`` when the
#: velocity is part of the path).
RelevancePath = Tuple[Any, Tensor, Tensor, Optional[Tensor]]


def _logit_shares(g: Tensor, terms: Tensor, tau1: float, normalize: bool) -> Tensor:
    """``U_{z_i^s} = sum_j c^s_{j->i} U_{g_j}`` of Eq. 8 in closed form: ``(M, S, N, C)``.

    ``g`` are the probabilities ``(S, N, C)``, ``terms`` the per-class terms ``U_{g_j}`` ``(M, N, C)``
    of ``M`` measures (shared by the samples; of any sign: the epistemic term can be negative).
    The share of ``U_{g_j}`` that logit ``z_i`` receives is ``c_{j->i} = softmax_i((dg_j/dz_i) /
    (g_j tau1))`` (Eq. 7-8), and ``dg_j/dz_i / g_j = delta_ij - g_i`` (exact even where ``g_j``
    underflows to 0). The ``C x C`` matrix ``c`` is never formed: every row ``j`` has the same
    numerators ``exp(-g_i / tau1)`` but for the diagonal one, ``exp((1 - g_j) / tau1)``, so with
    the row sums ``D_j = sum_{k != j} exp(-g_k / tau1) + exp((1 - g_j) / tau1)``::

        U_{z_i} = exp(-g_i / tau1) sum_j U_{g_j} / D_j
                  + U_{g_i} (exp((1 - g_i) / tau1) - exp(-g_i / tau1)) / D_i,

    which costs ``O(M S N C)`` time and memory instead of ``O(S N C^2)``. It is evaluated in log
    space, since ``exp(1 / tau1)`` overflows (float32 already for ``tau1 < 0.0113``): ``log D_j``
    comes from one ``logsumexp`` (removing term ``j`` from it costs only rounding in ``D_j``: where
    that term dominates the sum, the term put in its place is ``exp(1 / tau1)`` times larger still),
    and every exponential taken is of a non-positive number: ``-g_i / tau1 - log D_j <= 0`` and
    ``(1 - g_i) / tau1 - log D_i <= 0``. Without normalisation (App. D.7) ``c_{j->i} = dg_j/dz_i
    = g_j (delta_ij - g_i)``, so ``U_{z_i} = g_i (U_{g_i} - sum_j g_j U_{g_j})``.
    """
    terms = terms.unsqueeze(1)  # (M, 1, N, C): shared by the samples
    if not normalize:
        return g * (terms - (g * terms).sum(-1, keepdim=True))
    lower = -g / tau1  # log of the off-diagonal numerators exp(-g_i / tau1)
    upper = (1 - g) / tau1  # log of the diagonal numerators exp((1 - g_i) / tau1)
    log_total = torch.logsumexp(lower, dim=-1, keepdim=True)
    # log sum_{k != j} exp(-g_k / tau1), -inf when nothing is left (C = 1, or term j is all of it)
    removed = torch.exp((lower - log_total).clamp(max=0))
    log_others = log_total + torch.log1p(-removed.clamp(max=1))
    log_rows = torch.logaddexp(log_others, upper)  # log D_j >= (1 - g_j) / tau1 >= 0
    # sum_j U_j exp(-g_i / tau1 - log D_j), factored about the smallest log D_j: both factors <= 1
    pivot = log_rows.min(-1, keepdim=True).values
    row_sum = (terms * torch.exp(pivot - log_rows)).sum(-1, keepdim=True)
    # the diagonal's extra share exp((1 - g_i) / tau1 - log D_i) - exp(-g_i / tau1 - log D_i), as a product
    # (no cancellation for large tau1)
    diagonal = torch.exp(upper - log_rows) * -math.expm1(-1 / tau1)
    return torch.exp(lower - pivot) * row_sum + terms * diagonal


def pixel_distribution(relevance: Tensor, tau2: float, normalize: bool) -> Tensor:
    """psi of Eq. 10: for images ``(B, C, H, W)`` the channel mean, then a softmax over pixels
    with temperature ``tau2``; for inputs of any other shape ``(B, ...)`` (tabular features,
    sequences) the softmax is taken over all features of a row, with no channel mean."""
    mean = relevance.mean(1, keepdim=True) if relevance.dim() == 4 else relevance
    if not normalize:
        return mean
    return torch.softmax(mean.flatten(1) / tau2, dim=1).view_as(mean)


def logit_uncertainties(
    logits: Tensor, tau1: float, normalize: bool, measures: Sequence[str], target: TargetType = None
) -> Tensor:
    """``U_{z_i^s}`` for each measure, shape ``(M, S, N, C)`` (Eq. 4, 5, 8).

    Eq. 4's ``U_{g_j}`` is computed once from all samples (it is a term of the entropy of the
    predictive mean and of the mean member entropy) and shared by every sample ``s``, as the
    paper states below Eq. 4; only the coefficients ``c^s`` are per sample. With ``target``,
    only the target class's term ``U_{g_target}`` is passed on. Eq. 8's sum over ``j`` is taken
    in closed form (:func:`_logit_shares`), in ``O(M S N C)`` memory: the ``(S, N, C, C)``
    coefficients are never formed.
    """
    logits = logits.detach()
    # the logits come from UncertaintyForward.logits_per_sample, which validated the outputs (when the
    # forward validates) and turned declared probabilities into log p: they are logits here
    per_class = per_class_uncertainty(logits, probabilities=False, validate=False)
    terms: List[Tensor] = [per_class.select(m) for m in measures]
    if target is not None:
        terms = [_only_class(term, target) for term in terms]
    return _logit_shares(torch.softmax(logits, dim=-1), torch.stack(terms), tau1, normalize)


def _only_class(per_class: Tensor, target: TargetType) -> Tensor:
    """``(N, C)`` terms with every column but ``target``'s set to zero."""
    kept = select_class(per_class, target)  # validates target
    index = torch.as_tensor(target, device=per_class.device).reshape(-1, 1).expand(per_class.shape[0], 1)
    return torch.zeros_like(per_class).scatter(1, index, kept.unsqueeze(1))


class _MemberGraphs:
    """Each ensemble member's own input leaf and (tensor) output of one forward, by sample."""

    def __init__(self) -> None:
        self.leaves: Dict[int, Tensor] = {}
        self.outputs: Dict[int, Tensor] = {}


@contextmanager
def _separate_member_graphs(posterior: Posterior, points: Tensor) -> Iterator[_MemberGraphs]:
    """Give each ensemble member its own input leaf, so a backward pass from one member's logits
    runs through that member's graph only, and note each member's output.

    Members read ``points[s]``, views of one leaf, which ties every member's graph to it: a
    backward pass from member ``s``'s logits would also run through the others' graphs (with
    zero gradients), five times the work for five members. Inside the block a forward pre-hook on
    each of the posterior's :meth:`~captum_uncertainty.Posterior.separate_sample_modules` (member
    ``s`` called on ``points[s]``) replaces that view by a detached copy that requires grad, and a
    forward hook keeps the member's output; other posteriors get empty records and run unchanged. Hooks are removed on
    exit, also after an error.
    """
    graphs = _MemberGraphs()
    separate = posterior.separate_sample_modules()
    if separate is None:
        yield graphs
        return

    def own_leaf(_module: nn.Module, args: Tuple[Any, ...]) -> Optional[Tuple[Any, ...]]:
        sample = posterior.current_sample
        if sample is None or sample in graphs.leaves or not args or not isinstance(args[0], Tensor):
            return None
        if args[0]._base is not points:
            return None
        graphs.leaves[sample] = args[0].detach().requires_grad_(True)
        return (graphs.leaves[sample],) + tuple(args[1:])

    def own_output(_module: nn.Module, _args: Tuple[Any, ...], output: Any) -> None:
        sample = posterior.current_sample
        if sample in graphs.leaves and sample not in graphs.outputs:
            graphs.outputs[sample] = tensor_output(output)

    members = {id(m): m for m in separate}.values()
    with temporary_hooks() as hooks:
        for member in members:
            hooks.forward_pre(member, own_leaf)
        for member in members:
            hooks.forward(member, own_output)
        yield graphs


def class_relevances(
    forward: UncertaintyForward,
    inputs: Tensor,
    args: Tuple[Any, ...],
    path: str,
    classes_per_pass: Optional[int],
    fullgrad_postprocess: str = "raw",
) -> RelevanceChunks:
    """First yield the logits ``(S, N, C)`` at ``x``, then ``(samples, start, stop, relevance)`` per chunk.

    ``relevance`` is ``(stop - start, len(samples), N, *input shape)``: the relevance of logit
    ``z_i^s`` for each class ``i`` of the chunk, the samples ``s`` of the slice ``samples`` and
    every input ``n``. One forward runs all samples. For a :class:`DeepEnsemble` (each member its
    own graph, see :func:`_separate_member_graphs`) the backward passes then go member by member,
    one chunk of classes at a time, and each member's graph is freed after its last pass: the
    method's floor, one forward plus ``C`` backward passes per member (taking the classes through
    all members at once, or keeping every member's graph to the end, measured slower with
    FullGrad's layer gradients: ``benchmarks/RESULTS.md``). Other posteriors (one
    graph for all samples, e.g. MC dropout's sample-major batch) take each chunk through all
    samples at once. Each chunk costs one
    backward pass (see :func:`~captum_uncertainty.attr._utils.gradients.class_gradient_chunks`).
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
    capture: ContextManager[Any] = (
        captured_layer_outputs(posterior.sample_modules(), posterior, spatial_only=True)
        if fullgrad
        else nullcontext([])
    )
    points = inputs.unsqueeze(0).expand((num_samples,) + tuple(inputs.shape)).clone().requires_grad_(True)
    with (
        torch.enable_grad(),
        posterior.hookable(),
        capture as records,
        _separate_member_graphs(posterior, points) as graphs,
    ):
        logits = forward.logits_per_sample(points, args)
        if fullgrad:
            check_record_rows(records, inputs.shape[0], num_samples)
        yield logits.detach()
        per_member = bool(graphs.leaves) and all(record.sample is not None for record in records)
        passes = (
            [(slice(s, s + 1), [r for r in records if r.sample == s]) for s in range(num_samples)]
            if per_member
            else [(slice(None), list(records))]
        )
        for number, (samples, chunk_records) in enumerate(passes):
            source = _input_source(graphs.leaves, points, samples)
            wrt = [source] + [record.output for record in chunk_records]
            outputs = _own_logits(forward, graphs, logits, samples)
            # a member's own logits free its graph after its last pass; the shared ones are kept
            keep_graph = outputs is None and number + 1 < len(passes)
            chunks = class_gradient_chunks(
                logits[samples] if outputs is None else outputs, wrt, classes_per_pass, keep_graph
            )
            for start, stop, gradients in chunks:
                input_gradient = _sample_rows(gradients[0], source, points, samples)
                input_term = input_gradient if path == "grad" else input_gradient * inputs
                if fullgrad:
                    first = samples.start or 0
                    input_term = fullgrad_relevances(
                        input_term, chunk_records, gradients[1:], fullgrad_postprocess, first
                    )
                yield samples, start, stop, input_term.detach()


def _own_logits(forward: UncertaintyForward, graphs: _MemberGraphs, logits: Tensor, samples: slice) -> Optional[Tensor]:
    """Member ``s``'s output ``(1, N, C)`` where it is its logits ``logits[s]`` unchanged (no
    binary or probability transform), else ``None``: a backward pass from it touches neither the
    other members' graphs nor the stacked logits, so it may free the member's graph."""
    output = graphs.outputs.get(samples.start) if samples.start is not None else None
    outputs_are_logits = getattr(forward.likelihood, "outputs_are_logits", False)
    if output is None or not outputs_are_logits or output.shape != logits.shape[1:]:
        return None
    return output.unsqueeze(0)


def _input_source(leaves: Dict[int, Tensor], points: Tensor, samples: slice) -> Tensor:
    """What a pass differentiates for the input gradient: the sample's own leaf, else ``points``."""
    if samples.start is not None and samples.start in leaves:
        return leaves[samples.start]
    return points


def _sample_rows(gradient: Tensor, source: Tensor, points: Tensor, samples: slice) -> Tensor:
    """The input gradient ``(k, len(samples), N, ...)`` of a pass from its source's gradient."""
    if source is points:
        return gradient[:, samples]
    return gradient.unsqueeze(1)  # one member's leaf: (k, N, ...)


def straight_paths(inputs: Tensor, baselines: Any, method: str, n_steps: int) -> List[RelevancePath]:
    """Eq. 22's straight paths from each reference (two for ``"black_white"``)."""
    nodes, weights = quadrature(method, n_steps, inputs)
    return [
        (straight_path((inputs,), reference), nodes, weights, inputs - reference[0])
        for reference in format_baselines(baselines, (inputs,))
    ]


def scale_space_path(inputs: Tensor, max_sigma: Optional[float], n_steps: int) -> List[RelevancePath]:
    """Blur IG's path from ``gaussian_blur(x, max_sigma)`` to ``x``, integrated by Blur IG's
    default rule (:data:`~captum_uncertainty.attr._utils.path.BLUR_IG_METHOD`, the right Riemann
    sum: ``n_steps`` cells of width ``d sigma``, each evaluated at its larger ``sigma``)."""
    if max_sigma is None:
        max_sigma = default_max_sigma(inputs.shape[2], inputs.shape[3])
    check_positive_number(max_sigma, "max_sigma", allow_inf=False)
    nodes, weights = blur_quadrature(float(max_sigma), n_steps, BLUR_IG_METHOD, device=inputs.device)
    return [(blur_path((inputs,), BLUR_GRAD_STEP), nodes, weights.to(inputs.dtype), None)]


#: Numbers the class gradients of one chunk of path points may hold when ``internal_batch_size``
#: is not given (``C x S x points x features``; 2**25 is 128 MB in float32): without a bound they
#: grew to 18.5 GB at C = 1000 (``benchmarks/RESULTS.md``).
RELEVANCE_NUMBERS_PER_CHUNK = 2**25


def bounded_path_points(num_classes: int, num_samples: int, inputs: Tensor) -> int:
    """The default ``internal_batch_size`` of UA-Backprop's path integrals: as many path points
    as keep one chunk's class gradients within :data:`RELEVANCE_NUMBERS_PER_CHUNK` numbers, and
    at least one step of the whole batch."""
    per_point = num_classes * num_samples * inputs[0].numel()
    return max(inputs.shape[0], RELEVANCE_NUMBERS_PER_CHUNK // per_point)


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
        logits = forward.logits_per_sample(inputs.unsqueeze(0).expand((num_samples,) + tuple(inputs.shape)), args)
    yield logits
    num_classes = logits.shape[-1]
    if internal_batch_size is None:
        internal_batch_size = bounded_path_points(num_classes, num_samples, inputs)

    points_total = sum(len(nodes) for _, nodes, _, _ in paths)
    progress = progress_bar(num_classes * points_total, points_total, "UABackprop path points")

    def class_gradients(points: Tuple[Tensor, ...], count: int) -> List[Tuple[Tensor, ...]]:
        (flat,) = points
        stacked = flat.unsqueeze(0).expand((num_samples,) + tuple(flat.shape)).clone().requires_grad_(True)
        with torch.enable_grad():
            path_logits = forward.logits_per_sample(stacked, repeat_batch_args(args, batch, count))
            chunks = [gradient for _, _, (gradient,) in class_gradient_chunks(path_logits, [stacked], classes_per_pass)]
        if progress is not None:
            progress.update(count)
        return [(torch.cat(chunks),)]  # (C, S, count * N, ...)

    relevance = torch.zeros((num_classes, num_samples) + tuple(inputs.shape), dtype=inputs.dtype, device=inputs.device)
    try:
        for path_function, nodes, weights, displacement in paths:
            ((integral,),) = integrate_path(path_function, class_gradients, nodes, weights, batch, internal_batch_size)
            relevance += (integral if displacement is None else integral * displacement) / len(paths)
    finally:
        if progress is not None:
            progress.close()
    yield slice(None), 0, num_classes, relevance


#: UA-Backprop's expected cost, in backward passes of the posterior over the batch, at which it
#: warns: this many times Blur IG's default call (50 steps, one backward pass of ``U`` each).
COST_WARNING_FACTOR = 20
BLUR_IG_DEFAULT_STEPS = 50


#: The UA-Backprop paths that integrate every class logit along a path.
PATH_INTEGRALS = ("integrated_gradients", "blur_integrated_gradients")

#: ``disable`` of UA-Backprop's progress bar on costly calls: ``None`` lets tqdm show it only when
#: stderr is a terminal (not in logs or tests).
PROGRESS_DISABLE: Optional[bool] = None


def _backward_passes(num_classes: int, path: str, n_steps: int) -> int:
    """UA-Backprop's backward passes of the posterior over the batch: one per class, and per path
    point on the path integrals."""
    return num_classes * (n_steps if path in PATH_INTEGRALS else 1)


def _is_costly(passes: int) -> bool:
    return passes / BLUR_IG_DEFAULT_STEPS >= COST_WARNING_FACTOR


def progress_bar(passes: int, total: int, description: str) -> Any:
    """A tqdm bar of ``total`` units for a call of ``passes`` backward passes costly enough to warn
    about (:func:`warn_if_costly`), or ``None`` for a short call; the caller updates and closes it."""
    if not _is_costly(passes):
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=description, disable=PROGRESS_DISABLE, leave=False)


def warn_if_costly(num_classes: int, path: str, n_steps: int) -> None:
    """One warning when UA-Backprop costs ``COST_WARNING_FACTOR`` times Blur IG's default call or
    more: one backward pass per class (per path point on the path integrals) against Blur IG's one
    per step, naming the cheaper method."""
    passes = _backward_passes(num_classes, path, n_steps)
    factor = passes / BLUR_IG_DEFAULT_STEPS
    if _is_costly(passes):
        per = "class and path point" if passes > num_classes else "class"
        warnings.warn(
            f"UABackprop(path={path!r}) runs one backward pass per {per} ({passes} passes of the posterior "
            f"here, C = {num_classes}), about {factor:.0f}x "
            f"BlurIntegratedGradients' default call ({BLUR_IG_DEFAULT_STEPS} passes); for a cheaper map of the same "
            "uncertainty use BlurIntegratedGradients(uf) or UncertaintyIntegratedGradients(uf), or UABackprop's "
            "path='grad' / 'inputgrad' (one pass per class)",
            UserWarning,
            stacklevel=5,
        )
