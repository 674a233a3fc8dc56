"""Where posterior samples come from.

Every source is a :class:`Posterior`: an ``nn.Module`` whose ``forward(*inputs)`` returns the
raw outputs of its ``S`` samples stacked as ``(S, N, C)`` (logits, or probabilities when the
:class:`~captum_uncertainty.UncertaintyForward` says so). Sources:

* :class:`DeepEnsemble`: a list of member modules, run in a loop or batched with
  ``torch.func.vmap`` (chosen by ``strategy``, see its docstring for the measured trade-off);
* :class:`MCDropout`: one module with ``nn.Dropout`` layers and ``S`` dropout masks sampled once
  (seeded) and reused on every call until :meth:`MCDropout.resample`;
* :class:`MCDropConnect`: one module whose ``nn.Linear`` / ``nn.Conv*`` weights are dropped
  with ``S`` weight masks sampled once (seeded) and reused until :meth:`MCDropConnect.resample`;
* :class:`WeightSamples`: explicit weight samples (state dicts or a model factory);
* :class:`SampleCallable`: any callable that already returns samples, by output layout.

No source ever leaves the user's modules changed: ``training`` flags are restored, temporary
hooks removed and parameters untouched, also when a call raises.
"""

from __future__ import annotations

import copy
import itertools
import json
import time
import warnings
from contextlib import contextmanager
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor, nn

from captum_uncertainty._hashing import new_digest, tensor_sha256, update_with_tensor
from captum_uncertainty._validation import (
    check_choice,
    check_int,
    check_non_negative_number,
    check_optional_positive_int,
    check_positive_int,
)

__all__ = [
    "Posterior",
    "DeepEnsemble",
    "MCDropout",
    "MCDropConnect",
    "WeightSamples",
    "SampleCallable",
    "LAYOUTS",
    # package-internal: used by forward.py, dataset, attribution methods and integrations
    "as_posterior",
    "preserved_modes",
    "first_parameter",
    "expand_to_samples",
    "DROPOUT_TYPES",
    "tensor_output",
    "is_scalar_kl",
]


# ----------------------------------------------------------------------------- helpers


@contextmanager
def preserved_modes(modules: Union[Sequence[nn.Module], nn.ModuleList]) -> Iterator[None]:
    """Run a block with ``modules`` in eval mode, restoring every submodule's flag after."""
    saved = [(sub, sub.training) for module in modules for sub in module.modules()]
    try:
        for module in modules:
            module.eval()
        yield
    finally:
        for sub, flag in saved:
            sub.training = flag


#: Layers whose output is random in training mode, switched off (or made deterministic) by ``eval()``.
_STOCHASTIC_TYPES = (
    nn.Dropout,
    nn.Dropout1d,
    nn.Dropout2d,
    nn.Dropout3d,
    nn.AlphaDropout,
    nn.FeatureAlphaDropout,
    nn.RReLU,
)


def _refuse_active_stochastic_layers(members: Iterable[nn.Module]) -> None:
    """Refuse members in ``train()`` mode whose dropout (or another random layer) is active: the
    forward runs members in eval mode, so it would explain another, deterministic model."""
    for index, member in enumerate(members):
        for name, sub in member.named_modules():
            if sub.training and isinstance(sub, _STOCHASTIC_TYPES) and float(getattr(sub, "p", 1.0)) > 0:
                where = f"{name}: {sub}" if name else str(sub)
                raise ValueError(
                    f"members[{index}] is in train() mode with an active random layer ({where}); the forward runs "
                    "members in eval mode, which would switch it off and explain another, deterministic model. For MC "
                    "dropout wrap the model as MCDropout(model, num_samples=...), which samples frozen masks; for a "
                    "deterministic member call member.eval() first"
                )


def first_parameter(modules: Sequence[nn.Module]) -> Optional[Tensor]:
    """The first floating-point parameter or buffer of ``modules`` (their device and dtype), or ``None``."""
    for module in modules:
        for tensor in itertools.chain(module.parameters(), module.buffers()):
            if tensor.is_floating_point():
                return tensor
    return None


def _check_members_agree(modules: Sequence[nn.Module]) -> None:
    """Every sample module's floating parameters share the first one's dtype and device."""
    reference = first_parameter(modules)
    for index, module in enumerate(modules):
        own = first_parameter([module])
        if reference is None or own is None:
            continue
        if own.dtype != reference.dtype:
            raise TypeError(
                f"the posterior's modules mix dtypes: modules[0] is {reference.dtype}, modules[{index}] is "
                f"{own.dtype}; convert every member to one dtype (e.g. member.to(torch.float32))"
            )
        if own.device != reference.device:
            raise TypeError(
                f"the posterior's modules are on different devices: modules[0] on {reference.device}, "
                f"modules[{index}] on {own.device}; move every member to one device"
            )


def _reads_indices(modules: Sequence[nn.Module]) -> bool:
    """Whether a module reads integer inputs (an embedding lookup), so integer inputs are expected."""
    return any(isinstance(sub, (nn.Embedding, nn.EmbeddingBag)) for module in modules for sub in module.modules())


def _batch_size_of(inputs: Tuple[Any, ...]) -> int:
    for item in inputs:
        if isinstance(item, Tensor) and item.dim() > 0:
            return item.shape[0]
    raise ValueError("inputs must contain at least one tensor with a batch dimension")


def tensor_output(output: Any) -> Any:
    """A Hugging Face ``ModelOutput`` (any object with a tensor ``logits``) as its ``.logits``;
    every other output unchanged."""
    logits = None if isinstance(output, Tensor) else getattr(output, "logits", None)
    return logits if isinstance(logits, Tensor) else output


#: What a posterior sample's raw output is read as when no likelihood says otherwise: a tensor,
#: or a Hugging Face ``ModelOutput``'s ``.logits``.
OutputReader = Callable[[Any], Any]


def _check_member_output(output: Any, index: int, batch_size: int, reader: OutputReader = tensor_output) -> Tensor:
    """A member's output, read by ``reader``, must be an ``(N, K)`` floating tensor (or ``(N,)``: one
    score per input).

    The default reader takes an object with a tensor ``logits`` attribute, such as the
    ``ModelOutput`` a Hugging Face ``transformers`` classifier returns (e.g.
    ``SequenceClassifierOutput``), as its ``.logits``; a likelihood's reader also reads the
    tuples and dicts it declares (a Gaussian's ``(mean, variance)``). Anything else that is not
    a tensor raises ``TypeError``.
    """
    output = reader(output)
    if isinstance(output, (tuple, list, dict)):
        raise TypeError(
            f"posterior sample {index} returned a {type(output).__name__}, expected a (N, C) tensor. A regressor's "
            "(mean, variance) pair or {'loc', 'scale'} dict: UncertaintyForward(..., likelihood=Gaussian(variance="
            "'variance' | 'log_variance' | 'std')) reads it. A Bayesian layer's (output, kl) pair: "
            "captum_uncertainty.integrations.from_bayesian_torch, or SampleCallable(model, layout='output_kl', "
            "num_samples=..., seed=0), which keeps the output and drops kl"
        )
    if not isinstance(output, Tensor):
        raise TypeError(f"posterior sample {index} returned {type(output).__name__}, expected a (N, C) tensor")
    if output.dim() == 1 and output.shape[0] == batch_size:
        return output.unsqueeze(-1)  # one score per input: a binary classifier, (N, 1)
    if output.dim() != 2 or output.shape[0] != batch_size:
        raise ValueError(
            f"posterior sample {index} returned shape {tuple(output.shape)}, expected (N, C) with N = {batch_size}"
        )
    return output


