"""Counterfactual-path Integrated Gradients of uncertainty (Perez et al., 2022)."""

from __future__ import annotations

import warnings
from typing import Any, Callable, Dict, Literal, NamedTuple, Optional, Tuple, Union, overload

import torch
from captum.attr import GradientAttribution
from captum.log import log_usage
from torch import Tensor
from torch.func import jvp

from captum_uncertainty._validation import check_choice, check_non_negative_number
from captum_uncertainty.attr._utils.checks import check_classifier_forward
from captum_uncertainty.attr._utils.counterfactual import check_counterfactual_inputs, clue_search, clue_settings
from captum_uncertainty.attr._utils.formatting import TargetType, additional_args_tuple
from captum_uncertainty.attr._utils.latent_search import (
    LossNotDecreasing,
    class_averaged_bce,
    class_cross_entropy,
    reconstruction_loss,
    search_latents,
)
from captum_uncertainty.attr._utils.path import (
    bounded_internal_batch_size,
    integrate_path,
    quadrature,
    straight_path,
    uncertainty_gradients,
    uncertainty_values,
)
from captum_uncertainty.attr._utils.results import decomposed
from captum_uncertainty.forward import Decomposition, UncertaintyForward
from captum_uncertainty.generative.protocol import (
    LatentGenerativeModel,
    check_generative_model,
    check_latents,
    decode_latents,
    encode_inputs,
)

__all__ = [
    "CounterfactualPathIG",
    "CounterfactualPathResult",
    "CounterfactualPathResultWithDelta",
    "Fiducials",
    "FiducialWarning",
    "SUPPORTED_CLASS_LOSSES",
    "SUPPORTED_FIDUCIALS",
    "SUPPORTED_LATENT_ENDS",
    "in_class_fiducials",
    "reconstruction_latents",
    "reference_in_class_settings",
]

SUPPORTED_FIDUCIALS = ("clue", "in_class")
SUPPORTED_LATENT_ENDS = ("encoder", "refined")
SUPPORTED_CLASS_LOSSES = ("cross_entropy", "class_averaged_bce")
FiducialType = Union[str, Tensor]


class FiducialWarning(UserWarning):
    """A counterfactual fiducial changed the predicted class or did not lower the uncertainty."""


class Fiducials(NamedTuple):
    """The path's starting points and what they say about the search.

    Attributes:
        latents (Tensor): fiducial latent codes ``z_f`` ``(N, D)``.
        images (Tensor): ``dec(z_f)``, the inputs' shape.
        uncertainty (Tensor): the forward's measure at ``dec(z_f)`` ``(N,)``.
        input_uncertainty (Tensor): the same measure at the inputs ``(N,)``.
        input_class (Tensor): the posterior predictive's class at the inputs ``(N,)``.
        fiducial_class (Tensor): its class at ``dec(z_f)`` ``(N,)``.
    """

    latents: Tensor
    images: Tensor
    uncertainty: Tensor
    input_uncertainty: Tensor
    input_class: Tensor
    fiducial_class: Tensor

    @property
    def valid(self) -> Tensor:
        """``(N,)`` bool: the fiducial keeps the predicted class and lowers the uncertainty."""
        return (self.fiducial_class == self.input_class) & (self.uncertainty < self.input_uncertainty)


class CounterfactualPathResult(NamedTuple):
    """:meth:`~captum_uncertainty.CounterfactualPathIG.attribute` with ``return_fiducial=True`` (no convergence delta).

    Unpacks as ``attributions, fiducials = ...``; :attr:`delta` is ``None``.

    Attributes:
        attributions (Tensor or Decomposition): the attributions.
        fiducials (Fiducials): the path's starting points.
    """

    attributions: Any
    fiducials: Fiducials

    @property
    def delta(self) -> None:
        """No convergence delta was asked for."""
        return None


class CounterfactualPathResultWithDelta(NamedTuple):
    """:meth:`~captum_uncertainty.CounterfactualPathIG.attribute` with ``return_fiducial=True`` and
    ``return_convergence_delta=True``.

    Unpacks as ``attributions, delta, fiducials = ...``.

    Attributes:
        attributions (Tensor or Decomposition): the attributions.
        delta (Tensor or Decomposition): the convergence delta ``(N,)``.
        fiducials (Fiducials): the path's starting points.
    """

    attributions: Any
    delta: Any
    fiducials: Fiducials


