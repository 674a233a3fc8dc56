"""Deep ensembles and explicit weight samples: every member module is one posterior sample."""

from __future__ import annotations

import copy
import itertools
import time
from contextlib import contextmanager
from typing import Any, Callable, Dict, Iterator, List, Sequence, Tuple, Union

import torch
from torch import Tensor, nn

from captum_uncertainty._validation import check_choice, check_positive_int
from captum_uncertainty.posterior._protocol import Posterior
from captum_uncertainty.posterior._utils import (
    batch_size_of,
    per_sample_slices,
    preserved_modes,
    refuse_active_stochastic_layers,
    stack_sample_outputs,
)

__all__ = ["same_architecture", "check_members", "DeepEnsemble", "WeightSamples"]


# ----------------------------------------------------------------------------- ensembles


def same_architecture(members: Union[Sequence[nn.Module], nn.ModuleList]) -> bool:
    """Same class and the same parameter/buffer names, shapes and dtypes."""

    def signature(module: nn.Module) -> List[Tuple[str, Tuple[int, ...], torch.dtype]]:
        named = itertools.chain(module.named_parameters(), module.named_buffers())
        return [(name, tuple(t.shape), t.dtype) for name, t in named]

    first = members[0]
    return all(type(m) is type(first) and signature(m) == signature(first) for m in members[1:])


def check_members(members: Any, name: str = "posterior") -> List[nn.Module]:
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
        self.members = nn.ModuleList(check_members(members, "members"))
        check_choice(strategy, "strategy", self.STRATEGIES)
        if strategy == "vmap" and not same_architecture(self.members):
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

    def forward_single(self, sample: int, *inputs: Any) -> Tensor:
        """Member ``sample``'s ``(N, C)`` output (the member alone)."""
        self.check_sample_index(sample)
        member = self.members[sample]
        refuse_active_stochastic_layers([member])
        with preserved_modes([member]), self.running(sample):
            output = member(*inputs)
        return stack_sample_outputs([output], batch_size_of(inputs), self.output_reader)[0]

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

    @contextmanager
    def sampling(self, sample: int) -> Iterator[nn.Module]:
        """Member ``sample`` in eval mode (flags restored after the block)."""
        self.check_sample_index(sample)
        member = self.members[sample]
        refuse_active_stochastic_layers([member])
        with preserved_modes([member]), self.running(sample):
            yield member

    def _run(self, inputs: Tuple[Any, ...], per_sample: bool) -> Tensor:
        refuse_active_stochastic_layers(self.members)
        strategy = self._strategy_for(inputs, per_sample)
        with preserved_modes(self.members):
            if strategy == "vmap":
                return self._run_vmap(inputs, per_sample)
            return self._run_loop(inputs, per_sample)

    def _run_loop(self, inputs: Tuple[Any, ...], per_sample: bool) -> Tensor:
        batch = batch_size_of(per_sample_slices(inputs, 0) if per_sample else inputs)
        outputs = []
        for s, member in enumerate(self.members):
            with self.running(s):
                outputs.append(member(*(per_sample_slices(inputs, s) if per_sample else inputs)))
        return stack_sample_outputs(outputs, batch, self.output_reader)

    def _run_vmap(self, inputs: Tuple[Any, ...], per_sample: bool) -> Tensor:
        from torch.func import functional_call, stack_module_state, vmap

        params, buffers = stack_module_state(list(self.members))
        base, reader = self.members[0], self.output_reader

        def call(p: Dict[str, Tensor], b: Dict[str, Tensor], *args: Any) -> Tensor:
            return reader(functional_call(base, (p, b), args))

        in_dims = (0, 0) + tuple(0 if per_sample and isinstance(x, Tensor) else None for x in inputs)
        out = vmap(call, in_dims=in_dims, randomness="error")(params, buffers, *inputs)
        batch = batch_size_of(per_sample_slices(inputs, 0) if per_sample else inputs)
        if out.dim() == 2 and out.shape[1] == batch:
            out = out.unsqueeze(-1)  # binary members returning (N,)
        if out.dim() != 3 or out.shape[1] != batch:
            raise ValueError(f"members returned shape {tuple(out.shape[1:])}, expected (N, C) with N = {batch}")
        return out

    def _strategy_for(self, inputs: Tuple[Any, ...], per_sample: bool) -> str:
        if self.strategy != "auto":
            return self.strategy
        if len(self.members) == 1 or not same_architecture(self.members):
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
        return DeepEnsemble(check_members(models, "factory models"), strategy=strategy)