def is_scalar_kl(kl: Any, output: Any) -> bool:
    """Whether the second item of an ``(output, kl)`` pair can be a KL term: not a tensor with
    several elements, nor one with a row per input of ``output``."""
    if not isinstance(kl, Tensor) or kl.dim() == 0:
        return True
    per_input = isinstance(output, Tensor) and output.dim() > 0 and kl.shape[0] == output.shape[0]
    return kl.numel() == 1 and not per_input


def _stack_sample_outputs(outputs: Sequence[Any], batch_size: int, reader: OutputReader = tensor_output) -> Tensor:
    """Read and stack per-sample ``(N, C)`` outputs, checking every sample has the same class count."""
    checked = [_check_member_output(out, s, batch_size, reader) for s, out in enumerate(outputs)]
    classes = [out.shape[1] for out in checked]
    if len(set(classes)) > 1:
        detail = ", ".join(f"sample {s}: C={c}" for s, c in enumerate(classes))
        raise ValueError(f"posterior samples return different class counts ({detail})")
    return torch.stack(checked)


def _per_sample_slices(inputs: Tuple[Any, ...], sample: int) -> Tuple[Any, ...]:
    return tuple(x[sample] if isinstance(x, Tensor) else x for x in inputs)


def _first_row(inputs: Tuple[Any, ...], batch: int) -> Tuple[Any, ...]:
    """Row 0 of every per-example tensor (first dimension ``batch``); other inputs unchanged."""
    return tuple(x[:1] if isinstance(x, Tensor) and x.dim() > 0 and x.shape[0] == batch else x for x in inputs)


def _warn_if_constant(outputs: Tensor, inputs: Tuple[Any, ...], batch: int) -> None:
    """Warn when some sample gives the same output for different inputs: its uncertainty cannot
    depend on the input, so every attribution map of it is zero (e.g. torchvision's ViT, whose
    classification head is initialised to zeros, before training)."""
    if batch < 2:
        return
    differ = any(
        isinstance(x, Tensor) and x.dim() > 0 and x.shape[0] == batch and not torch.equal(x[0], x[1]) for x in inputs
    )
    if not differ:
        return
    constant = [s for s in range(outputs.shape[0]) if torch.equal(outputs[s], outputs[s, :1].expand_as(outputs[s]))]
    if constant:
        warnings.warn(
            f"posterior samples {constant} return the same outputs for every input of the batch: their "
            "uncertainty does not depend on the input and their attribution maps are zero. An untrained or "
            "zero-initialised head does this (torchvision's ViT heads start at zero): train or load the weights",
            UserWarning,
            stacklevel=4,
        )


def expand_to_samples(inputs: Tuple[Any, ...], num_samples: int) -> Tuple[Any, ...]:
    """Give every tensor input a leading sample dimension (a view, no copy)."""
    return tuple(x.unsqueeze(0).expand(num_samples, *x.shape) if isinstance(x, Tensor) else x for x in inputs)


#: Attributes of a posterior that, when it has them, define its samples beside the modules'
#: weights (read by :meth:`Posterior._sample_identity`): a seed, a draw counter, a drop
#: probability, the sampled submodules and masks drawn eagerly into a list.
_IDENTITY_ATTRIBUTES = ("seed", "_draws", "p", "dropouts", "layers", "_masks")


def _submodule_names(modules: Sequence[nn.Module]) -> Dict[int, str]:
    """``id(submodule) -> "<sample module index>.<name>"`` over the sample modules."""
    names: Dict[int, str] = {}
    for index, module in enumerate(modules):
        for name, sub in module.named_modules():
            names.setdefault(id(sub), f"{index}.{name}" if name else str(index))
    return names


