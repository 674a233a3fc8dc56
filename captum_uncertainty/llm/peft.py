"""Posterior samples as LoRA adapters on one base model (Hugging Face ``peft``)."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

from torch import Tensor, nn

from captum_uncertainty.posterior import Posterior, preserved_modes
from captum_uncertainty.posterior._utils import batch_size_of, refuse_active_stochastic_layers, stack_sample_outputs

__all__ = ["LoRAEnsemble", "from_peft"]


class LoRAEnsemble(Posterior):
    r"""An ensemble of LoRA adapters on one base model: adapter ``s`` is posterior sample ``s``.

    The base model's weights are held once (the ``peft`` model's own); each sample switches the
    active adapter with ``set_adapter`` and runs the model in eval mode. After every call the
    previously active adapter, every parameter's ``requires_grad`` flag (``peft`` changes them
    when it switches adapters) and every ``training`` flag are restored, also when the call
    raises. Samples run one after another.

    Works with :class:`~captum_uncertainty.llm.CausalLMUncertaintyForward` (causal LMs, keyword
    inputs) and with :class:`~captum_uncertainty.UncertaintyForward` (classifiers whose outputs
    carry ``.logits``, e.g. a sequence classifier with adapters).

    Args:
        model (peft.PeftModel): a model holding the adapters.
        adapter_names (sequence of str): the adapters that are the samples, in order (at least
            one, each loaded in ``model``).

    Examples::

        >>> posterior = from_peft(peft_model, ["seed0", "seed1", "seed2"])
        >>> uf = CausalLMUncertaintyForward(posterior, "epistemic")
    """

    def __init__(self, model: nn.Module, adapter_names: Sequence[str]) -> None:
        super().__init__()
        configs = getattr(model, "peft_config", None)
        if (
            not isinstance(model, nn.Module)
            or not isinstance(configs, dict)
            or not callable(getattr(model, "set_adapter", None))
        ):
            raise TypeError(
                f"model must be a peft model with adapters (peft.PeftModel: peft_config and set_adapter), got "
                f"{type(model).__name__}"
            )
        if isinstance(adapter_names, str):
            raise TypeError(f"adapter_names must be a list of adapter names, got the string {adapter_names!r}")
        names = list(adapter_names)
        if not names:
            raise ValueError("adapter_names is empty: pass at least one adapter")
        missing = [name for name in names if name not in configs]
        if missing:
            raise ValueError(f"adapter_names {missing} are not adapters of model; it has {sorted(configs)}")
        if len(set(names)) != len(names):
            raise ValueError(f"adapter_names repeats an adapter: {names}")
        self.model = model
        self.adapter_names = names

    @property
    def num_samples(self) -> int:
        return len(self.adapter_names)

    def sample_modules(self) -> List[nn.Module]:
        return [self.model]

    def identity(self) -> Dict[str, Any]:
        return {"num_samples": self.num_samples, "adapters": list(self.adapter_names)}

    @contextmanager
    def sampling(self, sample: int) -> Iterator[nn.Module]:
        """The model in eval mode with adapter ``adapter_names[sample]`` active; the active
        adapter, ``requires_grad`` and ``training`` flags come back after the block."""
        self.check_sample_index(sample)
        refuse_active_stochastic_layers([self.model])
        with _adapter_restored(self.model), preserved_modes([self.model]), self.running(sample):
            self.model.set_adapter(self.adapter_names[sample])  # type: ignore[operator]
            yield self.model

    def forward(self, *inputs: Any) -> Tensor:
        outputs = []
        for s in range(self.num_samples):
            with self.sampling(s) as module:
                outputs.append(module(*inputs))
        return stack_sample_outputs(outputs, batch_size_of(inputs), self.output_reader)

    def forward_single(self, sample: int, *inputs: Any) -> Tensor:
        """Sample ``sample``'s ``(N, C)`` output."""
        with self.sampling(sample) as module:
            output = module(*inputs)
        return stack_sample_outputs([output], batch_size_of(inputs), self.output_reader)[0]


@contextmanager
def _adapter_restored(model: nn.Module) -> Iterator[None]:
    """Put back the active adapter(s) and every parameter's ``requires_grad`` after the block."""
    active: Any = getattr(model, "active_adapters", None) or getattr(model, "active_adapter", None)
    flags: List[Tuple[nn.Parameter, bool]] = [(p, p.requires_grad) for p in model.parameters()]
    try:
        yield
    finally:
        if active is not None:
            restore: Optional[Any] = active[0] if isinstance(active, (list, tuple)) and len(active) == 1 else active
            model.set_adapter(restore)  # type: ignore[operator]
        for parameter, flag in flags:
            parameter.requires_grad_(flag)


def from_peft(model: nn.Module, adapter_names: Optional[Sequence[str]] = None) -> LoRAEnsemble:
    """The adapters of a ``peft`` model as posterior samples (a :class:`LoRAEnsemble`).

    Args:
        model (peft.PeftModel): the base model with its adapters loaded (``load_adapter`` /
            ``add_adapter``).
        adapter_names (sequence of str, optional): the adapters to use, in order. Default: every
            adapter of ``model``, in the order they were added.

    Returns:
        LoRAEnsemble: one sample per adapter, sharing the base model's weights.

    Examples::

        >>> peft_model = PeftModel.from_pretrained(base, "run0", adapter_name="run0")
        >>> peft_model.load_adapter("run1", adapter_name="run1")
        >>> uf = CausalLMUncertaintyForward(from_peft(peft_model), "epistemic")
    """
    if adapter_names is None:
        configs = getattr(model, "peft_config", None)
        if not isinstance(configs, dict):
            raise TypeError(f"model must be a peft model with adapters, got {type(model).__name__}")
        adapter_names = list(configs)
    return LoRAEnsemble(model, adapter_names)
