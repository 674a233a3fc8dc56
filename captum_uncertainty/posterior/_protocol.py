"""The protocol every posterior source follows: :class:`Posterior`."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Dict, Iterator, List, Optional, Tuple

import torch
from torch import Tensor, nn

from captum_uncertainty._validation import check_int
from captum_uncertainty.posterior._utils import (
    IDENTITY_ATTRIBUTES,
    OutputReader,
    batch_size_of,
    check_members_agree,
    expand_to_samples,
    fingerprint_of,
    first_parameter,
    first_row,
    identity_value,
    leading_rows,
    per_sample_slices,
    reads_indices,
    submodule_names,
    tensor_output,
    warn_if_constant,
)

__all__ = ["Posterior", "SampleView"]


# ----------------------------------------------------------------------------- protocol


class Posterior(nn.Module):
    """Base class of posterior sample sources.

    A source implements :attr:`num_samples` and :meth:`forward_per_sample`, which takes inputs
    with a leading sample dimension ``(S, N, ...)``, feeds ``inputs[s]`` to sample ``s`` only and
    returns the ``(S, N, C)`` raw outputs (so gradient methods such as UA-Backprop and FullGrad
    get per-sample input gradients from one backward pass), marking the sample it runs with
    :meth:`running` for hook-based methods. It returns the user's modules from
    :meth:`sample_modules` (input checks, FullGrad's hooks, :meth:`fingerprint`) and adds what
    else defines its samples (a seed, a scale) to :meth:`identity`. The rest has defaults it may
    override: ``forward`` (all samples on the same inputs; the default repeats them ``S``
    times, a source with a shared trunk runs it once), :meth:`forward_single`,
    :meth:`sample_module`, :meth:`separate_sample_modules`, :meth:`hookable` and
    :meth:`sampling`. The forward that reads a posterior
    (:class:`~captum_uncertainty.UncertaintyForward`) calls its checks (:meth:`check_inputs`,
    :meth:`call_checked`), so a source does not. The docs' "Add a posterior source" shows a
    complete one.
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

    def separate_sample_modules(self) -> Optional[List[nn.Module]]:
        """The module each sample is called as in :meth:`forward_per_sample`, one call per sample
        (sample ``s`` calls ``modules[s]`` on ``inputs[s]``, e.g. an ensemble's members), or
        ``None`` when the samples run in a shared call (MC dropout's ``S x N`` rows). Gradient
        methods use it to give each sample a graph of its own (UA-Backprop's per-member backward
        passes). The base returns ``None``."""
        return None

    def fingerprint(self) -> str:
        """A sha256 hex digest of what defines this posterior's samples.

        It covers the class name, the number of samples, what ``identity()`` returns
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
        return fingerprint_of(type(self).__name__, self.identity(), modules)

    def identity(self) -> Dict[str, Any]:
        """What defines the samples beside the sample modules' weights, JSON-ready, for ``fingerprint()``.

        The base records ``num_samples`` and those of the attributes ``seed``, ``_draws`` (a
        draw counter), ``p``, ``dropouts`` / ``layers`` (sampled submodules, by name) and
        ``_masks`` (masks drawn eagerly into a list, by sha256) that the posterior has;
        subclasses override it to add theirs.
        """
        identity: Dict[str, Any] = {"num_samples": self.num_samples}
        names = submodule_names(self.sample_modules())
        for attribute in IDENTITY_ATTRIBUTES:
            if attribute in vars(self):
                identity[attribute] = identity_value(vars(self)[attribute], names)
        return identity

    def forward(self, *inputs: Any) -> Tensor:
        return self.forward_per_sample(*expand_to_samples(inputs, self.num_samples))

    def forward_per_sample(self, *inputs: Any) -> Tensor:
        """Outputs ``(S, N, C)`` where sample ``s`` sees ``inputs[s]`` (inputs are ``(S, N, ...)``).

        The generic version runs the whole posterior once per sample and keeps sample ``s``;
        it is exact for any source whose samples are fixed between calls, at ``S`` times the cost.
        """
        outputs = [self(*per_sample_slices(inputs, s))[s] for s in range(self.num_samples)]
        return torch.stack(outputs)

    def forward_single(self, sample: int, *inputs: Any) -> Tensor:
        """Sample ``sample``'s ``(N, C)`` output. The generic version runs every sample and keeps
        one; sources that can run one sample alone override it."""
        self.check_sample_index(sample)
        return self(*inputs)[sample]

    def sample_module(self, sample: int) -> nn.Module:
        """An ``nn.Module`` computing sample ``sample``'s raw ``(N, C)`` output."""
        self.check_sample_index(sample)
        return SampleView(self, sample)

    def check_sample_index(self, sample: int) -> None:
        check_int(sample, "sample", minimum=0, maximum=self.num_samples - 1)

    def check_inputs(self, inputs: Tuple[Any, ...]) -> None:
        """Clear errors for empty, non-finite, wrong-device or wrong-dtype inputs."""
        if not inputs:
            raise ValueError("inputs must contain at least one tensor")
        modules = self.sample_modules()
        reference = first_parameter(modules)
        if not self._members_checked:
            check_members_agree(modules)
            self._reads_indices = reads_indices(modules)
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
    reads_indices: bool = False

    def call_checked(self, *inputs: Any) -> Tensor:
        """``self(*inputs)``, checking on the first call that the samples are fixed.

        Path methods integrate the gradient of one function; a posterior whose samples change
        between two evaluations of the same inputs, or whose value for an input depends on the
        other rows of its batch (per-row noise), would make every attribution noise. Until the
        check has passed once, the call first runs the posterior on the first row alone, without
        gradients (one forward of one row; with a shared trunk about one sample's cost), then on
        ``inputs``, and compares the first rows: a sample redrawn on every call or per-row noise
        changes them. Only when they differ are the inputs run again, to say which of the two it
        is. The row comes first so that the last pass a layer hook sees is the real one. A
        source that draws from the global random state draws for the row too (sources with
        fixed samples do not touch it). Raises ``ValueError`` saying what to do.
        """
        if self.verified:
            return self(*inputs)
        batch = batch_size_of(inputs)
        with torch.no_grad():  # not in a forked random state: a source drawing from it must draw anew
            alone = self(*first_row(inputs, batch))
        outputs = self(*inputs)
        expected = outputs.detach()[:, :1]
        if not torch.allclose(alone, expected, rtol=1e-4, atol=1e-5, equal_nan=True):
            with torch.no_grad(), torch.random.fork_rng(devices=[]):
                self._refuse_undetermined(inputs, outputs.detach(), alone - expected)
        warn_if_constant(outputs.detach(), inputs, batch)
        self.verified = True
        return outputs

    def check_deterministic(self, inputs: Tuple[Any, ...]) -> None:
        """:meth:`call_checked` on the first two rows of ``inputs``, without gradients, for methods
        that check before they run the posterior their own way; nothing once the check has
        passed."""
        if self.verified:
            return
        with torch.no_grad(), torch.random.fork_rng(devices=[]):
            self.call_checked(*leading_rows(inputs, batch_size_of(inputs), 2))

    def _refuse_undetermined(self, inputs: Tuple[Any, ...], outputs: Tensor, change: Tensor) -> None:
        """Raise the error that says why one sample's value on the first row changed: the samples
        change between calls (the inputs run again give other outputs) or per-row noise."""
        again = self(*inputs)
        if not torch.allclose(again, outputs, rtol=1e-4, atol=1e-5, equal_nan=True):
            raise ValueError(
                f"{type(self).__name__} gave different samples for the same inputs on two calls (largest change "
                f"{float((again - outputs).abs().max()):.3g}): attributions over a changing posterior are noise. "
                "Fix the samples: seed the source (SampleCallable(..., seed=0)), freeze it (MCDropout for dropout, "
                "WeightSamples for weight samples, captum_uncertainty.integrations.from_laplace / "
                "from_bayesian_torch / "
                "from_torch_uncertainty), and run members in eval mode without random layers"
            )
        raise ValueError(
            f"{type(self).__name__}'s value for an input depends on the other inputs of its batch (largest change "
            f"{float(change.abs().max()):.3g}): per-row noise (e.g. torch-uncertainty's "
            "mc_dropout, bayesian-torch Flipout layers) or batch statistics make the uncertainty of one input "
            "change with internal_batch_size. Use a source with samples shared by all rows (MCDropout, "
            "captum_uncertainty.integrations.from_torch_uncertainty / from_bayesian_torch)"
        )

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
    def sampling(self, sample: int) -> Iterator[nn.Module]:
        """Inside the block, the returned user's module *is* sample ``sample``: call it with its own
        signature (keyword arguments such as a language model's ``input_ids``, ``attention_mask``
        or ``inputs_embeds``) and read its raw output. Sources set up and undo what makes the
        sample (eval mode, a dropout mask's hooks, an adapter) around the block, also when it
        raises. Used by the causal-LM forward (:mod:`captum_uncertainty.llm`), which calls the
        samples one at a time with keyword arguments.

        Raises:
            TypeError: the source cannot hand out its samples as the user's modules (the base
                class; :class:`DeepEnsemble`, :class:`WeightSamples`, :class:`MCDropout` and
                :class:`~captum_uncertainty.llm.LoRAEnsemble` can).
        """
        raise TypeError(
            f"{type(self).__name__} cannot run one sample as the user's module with keyword inputs; use a list of "
            "models (DeepEnsemble), MCDropout or captum_uncertainty.llm.from_peft"
        )
        yield  # pragma: no cover - unreachable, makes this a generator

    @contextmanager
    def running(self, sample: Optional[int]) -> Iterator[None]:
        """Mark which sample the forward calls inside the block belong to."""
        previous = self.current_sample
        self.current_sample = sample
        try:
            yield
        finally:
            self.current_sample = previous


class SampleView(nn.Module):
    """One posterior sample as a module returning ``(N, C)`` (keeps the user's layers as submodules)."""

    posterior: Posterior

    def __init__(self, posterior: Posterior, sample: int) -> None:
        super().__init__()
        self.posterior = posterior
        self.sample = sample

    def forward(self, *inputs: Any) -> Tensor:
        return self.posterior.forward_single(self.sample, *inputs)