def _identity_value(value: Any, names: Dict[int, str]) -> Any:
    """A JSON form of an identity attribute: submodules by name, tensors by sha256."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, Tensor):
        return tensor_sha256(value)
    if isinstance(value, nn.Module):
        return [names.get(id(value), "?"), type(value).__qualname__]
    if isinstance(value, (list, tuple)):
        return [_identity_value(item, names) for item in value]
    return repr(type(value))


def _fingerprint_of(name: str, identity: Dict[str, Any], modules: Sequence[nn.Module]) -> str:
    """sha256 of a posterior's class name, identity and every sample module's structure and state."""
    digest = new_digest()
    structure = [[[sub_name, type(sub).__qualname__] for sub_name, sub in module.named_modules()] for module in modules]
    header = {"class": name, "identity": identity, "modules": structure}
    digest.update(json.dumps(header, sort_keys=True).encode())
    for index, module in enumerate(modules):
        for kind, named in (("parameter", module.named_parameters()), ("buffer", module.named_buffers())):
            for tensor_name, tensor in named:
                update_with_tensor(digest, f"{index}.{kind}.{tensor_name}", tensor)
    return digest.hexdigest()


# ----------------------------------------------------------------------------- protocol


class Posterior(nn.Module):
    """Base class of posterior sample sources.

    Subclasses implement :attr:`num_samples`, :meth:`forward_per_sample` and
    :meth:`sample_module`. ``forward(*inputs)`` returns the ``(S, N, C)`` raw outputs of all
    samples on the same inputs; ``forward_per_sample(*inputs)`` takes inputs with a leading
    sample dimension ``(S, N, ...)`` and feeds ``inputs[s]`` to sample ``s`` only, which lets
    gradient methods (UA-Backprop, FullGrad) get per-sample input gradients from one backward
    pass.
    """

    #: Name of the sample being run (an ``int``), or ``None`` when all samples run as one
    #: batch in sample-major row order; read by hook-based methods such as FullGrad.
    current_sample: Optional[int] = None

    @property
    def num_samples(self) -> int:  # pragma: no cover - abstract
        """The number ``S`` of posterior samples."""
        raise NotImplementedError

    def sample_modules(self) -> List[nn.Module]:
        """The user's modules this posterior runs (for state checks and layer hooks)."""
        return []

    def fingerprint(self) -> str:
        """A sha256 hex digest of what defines this posterior's samples.

        It covers the class name, the number of samples, what ``_sample_identity()`` returns
        (seeds, draw counters, masks, which layers are sampled) and, for every sample module
        (:meth:`sample_modules`), the class of each submodule and the name, shape, dtype and
        bytes of every parameter and buffer. A retrained or reloaded model of the same
        architecture, another seed or other masks give another fingerprint; running the
        posterior does not change it. Costs one pass over the weights (a copy to the CPU for
        GPU tensors). :func:`~captum_uncertainty.attribute_dataset` records it, to refuse to
        continue an output folder written with another posterior.

        Returns:
            str: 64 hexadecimal digits.

        Raises:
            ValueError: the posterior has no sample modules to hash (a
                :class:`SampleCallable` without ``modules`` needs ``fingerprint=``).

        Examples::

            >>> DeepEnsemble(members).fingerprint() == DeepEnsemble(reloaded_members).fingerprint()
            True
        """
        modules = self.sample_modules()
        if not modules:
            raise ValueError(
                f"{type(self).__name__} cannot be fingerprinted: sample_modules() returns no module whose weights "
                "could be hashed; return them from sample_modules() or override fingerprint()"
            )
        return _fingerprint_of(type(self).__name__, self._sample_identity(), modules)

    def _sample_identity(self) -> Dict[str, Any]:
        """What defines the samples beside the sample modules' weights, JSON-ready, for ``fingerprint()``.

        The base records ``num_samples`` and those of the attributes ``seed``, ``_draws`` (a
        draw counter), ``p``, ``dropouts`` / ``layers`` (sampled submodules, by name) and
        ``_masks`` (masks drawn eagerly into a list, by sha256) that the posterior has;
        subclasses override it to add theirs.
        """
        identity: Dict[str, Any] = {"num_samples": self.num_samples}
        names = _submodule_names(self.sample_modules())
        for attribute in _IDENTITY_ATTRIBUTES:
            if attribute in vars(self):
                identity[attribute] = _identity_value(vars(self)[attribute], names)
        return identity

    def forward(self, *inputs: Any) -> Tensor:
        return self.forward_per_sample(*expand_to_samples(inputs, self.num_samples))

    def forward_per_sample(self, *inputs: Any) -> Tensor:
        """Outputs ``(S, N, C)`` where sample ``s`` sees ``inputs[s]`` (inputs are ``(S, N, ...)``).

        The generic version runs the whole posterior once per sample and keeps sample ``s``;
        it is exact for any source whose samples are fixed between calls, at ``S`` times the cost.
        """
        outputs = [self(*_per_sample_slices(inputs, s))[s] for s in range(self.num_samples)]
        return torch.stack(outputs)

    def sample_module(self, sample: int) -> nn.Module:
        """An ``nn.Module`` computing sample ``sample``'s raw ``(N, C)`` output."""
        self.check_sample_index(sample)
        return _SampleView(self, sample)

    def check_sample_index(self, sample: int) -> None:
        check_int(sample, "sample", minimum=0, maximum=self.num_samples - 1)

    def check_inputs(self, inputs: Tuple[Any, ...]) -> None:
        """Clear errors for empty, non-finite, wrong-device or wrong-dtype inputs."""
        if not inputs:
            raise ValueError("inputs must contain at least one tensor")
        modules = self.sample_modules()
        reference = first_parameter(modules)
        if not self._members_checked:
            _check_members_agree(modules)
            self._reads_indices = _reads_indices(modules)
            self._members_checked = True
        for position, item in enumerate(inputs):
            if not isinstance(item, Tensor):
                continue
            name = f"inputs[{position}]"
            if item.dim() == 0 or item.shape[0] == 0:
                raise ValueError(f"{name} must have a non-empty batch dimension, got shape {tuple(item.shape)}")
            if reference is not None and not item.is_floating_point() and not self._reads_indices:
                raise TypeError(
                    f"{name} has dtype {item.dtype} but the model has no embedding layer to read integers and its "
                    f"parameters are {reference.dtype}: convert the inputs, e.g. images.to({reference.dtype}) / 255"
                )
            if reference is not None:
                if item.device != reference.device:
                    raise ValueError(
                        f"{name} is on device {item.device} but the model parameters are on {reference.device}"
                    )
                if item.is_floating_point() and item.dtype != reference.dtype:
                    raise TypeError(f"{name} has dtype {item.dtype} but the model parameters are {reference.dtype}")
            if item.is_floating_point() and not bool(torch.isfinite(item).all()):
                raise ValueError(f"{name} contains NaN or inf values")

    #: Set once :meth:`check_deterministic` has passed (reset by sources that redraw samples).
    verified: bool = False

    #: Set once the sample modules were found to share one dtype and device (first call), when
    #: it is also noted whether any of them reads integer inputs (an embedding layer).
    _members_checked: bool = False
    _reads_indices: bool = False

    def check_deterministic(self, inputs: Tuple[Any, ...]) -> None:
        """Refuse a posterior whose samples are not fixed: checked once, on the first inputs seen.

        Path methods integrate the gradient of one function; a posterior whose samples change
        between two evaluations of the same inputs, or whose value for an input depends on the
        other rows of its batch (per-row noise), would make every attribution noise. Three
        forward passes without gradients: the inputs twice, and the first row alone. The global
        random state is restored afterwards. Raises ``ValueError`` saying what to do.
        """
        if self.verified:
            return
        batch = _batch_size_of(inputs)
        with torch.no_grad(), torch.random.fork_rng(devices=[]):
            first, second = self(*inputs), self(*inputs)
            alone = self(*_first_row(inputs, batch)) if batch > 1 else first[:, :1]
        if not torch.allclose(first, second, rtol=1e-4, atol=1e-5, equal_nan=True):
            raise ValueError(
                f"{type(self).__name__} gave different samples for the same inputs on two calls (largest change "
                f"{float((first - second).abs().max()):.3g}): attributions over a changing posterior are noise. "
                "Fix the samples: seed the source (SampleCallable(..., seed=0)), freeze it (MCDropout for dropout, "
                "WeightSamples for weight samples, captum_uncertainty.integrations.from_laplace / "
                "from_bayesian_torch / "
                "from_torch_uncertainty), and run members in eval mode without random layers"
            )
        if not torch.allclose(alone[:, 0], first[:, 0], rtol=1e-4, atol=1e-5, equal_nan=True):
            raise ValueError(
                f"{type(self).__name__}'s value for an input depends on the other inputs of its batch (largest change "
                f"{float((alone[:, 0] - first[:, 0]).abs().max()):.3g}): per-row noise (e.g. torch-uncertainty's "
                "mc_dropout, bayesian-torch Flipout layers) or batch statistics make the uncertainty of one input "
                "change with internal_batch_size. Use a source with samples shared by all rows (MCDropout, "
                "captum_uncertainty.integrations.from_torch_uncertainty / from_bayesian_torch)"
            )
        _warn_if_constant(first, inputs, batch)
        self.verified = True

    @contextmanager
    def hookable(self) -> Iterator[None]:
        """Run the user's modules as modules (no ``torch.func`` batching) inside the block, so
        that forward hooks on their layers fire; a no-op for sources that always do."""
        yield

    #: How each sample's raw output is read (see :meth:`reading`).
    output_reader: OutputReader = staticmethod(tensor_output)

    @contextmanager
    def reading(self, reader: OutputReader) -> Iterator[None]:
        """Read every sample's raw output with ``reader`` inside the block (an
        :class:`~captum_uncertainty.UncertaintyForward` passes its likelihood's, which reads
        e.g. a Gaussian member's ``(mean, variance)`` tuple); the previous reader comes back after."""
        previous = self.__dict__.get("output_reader")
        self.output_reader = reader
        try:
            yield
        finally:
            if previous is None:
                del self.output_reader
            else:
                self.output_reader = previous

    @contextmanager
    def running(self, sample: Optional[int]) -> Iterator[None]:
        """Mark which sample the forward calls inside the block belong to."""
        previous = self.current_sample
        self.current_sample = sample
        try:
            yield
        finally:
            self.current_sample = previous


class _SampleView(nn.Module):
    """One posterior sample as a module returning ``(N, C)`` (keeps the user's layers as submodules)."""

    posterior: Any  # a Posterior; Any because only some posteriors define forward_single

    def __init__(self, posterior: Posterior, sample: int) -> None:
        super().__init__()
        self.posterior = posterior
        self.sample = sample

    def forward(self, *inputs: Any) -> Tensor:
        return (
            self.posterior.forward_single(self.sample, *inputs)
            if hasattr(self.posterior, "forward_single")
            else self.posterior(*inputs)[self.sample]
        )


