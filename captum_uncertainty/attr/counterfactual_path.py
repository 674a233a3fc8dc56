"""Counterfactual-path Integrated Gradients of uncertainty (Perez et al., 2022)."""

from __future__ import annotations

import warnings
from typing import Any, Callable, Dict, List, Literal, NamedTuple, Optional, Tuple, Union, overload

import torch
from captum.attr import GradientAttribution
from captum.log import log_usage
from torch import Tensor
from torch.func import jvp

from captum_uncertainty._validation import check_choice
from captum_uncertainty.attr._utils.checks import check_classifier_forward
from captum_uncertainty.attr._utils.counterfactual import (
    check_counterfactual_inputs,
    clue_search,
    clue_settings,
)
from captum_uncertainty.attr._utils.fiducial_search import (
    SUPPORTED_CLASS_LOSSES,
    Fiducials,
    FiducialWarning,
    in_class_fiducials,
    reconstruction_latents,
    reference_in_class_settings,
    warn_about_invalid_fiducials,
)
from captum_uncertainty.attr._utils.formatting import TargetType, additional_args_tuple
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
FiducialType = Union[str, Tensor]


class _Search(NamedTuple):
    """The fiducials and what finding them computed, so that nothing is computed twice."""

    fiducials: Fiducials
    codes: Tensor
    at_inputs: Dict[str, Tensor]
    at_fiducials: Dict[str, Tensor]

    def ends(self, measures: Tuple[str, ...]) -> List[Tuple[Tensor, Tensor]]:
        """Each measure at the inputs and at the fiducials."""
        return [(self.at_inputs[measure], self.at_fiducials[measure]) for measure in measures]


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
        return self._attribute(
            inputs,
            fiducial,
            target,
            additional_forward_args,
            n_steps,
            method,
            internal_batch_size,
            return_convergence_delta,
            decompose,
            return_fiducial,
            fiducial_kwargs or {},
            latent_end,
        )

    def _attribute(
        self,
        inputs: Tensor,
        fiducial: FiducialType,
        target: TargetType,
        additional_forward_args: Any,
        n_steps: int,
        method: str,
        internal_batch_size: Optional[int],
        return_convergence_delta: bool,
        decompose: bool,
        return_fiducial: bool,
        fiducial_kwargs: Dict[str, Any],
        latent_end: str,
    ) -> Any:
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
        search = self._search(inputs, fiducial, fiducial_kwargs, args)
        found = search.fiducials
        warn_about_invalid_fiducials(found)
        latents = search.codes
        if latent_end == "refined":
            latents = reconstruction_latents(self.generative_model, inputs, start=search.codes)
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
        if target is None:
            ends = search.ends(measures)
        else:
            ends = self._target_ends(inputs, found.images, args, measures, target)
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

    def _target_ends(
        self, inputs: Tensor, images: Tensor, args: Tuple[Any, ...], measures: Tuple[str, ...], target: TargetType
    ) -> List[Tuple[Tensor, Tensor]]:
        """Each measure's class term (``target``) at the inputs and at the fiducials."""
        with torch.no_grad():
            at_inputs = uncertainty_values(self.forward_func, (inputs,), args, measures, target)
            at_fiducials = uncertainty_values(self.forward_func, (images,), args, measures, target)
        return list(zip(at_inputs, at_fiducials))

    def fiducials(self, inputs: Tensor, fiducial: FiducialType = "clue", **search_kwargs: Any) -> Fiducials:
        """The fiducial of each input, with both uncertainties and both predicted classes."""
        return self._search(check_counterfactual_inputs(inputs), fiducial, search_kwargs, ()).fiducials

    def _search(
        self, inputs: Tensor, fiducial: FiducialType, search_kwargs: Dict[str, Any], args: Tuple[Any, ...]
    ) -> "_Search":
        """The fiducials with what finding them computed: the encoder's codes of the inputs and the
        posterior's summary at the inputs and at the fiducials, each from one pass."""
        forward: UncertaintyForward = self.forward_func
        with torch.no_grad():
            codes = encode_inputs(self.generative_model, inputs)
            at_inputs = forward.summary(inputs, *args)
        at_fiducials: Optional[Dict[str, Tensor]] = None
        if isinstance(fiducial, Tensor):
            if search_kwargs:
                raise ValueError("fiducial_kwargs apply to a fiducial search; a tensor fiducial takes none")
            latents = self.fiducial_latents(fiducial, inputs, codes.shape[1])
        elif check_choice(fiducial, "fiducial", SUPPORTED_FIDUCIALS, extra="or a tensor") == "clue":
            settings = clue_settings(**search_kwargs)
            clue = clue_search(forward, self.generative_model, inputs, settings, codes, at_inputs=at_inputs)
            (latents, images), at_fiducials = clue[0][:2], clue[1]
        else:
            classes = at_inputs["predicted"]
            latents = in_class_fiducials(
                forward, self.generative_model, inputs, **search_kwargs, start=codes, classes=classes
            )
        if at_fiducials is None:
            with torch.no_grad():
                images = decode_latents(self.generative_model, latents, inputs)
                at_fiducials = forward.summary(images, *args)
        measure = forward.measure
        found = Fiducials(
            latents.detach(),
            images,
            at_fiducials[measure],
            at_inputs[measure],
            at_inputs["predicted"],
            at_fiducials["predicted"],
        )
        return _Search(found, codes, at_inputs, at_fiducials)

    def fiducial_latents(self, fiducial: Tensor, inputs: Tensor, dimension: Optional[int] = None) -> Tensor:
        """A tensor fiducial as latent codes ``(N, D)``: images of the inputs' shape are encoded,
        one code ``(D,)`` is repeated; ``dimension``, the latent size, when the caller knows it."""
        if fiducial.shape == inputs.shape:
            with torch.no_grad():
                return encode_inputs(self.generative_model, fiducial.detach().to(inputs))
        if dimension is None:
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
