"""Deep ensembles and explicit weight samples: every member module is one posterior sample."""

from __future__ import annotations

import copy
import itertools
import time
from contextlib import contextmanager
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor, nn

from captum_uncertainty._validation import check_choice, check_module_sequence, check_positive_int
from captum_uncertainty.posterior._protocol import Posterior
from captum_uncertainty.posterior._shared_trunk import (
    SharedTrunk,
    check_share_trunk,
    input_layout,
    run_shared,
    shared_run_agrees,
)
from captum_uncertainty.posterior._utils import (
    batch_size_of,
    per_sample_slices,
    preserved_modes,
    refuse_active_stochastic_layers,
    stack_sample_outputs,
)

__all__ = ["same_architecture", "check_members", "DeepEnsemble", "HeadOnTrunk", "WeightSamples"]


# ----------------------------------------------------------------------------- ensembles


def same_architecture(members: Union[Sequence[nn.Module], nn.ModuleList]) -> bool:
    """Same class and the same parameter/buffer names, shapes and dtypes."""

    def signature(module: nn.Module) -> List[Tuple[str, Tuple[int, ...], torch.dtype]]:
        named = itertools.chain(module.named_parameters(), module.named_buffers())
        return [(name, tuple(t.shape), t.dtype) for name, t in named]

    first = members[0]
    return all(type(m) is type(first) and signature(m) == signature(first) for m in members[1:])