# ----------------------------------------------------------------------------- ensembles


def _same_architecture(members: Union[Sequence[nn.Module], nn.ModuleList]) -> bool:
    """Same class and the same parameter/buffer names, shapes and dtypes."""

    def signature(module: nn.Module) -> List[Tuple[str, Tuple[int, ...], torch.dtype]]:
        named = itertools.chain(module.named_parameters(), module.named_buffers())
        return [(name, tuple(t.shape), t.dtype) for name, t in named]

    first = members[0]
    return all(type(m) is type(first) and signature(m) == signature(first) for m in members[1:])


def _check_members(members: Any, name: str = "posterior") -> List[nn.Module]:
    if isinstance(members, nn.Module) and not isinstance(members, nn.ModuleList):
        raise TypeError(f"{name} must be a sequence of nn.Module members, got a single {type(members).__name__}")
    try:
        members = list(members)
    except TypeError:
        raise TypeError(f"{name} must be a sequence of nn.Module members, got {type(members).__name__}") from None
    if not members:
        raise ValueError(f"{name} is an empty ensemble: pass at least one member module")
    for index, member in enumerate(members):
        if not isinstance(member, nn.Module):
            raise TypeError(f"{name}[{index}] is a {type(member).__name__}, expected an nn.Module")
    return members


class DeepEnsemble(Posterior):
    r"""A deep ensemble: every member module is one posterior sample.

    Members run in eval mode during each call (BatchNorm uses its running statistics) and get
    their ``training`` flags back afterwards. A member in ``train()`` mode with an active random
    layer (dropout with ``p > 0``, ``nn.RReLU``) is refused rather than switched off: the user
    meant MC dropout (:class:`MCDropout`) or forgot ``model.eval()``, and the error names both.

    Args:
        members (sequence of nn.Module): the member models, each mapping the inputs to
            ``(N, C)`` outputs (logits unless the :class:`UncertaintyForward` declares
            probabilities), or an output with a tensor ``.logits`` (a Hugging Face
            ``transformers`` classifier's ``ModelOutput``), which is read as its logits.
        strategy (str): how the members run. ``"loop"`` calls them one after another;
            ``"vmap"`` stacks same-architecture members' weights and runs them as one
            ``torch.func.vmap`` call; ``"auto"`` times both on the first call for each input
            shape and keeps the faster one (falling back to the loop when the members differ
            in architecture or vmap fails). Default: ``"loop"``, because on CPU the measured
            vmap forward+backward of the MNIST CNN ensemble is slower than the loop (see
            ``benchmarks/RESULTS.md``).

    Examples::

        >>> posterior = DeepEnsemble([m1, m2, m3, m4, m5])
        >>> posterior(x).shape            # (5, N, C)
    """

    STRATEGIES = ("loop", "vmap", "auto")

    def __init__(self, members: Sequence[nn.Module], strategy: str = "loop") -> None:
        super().__init__()
        self.members = nn.ModuleList(_check_members(members, "members"))
        check_choice(strategy, "strategy", self.STRATEGIES)
        if strategy == "vmap" and not _same_architecture(self.members):
            raise ValueError("strategy='vmap' needs members of the same architecture; use strategy='loop'")
        self.strategy = strategy
        self._chosen: Dict[Tuple[Any, ...], str] = {}

    @property
    def num_samples(self) -> int:
        return len(self.members)

    def sample_modules(self) -> List[nn.Module]:
        return list(self.members)

    def sample_module(self, sample: int) -> nn.Module:
        self.check_sample_index(sample)
        return self.members[sample]

    def forward(self, *inputs: Any) -> Tensor:
        return self._run(inputs, per_sample=False)

    @contextmanager
    def hookable(self) -> Iterator[None]:
        previous = self.strategy
        self.strategy = "loop"
        try:
            yield
        finally:
            self.strategy = previous

    def forward_per_sample(self, *inputs: Any) -> Tensor:
        return self._run(inputs, per_sample=True)

    def _run(self, inputs: Tuple[Any, ...], per_sample: bool) -> Tensor:
        _refuse_active_stochastic_layers(self.members)
        strategy = self._strategy_for(inputs, per_sample)
        with preserved_modes(self.members):
            if strategy == "vmap":
                return self._run_vmap(inputs, per_sample)
            return self._run_loop(inputs, per_sample)

    def _run_loop(self, inputs: Tuple[Any, ...], per_sample: bool) -> Tensor:
        batch = _batch_size_of(_per_sample_slices(inputs, 0) if per_sample else inputs)
        outputs = []
        for s, member in enumerate(self.members):
            with self.running(s):
                outputs.append(member(*(_per_sample_slices(inputs, s) if per_sample else inputs)))
        return _stack_sample_outputs(outputs, batch, self.output_reader)

    def _run_vmap(self, inputs: Tuple[Any, ...], per_sample: bool) -> Tensor:
        from torch.func import functional_call, stack_module_state, vmap

        params, buffers = stack_module_state(list(self.members))
        base, reader = self.members[0], self.output_reader

        def call(p: Dict[str, Tensor], b: Dict[str, Tensor], *args: Any) -> Tensor:
            return reader(functional_call(base, (p, b), args))

        in_dims = (0, 0) + tuple(0 if per_sample and isinstance(x, Tensor) else None for x in inputs)
        out = vmap(call, in_dims=in_dims, randomness="error")(params, buffers, *inputs)
        batch = _batch_size_of(_per_sample_slices(inputs, 0) if per_sample else inputs)
        if out.dim() == 2 and out.shape[1] == batch:
            out = out.unsqueeze(-1)  # binary members returning (N,)
        if out.dim() != 3 or out.shape[1] != batch:
            raise ValueError(f"members returned shape {tuple(out.shape[1:])}, expected (N, C) with N = {batch}")
        return out

    def _strategy_for(self, inputs: Tuple[Any, ...], per_sample: bool) -> str:
        if self.strategy != "auto":
            return self.strategy
        if len(self.members) == 1 or not _same_architecture(self.members):
            return "loop"
        key = (per_sample,) + tuple((tuple(x.shape), x.dtype, x.device) for x in inputs if isinstance(x, Tensor))
        if key not in self._chosen:
            self._chosen[key] = self._measure(inputs, per_sample)
        return self._chosen[key]

    def _measure(self, inputs: Tuple[Any, ...], per_sample: bool) -> str:
        timings = {}
        for candidate in ("loop", "vmap"):
            runner = self._run_vmap if candidate == "vmap" else self._run_loop
            try:
                with preserved_modes(self.members), torch.no_grad():
                    runner(inputs, per_sample)  # warm-up
                    start = time.perf_counter()
                    runner(inputs, per_sample)
                    timings[candidate] = time.perf_counter() - start
            except Exception:  # vmap cannot run these members: keep the loop
                timings[candidate] = float("inf")
        return min(timings, key=timings.__getitem__)