class CounterfactualPathIG(GradientAttribution):
    r"""Integrated Gradients of uncertainty along a counterfactual, on-manifold path (Perez et al., 2022).

    Plain IG of the entropy starts from a black image, itself very uncertain, and walks through
    impossible images. This method starts from a *counterfactual fiducial*: a latent code
    ``z_f`` whose decoding ``dec(z_f)`` resembles ``x``, keeps its predicted class and is nearly
    certain; it integrates the gradient of the uncertainty ``U`` along the decoded straight
    line of the latent space

    .. math:: \gamma(\alpha) = \mathrm{dec}(z_f + \alpha (z_x - z_f)), \quad \alpha \in [0, 1],

    where ``z_x`` is the encoder's code of ``x``, and then along the straight pixel-space
    segment from ``dec(z_x)`` to ``x`` (the reconstruction gap), so that completeness holds
    exactly in the limit:

    .. math:: \sum_i A_i = \int_0^1 \nabla U(\gamma) \cdot \gamma'\, d\alpha
              + \int_0^1 \nabla U(\cdot) \cdot (x - \mathrm{dec}(z_x))\, d\beta
              = U(x) - U(\mathrm{dec}(z_f)).

    The path derivative ``gamma'(alpha) = J_dec(z_alpha) (z_x - z_f)`` is one forward-mode
    Jacobian-vector product of the decoder per point (``torch.func.jvp``), never a full Jacobian.
    Both segments use the same quadrature (the midpoint rule by default, as in the paper) with
    ``n_steps`` points each; all points of all inputs are batched (``internal_batch_size`` caps
    the path points per pass).

    Fiducials (``fiducial=``):

    * ``"clue"``: :class:`~captum_uncertainty.CLUE`'s counterfactual for the forward's measure;
    * ``"in_class"``: the Featurespace reference code's search: minimise
      ``BCE(dec(z), x) + c * CE(y_hat, p(dec(z))) + 0.5 ||z||^2`` from the encoder's code, where
      ``y_hat`` is the class the posterior predictive assigns to ``x``, BCE is summed over the
      input elements (so inputs must lie in [0, 1]), CE is the posterior predictive's
      cross-entropy and ``c`` (``class_weight``) is large (default 1000: with the summed BCE of a
      28x28 digit near 100 nats, c = 100 left our MNIST ensemble's fiducials at about a third of
      the inputs' entropy, c = 1000 at about a tenth); Adam with learning rate
      0.01, stopping per input once the loss stops decreasing (no improvement larger than
      ``tolerance`` for ``patience`` iterations);
    * a tensor: latent codes ``(N, D)`` (or one ``(D,)`` code for all), or images of the inputs'
      shape, which are encoded.

    A fiducial must keep the predicted class and have a lower uncertainty than ``x``; when it
    does not, a :class:`~captum_uncertainty.attr.FiducialWarning` names the inputs concerned
    (the attribution is still computed from it, and complete with respect to it: never a silent
    fallback). ``return_fiducial=True`` returns the :class:`~captum_uncertainty.attr.Fiducials`
    with both uncertainties (see :meth:`attribute` for the result's form).

    Args:
        forward_func (UncertaintyForward): the uncertainty to explain.
        generative_model (LatentGenerativeModel): encoder/decoder pair whose decoder outputs
            inputs of ``x``'s shape, e.g. a trained :class:`~captum_uncertainty.generative.VAE`.

    Examples::

        >>> vae = train_vae(VAE(image_shape=(1, 28, 28), latent_dim=32), images, epochs=20)
        >>> cpig = CounterfactualPathIG(UncertaintyForward(models, measure="total"), vae)
        >>> attr, delta = cpig.attribute(x, fiducial="clue", n_steps=50,
        ...                              return_convergence_delta=True)
        >>> total, aleatoric, epistemic = cpig.attribute(x, fiducial="in_class", decompose=True)
    """

    def __init__(self, forward_func: UncertaintyForward, generative_model: Optional[LatentGenerativeModel]) -> None:
        super().__init__(
            check_classifier_forward(
                forward_func,
                "CounterfactualPathIG",
                "a classifier's predicted class (the fiducial's cross-entropy term)",
            )
        )
        self.generative_model = check_generative_model(generative_model, type(self).__name__)

    @property
    def multiplies_by_inputs(self) -> bool:
        return True

    def has_convergence_delta(self) -> bool:
        return True

    @overload
    def attribute(
        self,
        inputs: Tensor,
        fiducial: FiducialType = "clue",
        target: TargetType = None,
        additional_forward_args: Any = None,
        n_steps: int = 50,
        method: str = "riemann_middle",
        internal_batch_size: Optional[int] = None,
        return_convergence_delta: Literal[False] = False,
        *,
        decompose: Literal[False] = False,
        return_fiducial: Literal[False] = False,
        fiducial_kwargs: Optional[Dict[str, Any]] = None,
        latent_end: str = "encoder",
    ) -> Tensor: ...

    @overload
    def attribute(
        self,
        inputs: Tensor,
        fiducial: FiducialType = "clue",
        target: TargetType = None,
        additional_forward_args: Any = None,
        n_steps: int = 50,
        method: str = "riemann_middle",
        internal_batch_size: Optional[int] = None,
        *,
        return_convergence_delta: Literal[True],
        decompose: Literal[False] = False,
        return_fiducial: Literal[False] = False,
        fiducial_kwargs: Optional[Dict[str, Any]] = None,
        latent_end: str = "encoder",
    ) -> Tuple[Tensor, Tensor]: ...

    @overload
    def attribute(
        self,
        inputs: Tensor,
        fiducial: FiducialType = "clue",
        target: TargetType = None,
        additional_forward_args: Any = None,
        n_steps: int = 50,
        method: str = "riemann_middle",
        internal_batch_size: Optional[int] = None,
        return_convergence_delta: Literal[False] = False,
        *,
        decompose: Literal[True],
        return_fiducial: Literal[False] = False,
        fiducial_kwargs: Optional[Dict[str, Any]] = None,
        latent_end: str = "encoder",
    ) -> Decomposition: ...

    @overload
    def attribute(
        self,
        inputs: Tensor,
        fiducial: FiducialType = "clue",
        target: TargetType = None,
        additional_forward_args: Any = None,
        n_steps: int = 50,
        method: str = "riemann_middle",
        internal_batch_size: Optional[int] = None,
        *,
        return_convergence_delta: Literal[True],
        decompose: Literal[True],
        return_fiducial: Literal[False] = False,
        fiducial_kwargs: Optional[Dict[str, Any]] = None,
        latent_end: str = "encoder",
    ) -> Tuple[Decomposition, Decomposition]: ...

    @overload
    def attribute(
        self,
        inputs: Tensor,
        fiducial: FiducialType = "clue",
        target: TargetType = None,
        additional_forward_args: Any = None,
        n_steps: int = 50,
        method: str = "riemann_middle",
        internal_batch_size: Optional[int] = None,
        return_convergence_delta: Literal[False] = False,
        *,
        decompose: bool = False,
        return_fiducial: Literal[True],
        fiducial_kwargs: Optional[Dict[str, Any]] = None,
        latent_end: str = "encoder",
    ) -> CounterfactualPathResult: ...

    @overload
    def attribute(
        self,
        inputs: Tensor,
        fiducial: FiducialType = "clue",
        target: TargetType = None,
        additional_forward_args: Any = None,
        n_steps: int = 50,
        method: str = "riemann_middle",
        internal_batch_size: Optional[int] = None,
        *,
        return_convergence_delta: Literal[True],
        decompose: bool = False,
        return_fiducial: Literal[True],
        fiducial_kwargs: Optional[Dict[str, Any]] = None,
        latent_end: str = "encoder",
    ) -> CounterfactualPathResultWithDelta: ...

    @overload
    def attribute(
        self,
        inputs: Tensor,
        fiducial: FiducialType = "clue",
        target: TargetType = None,
        additional_forward_args: Any = None,
        n_steps: int = 50,
        method: str = "riemann_middle",
        internal_batch_size: Optional[int] = None,
        return_convergence_delta: bool = False,
        *,
        decompose: bool = False,
        return_fiducial: bool = False,
        fiducial_kwargs: Optional[Dict[str, Any]] = None,
        latent_end: str = "encoder",
    ) -> Union[
        Tensor,
        Tuple[Tensor, Tensor],
        Decomposition,
        Tuple[Decomposition, Decomposition],
        CounterfactualPathResult,
        CounterfactualPathResultWithDelta,
    ]: ...

    @log_usage()
    def attribute(
        self,
        inputs: Tensor,
        fiducial: FiducialType = "clue",
        target: TargetType = None,
        additional_forward_args: Any = None,
        n_steps: int = 50,
        method: str = "riemann_middle",
        internal_batch_size: Optional[int] = None,
        return_convergence_delta: bool = False,
        *,
        decompose: bool = False,
        return_fiducial: bool = False,
        fiducial_kwargs: Optional[Dict[str, Any]] = None,
        latent_end: str = "encoder",
    ) -> Union[
        Tensor,
        Tuple[Tensor, Tensor],
        Decomposition,
        Tuple[Decomposition, Decomposition],
        CounterfactualPathResult,
        CounterfactualPathResultWithDelta,
    ]:
        r"""Attribute ``U(x) - U(dec(z_f))`` to the input features.

        The positional arguments follow Captum's ``IntegratedGradients.attribute`` order, the
        fiducial taking the baselines' place; the method's own options are keyword-only.

        Args:
            inputs (Tensor): inputs ``(N, ...)`` to explain (the decoder's output shape).
            fiducial (str or Tensor): the path's start (Captum's baselines slot): ``"clue"``,
                ``"in_class"``, latent codes ``(N, D)`` or ``(D,)``, or images of the inputs'
                shape. Default: ``"clue"``.
            target (int, Tensor or list, optional): ``None`` for the scalar measure (default);
                a class (or one per input) attributes that class's Eq. 4 term instead, as in
                :class:`~captum_uncertainty.UncertaintyIntegratedGradients`.
            additional_forward_args (Any, optional): extra arguments of the posterior's models,
                passed along both segments (per-example tensors repeated over the path). The
                fiducial searches do not take them: pass a tensor ``fiducial`` with them.
            n_steps (int): integration points on each of the two segments (the paper uses 50
                for grayscale and 25 for large images). Default: 50.
            method (str): quadrature rule, ``"riemann_middle"`` (default, the paper's) or any of
                Captum's (``"gausslegendre"``, ``"riemann_left"``, ...).
            internal_batch_size (int, optional): at most this many path points per forward pass
                (at least one step of the whole batch). Default: as many as keep ``S x points x
                numbers per input`` within ``2**24``, as
                :class:`~captum_uncertainty.UncertaintyIntegratedGradients` does; pass a number
                to change it.
            return_convergence_delta (bool): also return
                ``sum(attributions) - (U(x) - U(dec(z_f)))`` per input.
            decompose (bool, keyword only): return a :class:`~captum_uncertainty.Decomposition`
                of total, aleatoric and epistemic attributions (and deltas) from the same passes.
            return_fiducial (bool, keyword only): also return the
                :class:`~captum_uncertainty.attr.Fiducials`.
            fiducial_kwargs (dict, optional, keyword only): settings of the fiducial search (for
                ``"clue"``: the arguments of :meth:`~captum_uncertainty.CLUE.counterfactuals`, i.e.
                the fields of :class:`~captum_uncertainty.ClueSettings` or ``settings=``;
                for ``"in_class"``: those of :func:`~captum_uncertainty.attr.counterfactual_path.in_class_fiducials`;
                :func:`~captum_uncertainty.attr.counterfactual_path.reference_in_class_settings`
                gives the Featurespace reference code's).
            latent_end (str, keyword only): the latent code ``z_x`` the latent segment ends at:
                ``"encoder"`` (default), the encoder's code of ``x``; or ``"refined"``, that code
                optimised for reconstruction as the Featurespace reference code does
                (:func:`~captum_uncertainty.attr.counterfactual_path.reconstruction_latents`),
                which shortens the pixel-space gap segment. Completeness holds either way.

        Returns:
            Tensor or Decomposition: attributions of the inputs' shape, alone by default. With
            ``return_convergence_delta=True`` only, Captum's tuple ``(attributions, delta)``
            (``delta`` ``(N,)``). With ``return_fiducial=True``, a NamedTuple that unpacks by
            position: :class:`~captum_uncertainty.attr.CounterfactualPathResult`
            ``(attributions, fiducials)``, whose ``delta`` is ``None``, or, with
            ``return_convergence_delta=True`` too,
            :class:`~captum_uncertainty.attr.CounterfactualPathResultWithDelta`
            ``(attributions, delta, fiducials)``. Both read ``.attributions``, ``.delta`` and
            ``.fiducials``.

        Examples::

            >>> attr, delta = cpig.attribute(x, return_convergence_delta=True)
            >>> attr, found = cpig.attribute(x, return_fiducial=True)
            >>> result = cpig.attribute(x, return_convergence_delta=True, return_fiducial=True)
            >>> attr, delta, found = result               # or result.attributions, result.delta, ...
        """
        forward: UncertaintyForward = self.forward_func
        inputs = check_counterfactual_inputs(inputs)
        args = additional_args_tuple(additional_forward_args)
        if args and not isinstance(fiducial, Tensor):
            raise ValueError(
                "additional_forward_args are passed along the path, but the fiducial searches run the forward "
                "without them: pass a tensor fiducial (latent codes or images) together with them"
            )
        check_choice(latent_end, "latent_end", SUPPORTED_LATENT_ENDS)
        nodes, weights = quadrature(method, n_steps, inputs)
        found = self.fiducials(inputs, fiducial, **(fiducial_kwargs or {}))
        _warn_about_invalid_fiducials(found)
        if latent_end == "refined":
            latents = reconstruction_latents(self.generative_model, inputs)
        else:
            with torch.no_grad():
                latents = encode_inputs(self.generative_model, inputs)
        with torch.no_grad():
            reconstruction = decode_latents(self.generative_model, latents, inputs)
        measures = ("total", "aleatoric") if decompose else (forward.measure,)
        batch = inputs.shape[0]
        internal_batch_size = bounded_internal_batch_size(forward, (inputs,), internal_batch_size)
        gradients = uncertainty_gradients(forward, args, measures, batch, target)
        latent_part = integrate_path(
            self.decoded_path(found.latents, latents, inputs), gradients, nodes, weights, batch, internal_batch_size
        )
        gap_part = integrate_path(
            straight_path((inputs,), (reconstruction,)), gradients, nodes, weights, batch, internal_batch_size
        )
        attribution = [a + g * (inputs - reconstruction) for (a,), (g,) in zip(latent_part, gap_part)]
        with torch.no_grad():
            ends = zip(
                uncertainty_values(forward, (inputs,), args, measures, target),
                uncertainty_values(forward, (found.images,), args, measures, target),
            )
        deltas = [a.flatten(1).sum(1) - (at_x - at_f) for a, (at_x, at_f) in zip(attribution, ends)]
        parts: Union[Tuple[Tensor, Tensor], Tuple[Decomposition, Decomposition]] = (
            decomposed(attribution, deltas) if decompose else (attribution[0], deltas[0])
        )
        result, delta = parts
        if return_fiducial:
            if return_convergence_delta:
                return CounterfactualPathResultWithDelta(result, delta, found)
            return CounterfactualPathResult(result, found)
        return parts if return_convergence_delta else result

    def fiducials(self, inputs: Tensor, fiducial: FiducialType = "clue", **search_kwargs: Any) -> Fiducials:
        """The fiducial of each input, with both uncertainties and both predicted classes."""
        forward: UncertaintyForward = self.forward_func
        inputs = check_counterfactual_inputs(inputs)
        if isinstance(fiducial, Tensor):
            if search_kwargs:
                raise ValueError("fiducial_kwargs apply to a fiducial search; a tensor fiducial takes none")
            latents = self.fiducial_latents(fiducial, inputs)
        elif check_choice(fiducial, "fiducial", SUPPORTED_FIDUCIALS, extra="or a tensor") == "clue":
            latents = clue_search(forward, self.generative_model, inputs, clue_settings(**search_kwargs)).latents
        else:
            latents = in_class_fiducials(forward, self.generative_model, inputs, **search_kwargs)
        with torch.no_grad():
            images = decode_latents(self.generative_model, latents, inputs)
            at_inputs, at_fiducials = forward.decompose(inputs), forward.decompose(images)
            classes = forward.predicted_class(inputs), forward.predicted_class(images)
        return Fiducials(
            latents.detach(), images, at_fiducials.select(forward.measure), at_inputs.select(forward.measure), *classes
        )

    def fiducial_latents(self, fiducial: Tensor, inputs: Tensor) -> Tensor:
        if fiducial.shape == inputs.shape:
            with torch.no_grad():
                return encode_inputs(self.generative_model, fiducial.detach().to(inputs))
        with torch.no_grad():
            dimension = encode_inputs(self.generative_model, inputs[:1]).shape[1]
        if fiducial.shape == (dimension,):
            fiducial = fiducial.expand(inputs.shape[0], dimension)
        if fiducial.shape != (inputs.shape[0], dimension):
            raise ValueError(
                f"a tensor fiducial must be latent codes ({inputs.shape[0]}, {dimension}) or ({dimension},), "
                f"or images of the inputs' shape {tuple(inputs.shape)}; got {tuple(fiducial.shape)}"
            )
        return check_latents(fiducial.detach().to(inputs), "fiducial").clone()

    def decoded_path(
        self, start: Tensor, end: Tensor, inputs: Tensor
    ) -> Callable[[Tensor], Tuple[Tuple[Tensor, ...], Tuple[Tensor, ...]]]:
        """The path function of the decoded latent line ``gamma(a) = dec(z_f + a (z_x - z_f))``:
        points and derivatives ``gamma'(a) = J_dec (z_x - z_f)`` (one JVP), ``(k * N, ...)`` step-major."""
        direction = end - start

        def points_at(nodes: Tensor) -> Tuple[Tuple[Tensor, ...], Tuple[Tensor, ...]]:
            latents = (start.unsqueeze(0) + nodes.view(-1, 1, 1) * direction.unsqueeze(0)).flatten(0, 1)
            tangents = direction.repeat(len(nodes), 1)
            like = inputs.repeat((len(nodes),) + (1,) * (inputs.dim() - 1))
            with torch.no_grad(), warnings.catch_warnings():
                # torch's first forward-mode AD call loads JIT decompositions and warns about torch.jit
                warnings.filterwarnings("ignore", message=".*torch.jit.script.*deprecated", category=FutureWarning)
                decoded = jvp(lambda z: decode_latents(self.generative_model, z, like), (latents,), (tangents,))
                points, velocities = decoded[0], decoded[1]
            return (points.detach(),), (velocities.detach(),)

        return points_at


