r"""Layer Integrated Gradients of an ensemble's uncertainty: every member's layer on one path.

Captum's ``LayerIntegratedGradients(uf, layer)`` moves *one* layer's output along the path. An
ensemble's uncertainty ``U`` depends on the layer outputs ``e_1, ..., e_S`` of all ``S`` members
(each member has its own embedding, say), so moving only member 0's embedding explains only the
part of ``U(x) - U(x')`` that runs through member 0. Here all members' layer outputs move
together, ``e_s(a) = e_s(x') + a (e_s(x) - e_s(x'))``, and by the chain rule

.. math:: U(x) - U(x') = \sum_s \int_0^1 \nabla_{e_s} U(e_1(a), \dots, e_S(a)) \cdot
          (e_s(x) - e_s(x')) \, da ,

a sum over members and over the positions of one member's layer output. The attribution is that
sum over members, shaped like one member's layer output.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import (
    Any,
    Callable,
    Dict,
    Iterator,
    List,
    Literal,
    Mapping,
    Optional,
    Sequence,
    Tuple,
    Union,
    overload,
)

import torch
from captum.attr import GradientAttribution
from captum.log import log_usage
from torch import Tensor, nn

from captum_uncertainty._hooks import temporary_hooks
from captum_uncertainty.attr._utils.checks import check_uncertainty_forward
from captum_uncertainty.attr._utils.formatting import (
    BaselineType,
    TargetType,
    TensorsOrMapping,
    additional_args_tuple,
    format_baselines,
    format_inputs,
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
from captum_uncertainty.posterior import Posterior

__all__ = ["LayerUncertaintyForward", "LayerUncertaintyIntegratedGradients"]

#: one module per member, or a function ``member -> module`` applied to every member
LayerSpec = Union[Sequence[nn.Module], Callable[[nn.Module], nn.Module]]
#: ``s -> forward hook`` for member ``s``'s layer
HookFactory = Callable[[int], Callable[[nn.Module, Any, Any], Optional[Tensor]]]


class LayerUncertaintyIntegratedGradients(GradientAttribution):
    r"""Layer Integrated Gradients of an ensemble's uncertainty, all members' layers together.

    For text models (token ids -> embedding -> classifier) and any attribution to a layer's
    output: every member ``s`` of the ensemble has its own layer (``layer[s]``), and the
    uncertainty ``U`` of the :class:`~captum_uncertainty.UncertaintyForward` depends on all of
    them. Forward hooks replace each member's layer output by its point on the straight line
    ``e_s(x') + a (e_s(x) - e_s(x'))`` in that member's layer-output space, *all members at the
    same* ``a``; the gradient of ``U`` with respect to every member's layer output is integrated
    along the path and multiplied by ``e_s(x) - e_s(x')``, and the members' terms are summed.
    As in Captum's :class:`~captum.attr.LayerIntegratedGradients`, ``baselines`` are *inputs*
    (e.g. pad-token ids) whose layer outputs start the path. With one member it computes exactly
    what ``captum.attr.LayerIntegratedGradients(uf, member.layer)`` computes; with several it is
    complete where Captum's single-layer version (one member's layer moved, the others fixed at
    ``x``) is not.

    Properties: completeness (``sum(attributions) = U(x) - U(x')`` up to the quadrature error,
    reported by the convergence delta), for every measure and for each part of ``decompose=True``
    (epistemic = total - aleatoric). Attributions can be negative: a token can also *lower* the
    uncertainty. ``target`` and ``decompose`` work as in
    :class:`~captum_uncertainty.UncertaintyIntegratedGradients`. The user's modules keep no hook,
    flag or ``requires_grad`` change, also when a call raises.

    Args:
        forward_func (UncertaintyForward): the uncertainty to explain; its posterior must run one
            module per sample (a list of members, :class:`~captum_uncertainty.DeepEnsemble` or
            :class:`~captum_uncertainty.WeightSamples`).
        layer (list of nn.Module or callable): one layer per member, in the posterior's order
            (each a submodule of its member, distinct, run once per forward and returning one
            floating tensor of the same shape for every member), or a function
            ``member_module -> layer`` applied to ``forward_func.posterior.sample_modules()``.
        multiply_by_inputs (bool): multiply each member's path-averaged gradient by
            ``e_s(x) - e_s(x')`` (global attribution, Captum's default) or sum the bare
            integrals (local attribution, not complete). Default: ``True``.

    Examples::

        >>> uf = UncertaintyForward(members, measure="epistemic")
        >>> lig = LayerUncertaintyIntegratedGradients(uf, lambda member: member.emb)
        >>> pad = torch.zeros_like(token_ids)
        >>> per_token, delta = lig.attribute(token_ids, baselines=pad, sum_embedding=True,
        ...                                  return_convergence_delta=True)   # (N, L), (N,)
        >>> total, aleatoric, epistemic = lig.attribute(token_ids, pad, decompose=True)
    """

    def __init__(self, forward_func: UncertaintyForward, layer: LayerSpec, multiply_by_inputs: bool = True) -> None:
        super().__init__(check_uncertainty_forward(forward_func))
        self.layers = _resolve_layers(layer, _member_modules(forward_func.posterior))
        self._multiply_by_inputs = multiply_by_inputs

    @property
    def multiplies_by_inputs(self) -> bool:
        return self._multiply_by_inputs

    def has_convergence_delta(self) -> bool:
        return True

    @overload
    def attribute(
        self,
        inputs: TensorsOrMapping,
        baselines: BaselineType = None,
        target: TargetType = None,
        additional_forward_args: Any = None,
        n_steps: int = 50,
        method: str = "gausslegendre",
        internal_batch_size: Optional[int] = None,
        return_convergence_delta: Literal[False] = False,
        *,
        decompose: Literal[False] = False,
        sum_embedding: bool = False,
    ) -> Tensor: ...

    @overload
    def attribute(
        self,
        inputs: TensorsOrMapping,
        baselines: BaselineType = None,
        target: TargetType = None,
        additional_forward_args: Any = None,
        n_steps: int = 50,
        method: str = "gausslegendre",
        internal_batch_size: Optional[int] = None,
        *,
        return_convergence_delta: Literal[True],
        decompose: Literal[False] = False,
        sum_embedding: bool = False,
    ) -> Tuple[Tensor, Tensor]: ...

    @overload
    def attribute(
        self,
        inputs: TensorsOrMapping,
        baselines: BaselineType = None,
        target: TargetType = None,
        additional_forward_args: Any = None,
        n_steps: int = 50,
        method: str = "gausslegendre",
        internal_batch_size: Optional[int] = None,
        return_convergence_delta: Literal[False] = False,
        *,
        decompose: Literal[True],
        sum_embedding: bool = False,
    ) -> Decomposition: ...

    @overload
    def attribute(
        self,
        inputs: TensorsOrMapping,
        baselines: BaselineType = None,
        target: TargetType = None,
        additional_forward_args: Any = None,
        n_steps: int = 50,
        method: str = "gausslegendre",
        internal_batch_size: Optional[int] = None,
        *,
        return_convergence_delta: Literal[True],
        decompose: Literal[True],
        sum_embedding: bool = False,
    ) -> Tuple[Decomposition, Decomposition]: ...

    @overload
    def attribute(
        self,
        inputs: TensorsOrMapping,
        baselines: BaselineType = None,
        target: TargetType = None,
        additional_forward_args: Any = None,
        n_steps: int = 50,
        method: str = "gausslegendre",
        internal_batch_size: Optional[int] = None,
        return_convergence_delta: bool = False,
        *,
        decompose: bool = False,
        sum_embedding: bool = False,
    ) -> Union[Tensor, Tuple[Tensor, Tensor], Decomposition, Tuple[Decomposition, Decomposition]]: ...

    @log_usage()
    def attribute(
        self,
        inputs: TensorsOrMapping,
        baselines: BaselineType = None,
        target: TargetType = None,
        additional_forward_args: Any = None,
        n_steps: int = 50,
        method: str = "gausslegendre",
        internal_batch_size: Optional[int] = None,
        return_convergence_delta: bool = False,
        *,
        decompose: bool = False,
        sum_embedding: bool = False,
    ) -> Union[Tensor, Tuple[Tensor, Tensor], Decomposition, Tuple[Decomposition, Decomposition]]:
        r"""Layer Integrated Gradients of the uncertainty, summed over the members.

        Args:
            inputs (Tensor, tuple of Tensor or mapping): what the members take, ``(N, ...)`` of any
                dtype (e.g. ``LongTensor`` token ids ``(N, L)``); a tuple when they take several; or
                a tokenizer's output (``BatchEncoding``): its first entry (``input_ids``) is attributed and the
                others (``attention_mask``, ...) are passed where the members' ``forward`` takes them
                (:meth:`UncertaintyForward.bind <captum_uncertainty.UncertaintyForward.bind>`).
            baselines (None, scalar, Tensor or tuple): reference *inputs* ``x'`` (e.g. pad-token
                ids): a tensor of the inputs' shape or of one example's shape, a number, or a
                tuple with one per input; ``None`` is zeros of the inputs' dtype. The path runs
                from ``layer[s](x')`` to ``layer[s](x)`` for every member. Default: ``None``.
            target (int, Tensor or list, optional): ``None`` for the scalar measure (default);
                a class (or one per input) for that class's term of Wang et al.'s Eq. 4.
            additional_forward_args (Any, optional): extra arguments of the forward; tensors
                whose first dimension is the batch size are repeated along the path.
            n_steps (int): integration points. Default: 50.
            method (str): ``"gausslegendre"`` (default) or ``"riemann_left"``,
                ``"riemann_right"``, ``"riemann_middle"``, ``"riemann_trapezoid"``.
            internal_batch_size (int, optional): at most this many path points per forward
                pass (at least one step of the whole batch). Default: as many as keep
                ``S x points x numbers per input`` within ``2**24`` (``PATH_NUMBERS_PER_CHUNK`` of
                ``captum_uncertainty.attr._utils.path``: about 5 points of a 3 x 224 x 224 image at
                S = 20), so memory stays bounded on large inputs; pass a number to change it.
            return_convergence_delta (bool): also return ``sum(attributions) - (U(x) - U(x'))``
                per example.
            decompose (bool, keyword only): return a :class:`~captum_uncertainty.Decomposition`
                of total, aleatoric and epistemic attributions instead of the measure's.
            sum_embedding (bool, keyword only): sum the attributions over the layer output's
                last dimension (the embedding dimension): one value per token. Default: ``False``.

        Returns:
            Tensor or Decomposition: attributions shaped like one member's layer output (e.g.
            ``(N, L, D)``; ``(N, L)`` with ``sum_embedding=True``), a ``Decomposition`` of three
            when ``decompose=True``, and the convergence delta ``(N,)`` (a ``Decomposition`` of
            deltas when ``decompose=True``) if requested.
        """
        forward: UncertaintyForward = self.forward_func
        if isinstance(inputs, Mapping):  # a tokenizer's output: token ids plus the members' keyword inputs
            if additional_forward_args is not None:
                raise ValueError(
                    "inputs is a tokenizer's output, which already holds the other forward arguments: leave "
                    "additional_forward_args None"
                )
            inputs, additional_forward_args = forward.bind(inputs)
        tensors, _ = format_inputs(inputs, floating=False)
        args = additional_args_tuple(additional_forward_args)
        measures = ("total", "aleatoric") if decompose else (forward.measure,)
        batch = tensors[0].shape[0]
        at_inputs, values_x = _layer_outputs_and_values(forward, self.layers, tensors, args, measures, target)
        reference = _layer_baselines(baselines, tensors)
        at_baselines, values_b = _layer_outputs_and_values(forward, self.layers, reference, args, measures, target)
        _check_same_shapes(at_inputs, at_baselines)
        nodes, weights = quadrature(method, n_steps, at_inputs[0])
        internal_batch_size = bounded_internal_batch_size(forward, at_inputs[:1], internal_batch_size)
        gradients = uncertainty_gradients(
            LayerUncertaintyForward(forward, self.layers), tensors + args, measures, batch, target
        )
        integrals = integrate_path(
            straight_path(at_inputs, at_baselines), gradients, nodes, weights, batch, internal_batch_size
        )
        maps = [self._member_sum(integral, at_inputs, at_baselines) for integral in integrals]
        deltas = [m.reshape(batch, -1).sum(1) - (x - b) for m, x, b in zip(maps, values_x, values_b)]
        maps = [m.sum(-1) for m in maps] if sum_embedding else maps
        if decompose:
            parts = decomposed(maps, deltas)
            return parts if return_convergence_delta else parts[0]
        return (maps[0], deltas[0]) if return_convergence_delta else maps[0]

    def _member_sum(
        self, integral: Tuple[Tensor, ...], at_inputs: Tuple[Tensor, ...], at_baselines: Tuple[Tensor, ...]
    ) -> Tensor:
        """``sum_s integral_s * (e_s(x) - e_s(x'))`` (or ``sum_s integral_s``)."""
        if self._multiply_by_inputs:
            terms = [g * (e - b) for g, e, b in zip(integral, at_inputs, at_baselines)]
        else:
            terms = list(integral)
        return torch.stack(terms).sum(0)


class LayerUncertaintyForward(UncertaintyForward):
    r"""An uncertainty as a function of its members' layer outputs.

    Called with ``(e_1, ..., e_S, *inputs, *args)``, it runs ``forward`` on ``inputs`` (and
    ``args``) with member ``s``'s layer output replaced by ``e_s`` (forward hooks, removed on
    exit, also after an error). Captum's ``LayerIntegratedGradients`` passes the inputs the same
    way, behind the layer tensors; so the package's path engine differentiates with respect to
    the layer outputs as if they were inputs.

    Args:
        forward (UncertaintyForward): the uncertainty; its posterior, measure and settings are
            shared.
        layers (sequence of nn.Module): one layer per member, in the posterior's order.
    """

    def __init__(self, forward: UncertaintyForward, layers: Sequence[nn.Module]) -> None:
        super().__init__(forward.posterior, forward.measure, **forward.settings())
        self.layers = list(layers)

    def sample_outputs(self, *inputs: Any, **kwargs: Any) -> Tensor:
        if kwargs:
            raise TypeError("LayerUncertaintyForward takes the layer outputs and the inputs positionally")
        count = len(self.layers)
        outputs, member_inputs = inputs[:count], inputs[count:]
        with self.posterior.hookable(), _hooked(self.layers, lambda s: _replacing(outputs[s], s)):
            return super().sample_outputs(*member_inputs)


# ----------------------------------------------------------------------------- layers


def _member_modules(posterior: Posterior) -> List[nn.Module]:
    """The posterior's member modules, one per sample."""
    members = posterior.sample_modules()
    if len(members) != posterior.num_samples:
        raise ValueError(
            f"forward_func must run one module per posterior sample (a list of members, DeepEnsemble or "
            f"WeightSamples) so that every sample has its own layer; its {type(posterior).__name__} runs "
            f"{len(members)} module(s) for {posterior.num_samples} samples"
        )
    return members


def _resolve_layers(layer: LayerSpec, members: Sequence[nn.Module]) -> List[nn.Module]:
    """One distinct layer per member, each a submodule of its member."""
    if isinstance(layer, nn.Module) and not isinstance(layer, nn.ModuleList):
        raise TypeError(
            f"layer must be one module per member ({len(members)}) or a function member -> module, got a single "
            f"{type(layer).__name__}; pass e.g. [m.emb for m in members] or lambda member: member.emb"
        )
    if callable(layer):
        layers = [layer(member) for member in members]
    elif isinstance(layer, (list, tuple, nn.ModuleList)):
        layers = list(layer)
    else:
        raise TypeError(f"layer must be a list of modules or a function member -> module, got {type(layer).__name__}")
    if len(layers) != len(members):
        raise ValueError(f"layer must give one module per member: {len(members)} members, got {len(layers)} layers")
    for s, (module, member) in enumerate(zip(layers, members)):
        _check_member_layer(module, member, s)
    _check_distinct(layers)
    return layers


def _check_member_layer(module: Any, member: nn.Module, s: int) -> None:
    if not isinstance(module, nn.Module):
        raise TypeError(f"layer[{s}] is a {type(module).__name__}, expected an nn.Module of member {s}")
    if not any(sub is module for sub in member.modules()):
        raise ValueError(
            f"layer[{s}] ({type(module).__name__}) is not a submodule of member {s}: layer must list each "
            "member's own layer, in the posterior's order"
        )


def _check_distinct(layers: Sequence[nn.Module]) -> None:
    seen: Dict[int, int] = {}
    for s, module in enumerate(layers):
        if id(module) in seen:
            raise ValueError(
                f"layer[{seen[id(module)]}] and layer[{s}] are the same module: members sharing a layer cannot "
                "move along separate paths; give every member its own layer"
            )
        seen[id(module)] = s


@contextmanager
def _hooked(layers: Sequence[nn.Module], hook_for: HookFactory) -> Iterator[None]:
    """Forward hook ``hook_for(s)`` on ``layers[s]`` while the block runs; removed on exit."""
    with temporary_hooks() as hooks:
        for s, module in enumerate(layers):
            hooks.forward(module, hook_for(s))
        yield


def _replacing(output: Tensor, s: int) -> Callable[[nn.Module, Any, Any], Tensor]:
    """A forward hook returning ``output`` instead of the layer's own output (same shape)."""

    def hook(_module: nn.Module, _inputs: Any, own: Any) -> Tensor:
        if not isinstance(own, Tensor) or own.shape != output.shape:
            shape = tuple(own.shape) if isinstance(own, Tensor) else type(own).__name__
            raise ValueError(f"layer[{s}] returned {shape} on the path, expected {tuple(output.shape)}")
        return output

    return hook


def _layer_outputs_and_values(
    forward: UncertaintyForward,
    layers: Sequence[nn.Module],
    inputs: Tuple[Tensor, ...],
    args: Tuple[Any, ...],
    measures: Sequence[str],
    target: TargetType,
) -> Tuple[Tuple[Tensor, ...], List[Tensor]]:
    """Every member's layer output on ``inputs`` and the measures' values.

    The values come first (they validate the inputs and, once, the posterior); the layer
    outputs are recorded in a separate, plain run of the posterior, in which every member runs
    once.
    """
    records: List[List[Any]] = [[] for _ in layers]

    def recorder(s: int) -> Callable[[nn.Module, Any, Any], None]:
        return lambda _module, _inputs, output: records[s].append(output)

    with torch.no_grad():
        values = uncertainty_values(forward, inputs, args, measures, target)
        with forward.posterior.hookable(), _hooked(layers, recorder):
            forward.posterior(*inputs, *args)
    return tuple(_one_output(outputs, s) for s, outputs in enumerate(records)), values


def _one_output(outputs: List[Any], s: int) -> Tensor:
    """The single floating tensor member ``s``'s layer returned in one forward."""
    if not outputs:
        raise ValueError(
            f"layer[{s}] did not run in the forward of member {s}: layer must list modules the members call"
        )
    if len(outputs) > 1:
        raise ValueError(
            f"layer[{s}] ran {len(outputs)} times in one forward of member {s}; layer must be a module run once"
        )
    output = outputs[0]
    if not isinstance(output, Tensor) or not output.is_floating_point():
        kind = f"dtype {output.dtype}" if isinstance(output, Tensor) else type(output).__name__
        raise ValueError(f"layer[{s}] must return one floating point tensor to move along the path, got {kind}")
    return output.detach()


def _check_same_shapes(at_inputs: Tuple[Tensor, ...], at_baselines: Tuple[Tensor, ...]) -> None:
    """All members' layer outputs, on the inputs and on the baselines, share one shape."""
    shapes = [tuple(t.shape) for t in at_inputs]
    if len(set(shapes)) > 1:
        detail = ", ".join(f"member {s}: {shape}" for s, shape in enumerate(shapes))
        raise ValueError(f"the members' layer outputs differ in shape ({detail}); layer must give outputs of one shape")
    if any(tuple(t.shape) != shapes[0] for t in at_baselines):
        raise ValueError(
            f"the layer outputs of the baselines have shape {tuple(at_baselines[0].shape)}, those of the inputs "
            f"{shapes[0]}; baselines must be inputs of the inputs' shape"
        )


# ----------------------------------------------------------------------------- inputs


def _layer_baselines(baselines: BaselineType, inputs: Tuple[Tensor, ...]) -> Tuple[Tensor, ...]:
    """Reference inputs (one per input, the inputs' shape and dtype); ``None`` is zeros."""
    if isinstance(baselines, str):
        raise ValueError(
            f"baselines must be reference inputs of the members (e.g. pad-token ids), a number or None, got "
            f"{baselines!r}; named baselines are for UncertaintyIntegratedGradients"
        )
    return format_baselines(baselines, inputs)[0]