class WeightSamples(DeepEnsemble):
    r"""Explicit weight samples of one architecture, e.g. from SWAG, Laplace or HMC.

    Each sample is a private copy of ``model`` with one state dict loaded, so the user's
    model is never modified.

    Args:
        model (nn.Module): the architecture; its own weights are not used.
        state_dicts (sequence of dict): one state dict per posterior sample (``strict``
            loading: every key must match).
        strategy (str): as in :class:`DeepEnsemble`.

    Examples::

        >>> posterior = WeightSamples(model, [sd1, sd2, sd3])
        >>> posterior = WeightSamples.from_factory(sample_model, num_samples=10)
    """

    def __init__(self, model: nn.Module, state_dicts: Sequence[Dict[str, Tensor]], strategy: str = "loop") -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
        state_dicts = list(state_dicts)
        if not state_dicts:
            raise ValueError("state_dicts is empty: pass at least one weight sample")
        copies = []
        for index, state in enumerate(state_dicts):
            if not isinstance(state, dict):
                raise TypeError(f"state_dicts[{index}] is a {type(state).__name__}, expected a dict")
            member = copy.deepcopy(model)
            try:
                member.load_state_dict(state, strict=True)
            except RuntimeError as error:
                raise ValueError(f"state_dicts[{index}] does not fit the model: {error}") from None
            copies.append(member)
        super().__init__(copies, strategy=strategy)

    @classmethod
    def from_factory(cls, factory: Callable[[], Any], num_samples: int, strategy: str = "loop") -> "DeepEnsemble":
        """Draw ``num_samples`` models from ``factory``.

        ``factory()`` may return one model per call, or an iterable (e.g. a generator)
        yielding models, of which the first ``num_samples`` are taken.
        """
        check_positive_int(num_samples, "num_samples")
        first = factory()
        if isinstance(first, nn.Module):
            models = [first] + [factory() for _ in range(num_samples - 1)]
        else:
            models = list(itertools.islice(first, num_samples))
            if len(models) < num_samples:
                raise ValueError(f"factory yielded {len(models)} models, fewer than num_samples={num_samples}")
        return DeepEnsemble(_check_members(models, "factory models"), strategy=strategy)


# ----------------------------------------------------------------------------- MC dropout

#: The dropout modules :class:`MCDropout` masks.
DROPOUT_TYPES = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d)


def _dropout_mask_shape(module: nn.Module, feature_shape: Tuple[int, ...]) -> Tuple[int, ...]:
    """Element-wise masks for ``nn.Dropout``, channel masks for ``nn.DropoutNd``."""
    if isinstance(module, (nn.Dropout1d, nn.Dropout2d, nn.Dropout3d)):
        return feature_shape[:1] + (1,) * (len(feature_shape) - 1)
    return feature_shape


class MCDropout(Posterior):
    r"""Monte Carlo dropout with ``S`` frozen dropout masks.

    The masks (one per sample and ``nn.Dropout`` layer, shared by every input row) are drawn
    once from a seeded generator on the first call and reused on every later call until
    :meth:`resample`. So the ``S`` subnetworks are the same for every point of an
    integration path and every ``internal_batch_size`` chunk, which makes path methods exact
    for a fixed posterior sample. All samples run as one batch of ``S * N`` rows.

    During a call the model is in eval mode (BatchNorm uses running statistics, dropout
    layers are identities) and the masks are applied by temporary forward hooks on the
    dropout modules; flags and hooks are restored afterwards. Only dropout *modules*
    (``nn.Dropout``, ``nn.Dropout1d/2d/3d``) are sampled: functional ``F.dropout`` calls
    inside ``forward`` are not seen. A module called twice in one forward is two dropout sites
    with masks of their own, as plain dropout would draw them.

    Args:
        model (nn.Module): a network containing dropout modules.
        num_samples (int): the number of masks ``S``. Default: 20.
        seed (int): seed of the mask generator. Default: 0.
        dropouts (sequence of nn.Module, optional): the dropout modules of ``model`` to sample
            (e.g. only the last one); the others stay off. Default: every ``nn.Dropout*`` module.

    Examples::

        >>> posterior = MCDropout(model, num_samples=30, seed=0)
        >>> uf = UncertaintyForward(posterior, measure="epistemic")
        >>> posterior.resample()          # draw new masks
    """

    def __init__(
        self, model: nn.Module, num_samples: int = 20, seed: int = 0, dropouts: Optional[Sequence[nn.Module]] = None
    ) -> None:
        super().__init__()
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
        check_positive_int(num_samples, "num_samples")
        self.model = model
        self.dropouts = (
            [m for m in model.modules() if isinstance(m, DROPOUT_TYPES)] if dropouts is None else list(dropouts)
        )
        inside = {id(m) for m in model.modules()}
        for index, module in enumerate(self.dropouts):
            if not isinstance(module, DROPOUT_TYPES) or id(module) not in inside:
                raise ValueError(
                    f"dropouts[{index}] must be an nn.Dropout* module of model, got {type(module).__name__}"
                )
        if not self.dropouts:
            raise ValueError("model has no nn.Dropout modules: MC dropout needs at least one")
        self._num_samples = num_samples
        self.seed = seed
        self._draws = 0
        self._masks: Dict[Tuple[int, int], Tensor] = {}
        self._generator = torch.Generator().manual_seed(seed)

    @property
    def num_samples(self) -> int:
        return self._num_samples

    def sample_modules(self) -> List[nn.Module]:
        return [self.model]

    def resample(self, seed: Optional[int] = None) -> None:
        """Forget the masks; the next call draws new ones (from ``seed`` if given)."""
        if seed is not None:
            self._generator = torch.Generator().manual_seed(seed)
        self._masks = {}
        self._draws += 1
        self.verified = False

    def _sample_identity(self) -> Dict[str, Any]:
        """The seed, the draw counter, the sampled dropout modules (name, class, ``p``) and where
        the masks come from: before any :meth:`resample`, the seed; after one, the generator's
        state at that point (noted when the masks are not drawn yet), else the drawn masks."""
        names = _submodule_names([self.model])
        identity: Dict[str, Any] = {
            "num_samples": self.num_samples,
            "seed": self.seed,
            "draws": self._draws,
            "dropouts": [[names.get(id(m), "?"), type(m).__qualname__, float(m.p)] for m in self.dropouts],  # type: ignore[arg-type]
        }
        if self._draws:  # resampled: the masks are drawn from the generator as it was then
            if not self._masks:
                self._resampled_from = (self._draws, tensor_sha256(self._generator.get_state()))
            noted = vars(self).get("_resampled_from")
            if noted is not None and noted[0] == self._draws:
                identity["generator"] = noted[1]
            else:  # drawn before the state was noted: the masks themselves
                identity["masks"] = [
                    [names.get(key[0], "?"), key[1], tensor_sha256(mask)] for key, mask in self._masks.items()
                ]
        return identity

    def forward_single(self, sample: int, *inputs: Any) -> Tensor:
        """Sample ``sample``'s ``(N, C)`` output."""
        self.check_sample_index(sample)
        return self._run(expand_to_samples(inputs, 1), [sample])[0]

    def forward_per_sample(self, *inputs: Any) -> Tensor:
        return self._run(inputs, list(range(self.num_samples)))

    def _run(self, inputs: Tuple[Any, ...], samples: List[int]) -> Tensor:
        count = len(samples)
        batch = _batch_size_of(_per_sample_slices(inputs, 0))
        flat = tuple(x.reshape(count * batch, *x.shape[2:]) if isinstance(x, Tensor) else x for x in inputs)
        calls: Dict[int, int] = {}  # per forward: how often each dropout module has run
        handles = [d.register_forward_hook(self._mask_hook(d, samples, batch, calls)) for d in self.dropouts]
        try:
            with preserved_modes([self.model]), self.running(samples[0] if count == 1 else None):
                out = self.model(*flat)
        finally:
            for handle in handles:
                handle.remove()
        out = _check_member_output(out, samples[0] if count == 1 else 0, count * batch, self.output_reader)
        return out.reshape(count, batch, -1)

    def _mask_hook(
        self, module: nn.Module, samples: List[int], batch: int, calls: Dict[int, int]
    ) -> Callable[..., Tensor]:
        def hook(_module: nn.Module, _args: Any, output: Tensor) -> Tensor:
            # a module called twice in one forward is two dropout sites, each with its own masks
            site = calls.get(id(module), 0)
            calls[id(module)] = site + 1
            masks = self._masks_for(module, site, tuple(output.shape[1:]), output)[samples]
            grouped = output.reshape(len(samples), batch, *output.shape[1:])
            return (grouped * masks.unsqueeze(1)).reshape(output.shape)

        return hook

    def _masks_for(self, module: nn.Module, site: int, feature_shape: Tuple[int, ...], like: Tensor) -> Tensor:
        key = (id(module), site)
        shape = _dropout_mask_shape(module, feature_shape)
        if key not in self._masks:
            keep = 1.0 - float(module.p)  # type: ignore[arg-type]  # a dropout layer's float p
            draw = torch.rand((self.num_samples,) + shape, generator=self._generator, device="cpu") < keep
            scale = 1.0 / keep if keep > 0 else 0.0
            self._masks[key] = draw.to(dtype=torch.float64) * scale  # stays on the CPU: the generator's device
        masks = self._masks[key]
        if tuple(masks.shape[1:]) != shape:
            raise ValueError(
                f"a dropout layer's input shape changed from {tuple(masks.shape[1:])} to {shape} since the "
                "masks were drawn; call resample() before using inputs of another size"
            )
        return masks.to(device=like.device, dtype=like.dtype)