def in_class_fiducials(
    forward: UncertaintyForward,
    generative_model: LatentGenerativeModel,
    inputs: Tensor,
    class_weight: float = 1000.0,
    prior_weight: float = 0.5,
    lr: float = 0.01,
    max_iterations: int = 500,
    tolerance: float = 1e-3,
    patience: int = 5,
    class_loss: str = "cross_entropy",
    stopping: Optional[LossNotDecreasing] = None,
) -> Tensor:
    r"""Latent fiducials that keep the predicted class (the Featurespace reference code's search).

    Minimises, per input and from the encoder's code,
    ``BCE(dec(z), x) + class_weight * L_class(y_hat, p(dec(z))) + prior_weight * ||z||^2`` where
    the BCE is summed over the input elements, ``y_hat`` is the posterior predictive's class at
    ``x`` and ``p`` the posterior predictive; Adam, stopping each input once its loss stops
    decreasing (by default the rule of :class:`~captum_uncertainty.CLUE`).

    ``class_loss="cross_entropy"`` (default, weight 1000, see
    :class:`~captum_uncertainty.CounterfactualPathIG`) is ``-log p_{y_hat}``.
    ``class_loss="class_averaged_bce"`` is the reference code's Keras
    ``binary_crossentropy(onehot(y_hat), p)``: the binary cross-entropy of each class's
    probability against the one-hot target, averaged over the ``C`` classes, with the
    probabilities clipped to ``[1e-7, 1 - 1e-7]`` as Keras does. The reference weighs it by
    ``1e4 * H * W`` (:func:`reference_in_class_settings`), about 780 times our default on a
    28x28 digit with 10 classes.

    Args:
        forward (captum_uncertainty.UncertaintyForward): the posterior whose predictive defines
            the class term.
        generative_model (LatentGenerativeModel): the encoder / decoder.
        inputs (Tensor): inputs in ``[0, 1]``.
        class_weight (float): weight of the class term. Default: 1000.
        prior_weight (float): weight of ``||z||^2``. Default: 0.5.
        lr (float): Adam learning rate. Default: 0.01.
        max_iterations (int): most Adam steps per input. Default: 500.
        tolerance, patience (float, int): the default stopping rule (ignored with ``stopping``).
        class_loss (str): ``"cross_entropy"`` (default) or ``"class_averaged_bce"``.
        stopping (captum_uncertainty.attr.LossNotDecreasing, optional): the reference code's
            stopping rule instead.

    Returns:
        Tensor: latent codes ``(N, D)``.
    """
    check_non_negative_number(class_weight, "class_weight")
    check_choice(class_loss, "class_loss", SUPPORTED_CLASS_LOSSES)
    _check_reconstruction_range(inputs, 'fiducial="in_class"')
    with torch.no_grad():
        start = encode_inputs(generative_model, inputs)
        target = forward.predicted_class(inputs)
    class_term = class_cross_entropy if class_loss == "cross_entropy" else class_averaged_bce

    def objective(latents: Tensor, rows: Tensor) -> Tensor:
        images = decode_latents(generative_model, latents, inputs[rows])
        log_mean = forward.log_predictive_mean(images)
        return (
            reconstruction_loss(images, inputs[rows])
            + class_weight * class_term(log_mean, target[rows])
            + prior_weight * latents.square().sum(1)
        )

    search = search_latents(
        objective,
        start,
        lr=lr,
        max_iterations=max_iterations,
        tolerance=tolerance,
        patience=patience,
        stopping=stopping,
    )
    return search.latents


