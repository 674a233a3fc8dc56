"""Any callable that already returns posterior samples."""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from captum_uncertainty._validation import check_choice, check_optional_positive_int
from captum_uncertainty.posterior._protocol import Posterior
from captum_uncertainty.posterior._utils import batch_size_of, fingerprint_of, is_scalar_kl, stack_sample_outputs

__all__ = ["LAYOUTS", "SUPPORTED_LAYOUTS", "SampleCallable"]


# ----------------------------------------------------------------------------- callables

#: The ``layout`` choices of :class:`SampleCallable`: the output layouts it accepts.
SUPPORTED_LAYOUTS = ("samples_first", "flat", "output_kl", "list")
#: Deprecated alias of :data:`SUPPORTED_LAYOUTS`, kept for one release.
LAYOUTS = SUPPORTED_LAYOUTS


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
        check_choice(layout, "layout", SUPPORTED_LAYOUTS)
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
        return fingerprint_of(type(self).__name__, self.identity(), self._modules_list)

    def identity(self) -> Dict[str, Any]:
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
        batch = batch_size_of(inputs)
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
            return stack_sample_outputs(
                [self._output_of_tuple(self.fn(*inputs), s) for s in range(self.num_samples)], batch, self.output_reader
            )
        out = self.fn(*inputs)
        if layout == "list":
            if not isinstance(out, (list, tuple)):
                raise TypeError(f"layout='list' expects a list of (N, C) tensors, got {type(out).__name__}")
            return stack_sample_outputs(list(out), batch, self.output_reader)
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