# ----------------------------------------------------------------------------- MC DropConnect

#: The layers whose weights :class:`MCDropConnect` drops.
_DROPCONNECT_TYPES = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def _plain_weight(layer: nn.Module) -> Optional[nn.Parameter]:
    """The layer's own ``weight`` parameter, or ``None`` if it is computed (parametrized, weight
    norm) or not yet initialised (a lazy layer)."""
    weight = dict(layer.named_parameters(recurse=False)).get("weight")
    if weight is None or isinstance(weight, nn.parameter.UninitializedParameter):
        return None
    return weight


def _dropconnect_targets(model: nn.Module, layers: Optional[Sequence[nn.Module]]) -> List[Tuple[str, nn.Module]]:
    """``(name of the weight in model, layer)`` of every dropped layer, one entry per weight."""
    names = {id(module): name for name, module in model.named_modules()}
    if layers is None:
        chosen: List[nn.Module] = [module for module in model.modules() if isinstance(module, _DROPCONNECT_TYPES)]
        labels = [f"layer {names[id(module)] or type(module).__name__!r}" for module in chosen]
        if not chosen:
            raise ValueError(
                "model has no nn.Linear or nn.Conv1d/2d/3d layers: MC DropConnect drops their weights and needs at "
                "least one"
            )
    else:
        if isinstance(layers, nn.Module) and not isinstance(layers, nn.ModuleList):
            raise TypeError(f"layers must be a sequence of modules, got a single {type(layers).__name__}; pass [layer]")
        try:
            chosen = list(layers)
        except TypeError:
            raise TypeError(f"layers must be a sequence of modules, got {type(layers).__name__}") from None
        if not chosen:
            raise ValueError("layers is empty: pass nn.Linear / nn.Conv1d/2d/3d layers of model, or None for all")
        labels = [f"layers[{index}]" for index in range(len(chosen))]
        for label, module in zip(labels, chosen):
            if not isinstance(module, _DROPCONNECT_TYPES):
                raise ValueError(
                    f"{label} must be an nn.Linear or nn.Conv1d/2d/3d module of model, got {type(module).__name__}"
                )
            if id(module) not in names:
                raise ValueError(f"{label} (a {type(module).__name__}) is not a submodule of model")
    targets: List[Tuple[str, nn.Module]] = []
    seen = set()
    for label, module in zip(labels, chosen):
        weight = _plain_weight(module)
        if weight is None:
            raise ValueError(
                f"{label} (a {type(module).__name__}) has no plain weight parameter to mask (a parametrization, "
                "weight norm, or a lazy layer not yet run): run the model once, remove the parametrization, or "
                "leave the layer out with layers=[...]"
            )
        if id(weight) in seen:  # a layer listed twice, or layers sharing one weight: one mask
            continue
        seen.add(id(weight))
        prefix = names[id(module)]
        targets.append((f"{prefix}.weight" if prefix else "weight", module))
    return targets