def _check_reconstruction_range(inputs: Tensor, what: str) -> None:
    if inputs.min() < 0 or inputs.max() > 1:
        raise ValueError(f"{what} needs inputs in [0, 1] (its reconstruction term is a binary cross-entropy)")


def reference_in_class_settings(inputs: Tensor) -> Dict[str, Any]:
    """The in-class fiducial search of the Featurespace reference code, as ``fiducial_kwargs``.

    ``class_averaged_bce`` weighted by ``1e4 * H * W`` (its ``constrain_multiplier=1e4`` times
    the image's pixel count), Adam with learning rate 0.01 for at most 2,000 steps, stopped by
    ``LossNotDecreasing(rtol=1e-3)`` (scripts/MNIST/2.evaluation.py and
    uncertainty_library/latent_optimisation.py). One difference remains: we return the
    lowest-loss code each input visited, the reference its last one.

    Examples::

        >>> cpig.attribute(x, fiducial="in_class", fiducial_kwargs=reference_in_class_settings(x),
        ...                latent_end="refined")
    """
    height, width = inputs.shape[-2:]
    return dict(
        class_loss="class_averaged_bce",
        class_weight=1e4 * height * width,
        max_iterations=2000,
        stopping=LossNotDecreasing(rtol=1e-3),
    )