def check_members(members: Any, name: str = "posterior") -> List[nn.Module]:
    members = check_module_sequence(members, name, "nn.Module members")
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
        share_trunk (bool or str, keyword only): run once what the members share. Members that
            are copies of one architecture and differ only in some layers (last-layer Laplace
            or SWAG weight samples, heads trained on one frozen backbone, which may be the same
            module object in every member) compute the same values up to the first layer whose
            weights differ: the members' weights say which layers those are (found again when a
            weight changes). Member 0 then runs on the ``N`` inputs; the first differing layer
            repeats its rows once per member (sample-major) and every differing layer computes
            member ``s``'s block with member ``s``'s own layer, so the backward pass goes through
            the shared part once. A differing layer must have no submodules and take a tensor
            first. ``"auto"`` checks the shared run against the members run one by one on the
            first call for each input layout (equal within 1e-5, else the members run one by one
            for that layout, e.g. a model that mixes its rows after the first differing layer),
            ``True`` uses it without the check, ``False`` never. Members that share nothing
            (independently trained), ``strategy="vmap"``, forward hooks on a member (Captum's
            layer methods) and :meth:`hookable` blocks (FullGrad) run the members one by one.
            Default: ``"auto"``, because with the samples differing in the last layer most of the
            network runs once instead of ``S`` times (see ``benchmarks/RESULTS.md``, "Shared
            trunks").
        trunk (nn.Module, keyword only, optional): a module whose output every member reads,
            for heads the weights cannot show to share a backbone (heads of different
            architectures): sample ``s`` computes ``members[s](trunk(*inputs))``, and the
            forward runs ``trunk`` once and every head on its output (exactly the members'
            computation, so nothing is checked). Hook-based methods (FullGrad inside
            :meth:`hookable`) and per-sample inputs (UA-Backprop) run ``trunk`` for each member.
            Default: ``None``, the members take the inputs.

    Examples::

        >>> posterior = DeepEnsemble([m1, m2, m3, m4, m5])
        >>> posterior(x).shape            # (5, N, C)
    """

    STRATEGIES = ("loop", "vmap", "auto")

    def __init__(
        self,
        members: Sequence[nn.Module],
        strategy: str = "loop",
        *,
        share_trunk: Any = "auto",
        trunk: Optional[nn.Module] = None,
    ) -> None:
        super().__init__()
        heads = check_members(members, "members")
        if trunk is not None and not isinstance(trunk, nn.Module):
            raise TypeError(f"trunk must be an nn.Module or None, got {type(trunk).__name__}")
        self.trunk = trunk
        self.members = nn.ModuleList(heads if trunk is None else [HeadOnTrunk(trunk, head) for head in heads])
        check_choice(strategy, "strategy", self.STRATEGIES)
        if strategy == "vmap" and not same_architecture(self.members):
            raise ValueError("strategy='vmap' needs members of the same architecture; use strategy='loop'")
        self.strategy = strategy
        self.share_trunk = check_share_trunk(share_trunk)
        self._chosen: Dict[Tuple[Any, ...], str] = {}
        self._trunk = SharedTrunk()
        self._trunk_agrees: Dict[Tuple[Any, ...], bool] = {}

    @property
    def num_samples(self) -> int:
        return len(self.members)

    def sample_modules(self) -> List[nn.Module]:
        return list(self.members)

    def sample_module(self, sample: int) -> nn.Module:
        self.check_sample_index(sample)
        return self.members[sample]

    def separate_sample_modules(self) -> Optional[List[nn.Module]]:
        """The members: member ``s`` runs ``inputs[s]`` in a call of its own (with the loop
        strategy; the ``vmap`` strategy calls none of them, so their hooks do not fire)."""
        return list(self.members)

    def forward(self, *inputs: Any) -> Tensor:
        """All members on the same inputs, ``(S, N, C)``: through the shared trunk when
        ``share_trunk`` allows it (see the class docstring), else member by member."""
        if self.trunk is not None and not self._hooks_expected:
            return self._run_heads(self.trunk, inputs)
        layers = self._shared_layers(inputs)
        if layers is not None:
            return self._run_shared(inputs, layers)
        return self._run(inputs, per_sample=False)

    def _run_heads(self, trunk: nn.Module, inputs: Tuple[Any, ...]) -> Tensor:
        """The explicit trunk once, every head on its output."""
        heads = [member.head for member in self.members if isinstance(member, HeadOnTrunk)]
        refuse_active_stochastic_layers(self.members)
        with preserved_modes(self.members):
            features = trunk(*inputs)
            outputs = []
            for s, head in enumerate(heads):
                with self.running(s):
                    outputs.append(head(features))
        return stack_sample_outputs(outputs, batch_size_of(inputs), self.output_reader)

    def _shared_layers(self, inputs: Tuple[Any, ...]) -> Optional[List[str]]:
        """The differing layers to run the members through as one, or ``None`` to run them one by one."""
        if self.share_trunk is False or self.strategy == "vmap" or self._hooks_expected or len(self.members) == 1:
            return None
        if any(module._forward_hooks for member in self.members for module in member.modules()):
            return None  # someone else's hooks expect each member's own rows
        layers = self._trunk.layers(list(self.members))
        if layers is None or self.share_trunk is True:
            return layers
        key = (tuple(layers), input_layout(inputs))
        if key not in self._trunk_agrees:
            self._trunk_agrees[key] = shared_run_agrees(
                lambda: self._run(inputs, per_sample=False), lambda: self._run_shared(inputs, layers)
            )
        return layers if self._trunk_agrees[key] else None

    def _run_shared(self, inputs: Tuple[Any, ...], layers: List[str]) -> Tensor:
        refuse_active_stochastic_layers(self.members)
        with preserved_modes(self.members):
            return run_shared(list(self.members), layers, inputs, self.output_reader)

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
        """Inside the block every member runs as itself, one after another (no ``torch.func``
        batching, no shared trunk), so that hooks on its layers see its own ``N`` rows."""
        previous = self.strategy, self._hooks_expected
        self.strategy, self._hooks_expected = "loop", True
        try:
            yield
        finally:
            self.strategy, self._hooks_expected = previous

    _hooks_expected: bool = False

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


class HeadOnTrunk(nn.Module):
    """One member of a :class:`DeepEnsemble` with an explicit ``trunk``: ``head(trunk(*inputs))``."""

    def __init__(self, trunk: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.trunk, self.head = trunk, head

    def forward(self, *inputs: Any) -> Any:
        return self.head(self.trunk(*inputs))


class WeightSamples(DeepEnsemble):
    r"""Explicit weight samples of one architecture, e.g. from SWAG, Laplace or HMC.

    Each sample is a private copy of ``model`` with one state dict loaded, so the user's
    model is never modified.

    Args:
        model (nn.Module): the architecture; its own weights are not used.
        state_dicts (sequence of dict): one state dict per posterior sample (``strict``
            loading: every key must match).
        strategy (str): as in :class:`DeepEnsemble`.
        share_trunk (bool or str, keyword only): as in :class:`DeepEnsemble`; samples that differ
            only in some layers (last-layer Laplace) run the rest once. Default: ``"auto"``.

    Examples::

        >>> posterior = WeightSamples(model, [sd1, sd2, sd3])
        >>> posterior = WeightSamples.from_factory(sample_model, num_samples=10)
    """

    def __init__(
        self,
        model: nn.Module,
        state_dicts: Sequence[Dict[str, Tensor]],
        strategy: str = "loop",
        *,
        share_trunk: Any = "auto",
    ) -> None:
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
        super().__init__(copies, strategy=strategy, share_trunk=share_trunk)

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