class MCDropConnect(Posterior):
    r"""Monte Carlo DropConnect with ``S`` frozen weight masks.

    DropConnect as a Bayesian approximation (Mobiny et al., "DropConnect is effective in
    modeling uncertainty of Bayesian deep networks", Scientific Reports, 2021) drops
    *weights* rather than activations: posterior sample ``s`` is the model with the weight
    ``W`` of every ``nn.Linear`` and ``nn.Conv1d/2d/3d`` layer replaced by
    ``W * m_s / (1 - p)``, where ``m_s`` is a Bernoulli(``1 - p``) mask of ``W``'s shape, so
    the mean sample weight is ``W``. Biases are never dropped. It is the weight sampler with
    which arXiv 2403.17224 obtains explanation distributions
    (:class:`~captum_uncertainty.ExplanationDistribution` over this posterior).

    The masks (one per sample and layer weight, shared by every input row) are drawn once,
    when the posterior is built, from a CPU generator seeded with ``seed`` (weight by weight
    in the order of ``model.modules()``, or of ``layers``, as
    ``torch.rand((S, *W.shape), generator=g) < 1 - p``), and reused on every call until
    :meth:`resample`. So each sample is one fixed function: path integrals are exact for a
    fixed posterior sample, and the value of an input does not depend on the other inputs of
    its batch or on ``internal_batch_size``. They are kept as booleans (``S`` bytes per
    dropped weight entry) and moved once to each device the weights are seen on.

    Sample ``s`` runs ``torch.func.functional_call(model, {name: W * m_s / (1 - p)}, inputs)``,
    one sample after another, with the model in eval mode (BatchNorm uses its running
    statistics, dropout layers are identities): the user's parameters are never written, no
    hook is added, and the ``training`` flags are restored afterwards, also when a call raises.
    Gradients flow to the inputs (and to the weights); forward hooks on the model's layers fire
    as usual, seeing the masked weight as ``module.weight``, and ``current_sample`` names
    the sample running, so hook-based methods (FullGrad, layer attributions) work. Only the
    layers' own ``weight`` parameters are dropped: functional ``F.linear`` / ``F.conv*`` calls
    on other tensors are not seen, and a layer called twice in one forward uses its one mask
    both times.

    Args:
        model (nn.Module): a network with ``nn.Linear`` / ``nn.Conv1d/2d/3d`` layers returning
            ``(N, C)`` outputs (``(N,)`` is read as ``(N, 1)``, one score per input).
        p (float): the probability of dropping each weight entry, in ``[0, 1)``; ``p = 0``
            makes every sample the model itself. Default: 0.1.
        num_samples (int): the number of masks ``S``. Default: 20.
        seed (int): seed of the mask generator. Default: 0.
        layers (sequence of nn.Module, optional): the ``nn.Linear`` / ``nn.Conv1d/2d/3d``
            layers of ``model`` whose weights are dropped (e.g. only the head); the others
            keep their weights. Default: every such layer.

    Returns:
        Calling the posterior on inputs ``(N, ...)`` returns a tensor ``(S, N, C)``: the raw
        outputs of the ``S`` masked models, in the weights' dtype and on their device.

    Examples::

        >>> posterior = MCDropConnect(model, p=0.1, num_samples=30, seed=0)
        >>> posterior(x).shape            # (30, N, C)
        >>> uf = UncertaintyForward(posterior, measure="epistemic")
        >>> maps = ExplanationDistribution(uf, IntegratedGradients).attribute(x, n_steps=32)
        >>> posterior.resample()          # draw new masks
    """

    def __init__(
        self,
        model: nn.Module,
        p: float = 0.1,
        num_samples: int = 20,
        seed: int = 0,
        layers: Optional[Sequence[nn.Module]] = None,
    ) -> None:
        super().__init__()
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
        check_non_negative_number(p, "p")
        if not p < 1:
            raise ValueError(f"p must be a number in [0, 1) (p = 1 would drop every weight), got {p!r}")
        check_positive_int(num_samples, "num_samples")
        check_int(seed, "seed")
        self.model = model
        self._targets = _dropconnect_targets(model, layers)
        self.layers = [layer for _, layer in self._targets]
        self.p = float(p)
        self._scale = 1.0 / (1.0 - self.p)
        self._num_samples = num_samples
        self.seed = seed
        self._generator = torch.Generator(device="cpu").manual_seed(seed)
        self._draws = 0
        self._masks = self._draw_masks()
        self._placed: Dict[Tuple[int, torch.device], Tensor] = {}

    @property
    def num_samples(self) -> int:
        return self._num_samples

    def sample_modules(self) -> List[nn.Module]:
        return [self.model]

    def resample(self, seed: Optional[int] = None) -> None:
        """Draw new masks now (from a generator seeded with ``seed`` if given, else from the
        current one), for the current weight shapes; the next call is checked again."""
        if seed is not None:
            check_int(seed, "seed")
            self._generator = torch.Generator(device="cpu").manual_seed(seed)
        self._masks = self._draw_masks()
        self._placed = {}
        self._draws += 1
        self.verified = False

    def forward_single(self, sample: int, *inputs: Any) -> Tensor:
        """Sample ``sample``'s ``(N, C)`` output."""
        self.check_sample_index(sample)
        with preserved_modes([self.model]):
            output = self._call(sample, inputs)
        return _check_member_output(output, sample, _batch_size_of(inputs), self.output_reader)

    def forward_per_sample(self, *inputs: Any) -> Tensor:
        batch = _batch_size_of(_per_sample_slices(inputs, 0))
        with preserved_modes([self.model]):
            outputs = [self._call(s, _per_sample_slices(inputs, s)) for s in range(self.num_samples)]
        return _stack_sample_outputs(outputs, batch, self.output_reader)

    def extra_repr(self) -> str:
        return f"p={self.p}, samples={self.num_samples}, seed={self.seed}, dropped weights={len(self._targets)}"

    def _call(self, sample: int, inputs: Tuple[Any, ...]) -> Any:
        from torch.func import functional_call

        parameters = {name: self._masked_weight(index, sample) for index, (name, _) in enumerate(self._targets)}
        with self.running(sample):
            return functional_call(self.model, parameters, tuple(inputs))

    def _masked_weight(self, index: int, sample: int) -> Tensor:
        name, layer = self._targets[index]
        weight = _plain_weight(layer)
        if weight is None:
            raise ValueError(f"the weight {name!r} is no longer a plain parameter of its layer; build a new posterior")
        key = (index, weight.device)
        if key not in self._placed:
            masks = self._masks[index]
            if tuple(masks.shape[1:]) != tuple(weight.shape):
                raise ValueError(
                    f"the weight {name!r} changed shape from {tuple(masks.shape[1:])} to {tuple(weight.shape)} since "
                    "the masks were drawn; call resample()"
                )
            self._placed[key] = masks.to(device=weight.device)
        return weight * (self._placed[key][sample].to(dtype=weight.dtype) * self._scale)

    def _draw_masks(self) -> List[Tensor]:
        keep = 1.0 - self.p
        masks = []
        for _, layer in self._targets:
            weight = _plain_weight(layer)
            assert weight is not None  # checked when the targets were collected
            shape = (self.num_samples,) + tuple(weight.shape)
            masks.append(torch.rand(shape, generator=self._generator, device="cpu") < keep)
        return masks


# ----------------------------------------------------------------------------- callables

#: The output layouts :class:`SampleCallable` accepts.
LAYOUTS = ("samples_first", "flat", "output_kl", "list")