def reconstruction_latents(
    generative_model: LatentGenerativeModel,
    inputs: Tensor,
    prior_weight: float = 0.5,
    lr: float = 0.01,
    max_iterations: int = 2000,
    stopping: Optional[LossNotDecreasing] = None,
) -> Tensor:
    """The encoder's codes refined for reconstruction, as the Featurespace reference code does.

    Minimises ``BCE(dec(z), x) + prior_weight * ||z||^2`` (BCE summed over the input elements)
    from the encoder's code with Adam (learning rate 0.01, at most 2,000 steps), stopping each
    input with ``LossNotDecreasing(atol=1e-3)`` unless ``stopping`` says otherwise; returns the
    lowest-loss code visited, ``(N, D)``.
    """
    _check_reconstruction_range(inputs, 'latent_end="refined"')
    with torch.no_grad():
        start = encode_inputs(generative_model, inputs)

    def objective(latents: Tensor, rows: Tensor) -> Tensor:
        images = decode_latents(generative_model, latents, inputs[rows])
        return reconstruction_loss(images, inputs[rows]) + prior_weight * latents.square().sum(1)

    rule = LossNotDecreasing(atol=1e-3) if stopping is None else stopping
    return search_latents(objective, start, lr=lr, max_iterations=max_iterations, stopping=rule).latents


def _warn_about_invalid_fiducials(found: Fiducials) -> None:
    changed = (found.fiducial_class != found.input_class).nonzero().flatten().tolist()
    higher = (found.uncertainty >= found.input_uncertainty).nonzero().flatten().tolist()
    if changed:
        warnings.warn(
            f"CounterfactualPathIG: the fiducials of inputs {changed} change the predicted class",
            FiducialWarning,
            stacklevel=3,
        )
    if higher:
        warnings.warn(
            f"CounterfactualPathIG: the fiducials of inputs {higher} do not lower the uncertainty "
            "(see return_fiducial=True for both values)",
            FiducialWarning,
            stacklevel=3,
        )