class SampleCallable(Posterior):
    r"""Any callable that already returns posterior samples, normalised to ``(S, N, C)``.

    The ``layout`` says how the callable's output is arranged, and an output that does not fit
    the declared layout is an error, never a silent reshape. For laplace-torch, bayesian-torch
    and torch-uncertainty models prefer :mod:`captum_uncertainty.integrations`
    (``from_laplace``, ``from_bayesian_torch``, ``from_torch_uncertainty``): they freeze the
    samples into plain modules, so every method (FullGrad's bias terms included) works and the
    samples are the same on every call. A stochastic callable needs ``seed`` and noise shared
    by all rows of a batch; the first attribution checks both.

    * ``"samples_first"``: a ``(S, N, C)`` tensor.
    * ``"flat"``: a ``(S * N, C)`` tensor, sample-major, e.g. torch-uncertainty's ensemble
      output; needs ``num_samples``.
    * ``"output_kl"``: one stochastic forward returning ``(output, kl)``, called
      ``num_samples`` times (with ``seed``).
    * ``"list"``: a list of ``S`` tensors ``(N, C)``, or of whatever the forward's likelihood
      reads (a :class:`~captum_uncertainty.Gaussian`'s ``(mean, variance)`` pairs).

    Args:
        fn (callable): maps the inputs to samples in the declared layout.
        layout (str): one of the layouts above.
        num_samples (int, optional): ``S``; required for ``"flat"`` and ``"output_kl"``,
            otherwise read from the output (and checked if given).
        seed (int, optional): if given, the global RNG is seeded with it (inside
            ``torch.random.fork_rng``, so the caller's random state is untouched) at every
            call. What this guarantees: a callable that draws its randomness from the global
            generator draws the same ``S`` samples on every call with inputs of the same shape,
            on the same device. What it does not: noise drawn per input row still depends on
            the batch the input is in, and noise from another generator is not seeded. The
            first attribution checks both (:meth:`Posterior.check_deterministic`) and refuses a
            source that fails. Without a seed a stochastic callable is refused.
        modules (sequence of nn.Module, optional): the modules ``fn`` runs, used for device
            and dtype checks, by hook-based methods and by ``fingerprint()``.
        fingerprint (str, optional): names the samples when their weights are not in
            ``modules`` (e.g. the sha256 or version of the checkpoint ``fn`` samples from), for
            ``fingerprint()``. Without it and without ``modules`` the posterior has no
            fingerprint, and an :func:`~captum_uncertainty.attribute_dataset` run over it cannot
            be continued. Default: ``None``.

    Examples::

        >>> posterior = SampleCallable(lambda x: torch.stack([m(x) for m in models]),
        ...                            layout="samples_first", modules=models)
        >>> posterior = SampleCallable(stochastic_model, layout="output_kl", num_samples=20, seed=0)
        >>> posterior = SampleCallable(lambda x: la.predictive_samples(x, n_samples=20),
        ...                            layout="samples_first", fingerprint="laplace-2024-05-01")
    """

    def __init__(
        self,
        fn: Callable[..., Any],
        layout: str,
        num_samples: Optional[int] = None,
        seed: Optional[int] = None,
        modules: Optional[Sequence[nn.Module]] = None,
        *,
        fingerprint: Optional[str] = None,
    ) -> None:
        super().__init__()
        if not callable(fn):
            raise TypeError(f"fn must be callable, got {type(fn).__name__}")
        if fingerprint is not None and (not isinstance(fingerprint, str) or not fingerprint):
            raise TypeError(
                "fingerprint must be a non-empty string naming the samples (e.g. a checkpoint's sha256) or None, "
                f"got {fingerprint!r}"
            )
        check_choice(layout, "layout", LAYOUTS)
        check_optional_positive_int(num_samples, "num_samples")
        if layout in ("flat", "output_kl") and num_samples is None:
            raise ValueError(f"layout={layout!r} needs num_samples")
        self.fn = fn
        self.layout = layout
        self._num_samples = num_samples
        self.seed = seed
        if modules is None and isinstance(fn, nn.Module):
            modules = [fn]
        self._modules_list = list(modules or [])
        self._fingerprint = fingerprint

    @property
    def num_samples(self) -> int:
        if self._num_samples is None:
            raise ValueError("num_samples is not known until the first call; pass num_samples")
        return self._num_samples

    def sample_modules(self) -> List[nn.Module]:
        return list(self._modules_list)

    def fingerprint(self) -> str:
        """As ``Posterior.fingerprint()``, over the layout, ``seed``, the declared number of
        samples (``"flat"``, ``"output_kl"``; for the other layouts ``fn`` sets it), ``fn``'s
        qualified name, ``fingerprint=`` and the modules' weights.

        Raises:
            ValueError: neither ``modules`` nor ``fingerprint`` was given: nothing says
                what ``fn`` samples from.
        """
        if not self._modules_list and self._fingerprint is None:
            raise ValueError(
                "a SampleCallable without modules has no fingerprint: the weights fn samples from are unknown; "
                "pass SampleCallable(..., fingerprint='...') (e.g. the sha256 or version of its checkpoint) or "
                "SampleCallable(..., modules=[...])"
            )
        return _fingerprint_of(type(self).__name__, self._sample_identity(), self._modules_list)

    def _sample_identity(self) -> Dict[str, Any]:
        fn = self.fn
        name = f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', type(fn).__qualname__)}"
        return {
            "layout": self.layout,
            "seed": self.seed,
            "num_samples": self._num_samples if self.layout in ("flat", "output_kl") else None,
            "fn": name,
            "fingerprint": self._fingerprint,
        }

    def forward(self, *inputs: Any) -> Tensor:
        batch = _batch_size_of(inputs)
        if self.seed is None:
            samples = self._collect(inputs, batch)
        else:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(self.seed)
                samples = self._collect(inputs, batch)
        if self._num_samples is None:
            self._num_samples = samples.shape[0]
        elif samples.shape[0] != self._num_samples:
            raise ValueError(f"fn returned {samples.shape[0]} samples, expected num_samples={self._num_samples}")
        return samples

    def _collect(self, inputs: Tuple[Any, ...], batch: int) -> Tensor:
        layout = self.layout
        if layout == "output_kl":
            return _stack_sample_outputs(
                [self._output_of_tuple(self.fn(*inputs), s) for s in range(self.num_samples)], batch, self.output_reader
            )
        out = self.fn(*inputs)
        if layout == "list":
            if not isinstance(out, (list, tuple)):
                raise TypeError(f"layout='list' expects a list of (N, C) tensors, got {type(out).__name__}")
            return _stack_sample_outputs(list(out), batch, self.output_reader)
        if not isinstance(out, Tensor):
            raise TypeError(
                f"layout={layout!r} expects a tensor, got {type(out).__name__}"
                + ("; for (output, kl) tuples use layout='output_kl'" if isinstance(out, tuple) else "")
            )
        if layout == "samples_first":
            if out.dim() != 3 or out.shape[1] != batch:
                raise ValueError(
                    f"layout='samples_first' expects (S, N, C) with N = {batch}, got shape {tuple(out.shape)}"
                    + ("; for (S * N, C) outputs use layout='flat'" if out.dim() == 2 else "")
                )
            return out
        expected = self.num_samples * batch
        if out.dim() != 2 or out.shape[0] != expected:
            raise ValueError(
                f"layout='flat' expects (S * N, C) = ({expected}, C) with S = {self.num_samples}, N = {batch}, "
                f"got shape {tuple(out.shape)}"
            )
        return out.reshape(self.num_samples, batch, out.shape[1])

    @staticmethod
    def _output_of_tuple(out: Any, sample: int) -> Any:
        if not isinstance(out, (tuple, list)) or len(out) != 2:
            raise TypeError(
                f"layout='output_kl' expects fn to return an (output, kl) pair, got {type(out).__name__} "
                f"(sample {sample})"
            )
        if not is_scalar_kl(out[1], out[0]):
            raise TypeError(
                f"layout='output_kl' drops the second item of fn's pair as a KL term, but it has shape "
                f"{tuple(out[1].shape)}, not a scalar: a regressor's (mean, variance) pair would lose its variance. "
                "Draw the samples as a list, SampleCallable(lambda x: [fn(x) for _ in range(S)], layout='list', "
                "seed=0), and declare UncertaintyForward(..., likelihood=Gaussian(variance=...)), which reads pairs"
            )
        return out[0]


# ----------------------------------------------------------------------------- coercion


def as_posterior(posterior: Any) -> Posterior:
    """Accept a :class:`Posterior` or a sequence of member modules (a deep ensemble)."""
    if isinstance(posterior, Posterior):
        return posterior
    if isinstance(posterior, nn.Module) and not isinstance(posterior, nn.ModuleList):
        raise TypeError(
            f"posterior must be a Posterior or a list of nn.Module members, got a single "
            f"{type(posterior).__name__}; wrap it as MCDropout(model, num_samples=...) or DeepEnsemble([model])"
        )
    if callable(posterior) and not isinstance(posterior, (list, tuple, nn.ModuleList)):
        raise TypeError(
            "posterior is a callable: wrap it as SampleCallable(fn, layout=...) to say how its samples are laid out"
        )
    if isinstance(posterior, (str, bytes)) or not hasattr(posterior, "__iter__"):
        raise TypeError(f"posterior must be a Posterior or a list of nn.Module members, got {type(posterior).__name__}")
    return DeepEnsemble(_check_members(posterior, "posterior"))
