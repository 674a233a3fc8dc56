r"""Captum's perturbation methods on a language model's uncertainty, through its LLM attribution API.

Captum's :class:`~captum.attr.LLMAttribution` attributes the log-probability of target tokens.
Here the attributed quantity is the uncertainty of the continuation's tokens (per position and
reduced over positions, see :class:`~captum_uncertainty.llm.CausalLMUncertaintyForward`); the
inputs, the perturbation methods and the result type are Captum's own.
"""

from __future__ import annotations

from copy import copy
from typing import Any, Dict, Optional, Sequence, Tuple, Union

import torch
from captum.attr import (
    Attribution,
    FeatureAblation,
    KernelShap,
    Lime,
    LLMAttributionResult,
    PerturbationAttribution,
    ShapleyValues,
    ShapleyValueSampling,
    TextTemplateInput,
    TextTokenInput,
)
from torch import Tensor

from captum_uncertainty._validation import check_bool, check_positive_int
from captum_uncertainty.likelihoods import Decomposition
from captum_uncertainty.llm._utils import (
    generated_target,
    pretty_tokens,
    prompt_ids,
    target_token_ids,
    token_batch,
)
from captum_uncertainty.llm.forward import CausalLMUncertaintyForward

__all__ = ["LLMUncertaintyAttribution"]


class LLMUncertaintyAttribution(Attribution):
    r"""Which prompt tokens make a language model unsure: Captum's perturbation methods, with the
    uncertainty of the continuation as the target.

    Built like Captum's :class:`~captum.attr.LLMAttribution`, from a perturbation method whose
    ``forward_func`` is a :class:`~captum_uncertainty.llm.CausalLMUncertaintyForward`, and a
    tokenizer; :meth:`attribute` takes Captum's ``TextTokenInput`` or ``TextTemplateInput`` and
    returns Captum's ``LLMAttributionResult``, so ``plot_token_attr`` and ``plot_seq_attr`` work.
    The explained value is the forward's measure (total, aleatoric or epistemic, in nats) of the
    continuation given the perturbed prompt, computed in one teacher-forced pass per sample:

    * ``seq_attr``: attribution of the sequence's uncertainty, the positions reduced as the
      forward's ``reduction`` says (``"sum"`` or ``"mean"``; summed for ``"none"``);
    * ``token_attr`` (``FeatureAblation``, ``ShapleyValueSampling``, ``ShapleyValues``): one row
      per continuation token, the attribution of that position's uncertainty. Lime and
      KernelShap fit one surrogate per target and give ``seq_attr`` only, as in Captum.

    Removed features take the input's baseline (Captum's rule: ``TextTokenInput(...,
    baselines=...)``, a template's ``baselines``). ShapleyValues are efficient: the sequence
    attributions sum to ``U(prompt) - U(all features removed)``. ``decompose=True`` returns a
    :class:`~captum_uncertainty.Decomposition` of three results, total, aleatoric and epistemic
    (= total - aleatoric). For FeatureAblation and the Shapley methods the three come from the
    same perturbed passes (they are linear in the explained outputs); for Lime and KernelShap
    the method runs once per measure. A continuation of any length works; with no ``target``
    it is generated greedily from the posterior predictive (:meth:`CausalLMUncertaintyForward.generate`).

    Args:
        attr_method (PerturbationAttribution): ``FeatureAblation``, ``ShapleyValueSampling``,
            ``ShapleyValues``, ``Lime`` or ``KernelShap``, created with a
            ``CausalLMUncertaintyForward``; it is copied, the original is not changed.
        tokenizer: the language model's tokenizer (``encode``, ``decode``,
            ``convert_ids_to_tokens``).

    Examples::

        >>> uf = CausalLMUncertaintyForward([lm_a, lm_b, lm_c], "epistemic")
        >>> llm_attr = LLMUncertaintyAttribution(FeatureAblation(uf), tokenizer)
        >>> inp = TextTokenInput("The zorp sat on the", tokenizer)
        >>> result = llm_attr.attribute(inp, target=" mat")
        >>> result.seq_attr                    # (n_prompt_tokens,): which token made it unsure
        >>> result.plot_token_attr(show=True)
        >>> total, aleatoric, epistemic = llm_attr.attribute(inp, target=" mat", decompose=True)
    """

    SUPPORTED_METHODS = (FeatureAblation, ShapleyValueSampling, ShapleyValues, Lime, KernelShap)
    SUPPORTED_PER_TOKEN_ATTR_METHODS = (FeatureAblation, ShapleyValueSampling, ShapleyValues)
    SUPPORTED_INPUTS = (TextTemplateInput, TextTokenInput)

    def __init__(self, attr_method: PerturbationAttribution, tokenizer: Any) -> None:
        if not isinstance(attr_method, self.SUPPORTED_METHODS):
            names = ", ".join(m.__name__ for m in self.SUPPORTED_METHODS)
            raise TypeError(f"attr_method must be one of {names} (an instance), got {type(attr_method).__name__}")
        forward = attr_method.forward_func
        if not isinstance(forward, CausalLMUncertaintyForward):
            raise TypeError(
                f"attr_method must be built on a CausalLMUncertaintyForward, got a {type(forward).__name__}: "
                "e.g. FeatureAblation(CausalLMUncertaintyForward(models, 'epistemic'))"
            )
        super().__init__(forward)
        self.uncertainty: CausalLMUncertaintyForward = forward
        self.tokenizer = tokenizer
        self.include_per_token_attr = isinstance(attr_method, self.SUPPORTED_PER_TOKEN_ATTR_METHODS)
        self.attr_method = copy(attr_method)
        self.attr_method.forward_func = self._perturbed_uncertainty

    def attribute(
        self,
        inp: Union[TextTokenInput, TextTemplateInput],
        target: Union[str, Tensor, None] = None,
        num_trials: int = 1,
        gen_args: Optional[Dict[str, Any]] = None,
        *,
        decompose: bool = False,
        **kwargs: Any,
    ) -> Union[LLMAttributionResult, Decomposition]:
        """Attribute the continuation's uncertainty to the prompt's interpretable features.

        Args:
            inp (TextTokenInput or TextTemplateInput): the prompt, as in Captum.
            target (str or Tensor, optional): the continuation (a string, encoded without special
                tokens, or token ids). Default: ``None``, generated greedily from the posterior
                predictive.
            num_trials (int): runs averaged (for the sampling methods). Default: 1.
            gen_args (dict, optional): with ``target=None``, ``max_new_tokens`` (default 25) and
                ``eos_token_id`` (default the tokenizer's).
            decompose (bool, keyword only): return total, aleatoric and epistemic results.
            **kwargs: passed to the method's ``attribute`` (``n_samples``, ``perturbations_per_eval``, ...).

        Returns:
            LLMAttributionResult or Decomposition: ``seq_attr`` ``(n_features,)`` and, for the
            per-token methods, ``token_attr`` ``(n_target_tokens, n_features)``, in nats; a
            ``Decomposition`` of three results with ``decompose=True``.
        """
        check_positive_int(num_trials, "num_trials")
        check_bool(decompose, "decompose")
        if not isinstance(inp, self.SUPPORTED_INPUTS):
            raise TypeError(f"inp must be a TextTokenInput or TextTemplateInput, got {type(inp).__name__}")
        targets = self._target(inp, target, gen_args)
        measures = ("total", "aleatoric") if decompose else (self.uncertainty.measure,)
        if self.include_per_token_attr:
            maps = self._run(inp, targets, measures, num_trials, kwargs)
        else:  # one surrogate per measure
            maps = [self._run(inp, targets, (measure,), num_trials, kwargs)[0] for measure in measures]
        results = [self._result(inp, targets, m) for m in maps]
        if not decompose:
            return results[0]
        return Decomposition(results[0], results[1], self._result(inp, targets, maps[0] - maps[1]))

    def _target(self, inp: Any, target: Any, gen_args: Optional[Dict[str, Any]]) -> Tensor:
        device = self.uncertainty.device
        if target is not None:
            if gen_args is not None:
                raise ValueError("gen_args is only read when target is None (the continuation is generated)")
            return target_token_ids(target, self.tokenizer, device)
        ids, mask = prompt_ids(inp.to_model_input(), self.tokenizer, device)
        return generated_target(self.uncertainty, ids, mask, self.tokenizer, gen_args)

    def _run(
        self, inp: Any, targets: Tensor, measures: Sequence[str], num_trials: int, kwargs: Dict[str, Any]
    ) -> Sequence[Tensor]:
        """One map per measure, each ``(1 + T, n_features)`` (per-token methods) or ``(1, n_features)``."""
        rows = 1 + targets.numel() if self.include_per_token_attr else 1
        shape = (len(measures) * rows, inp.n_itp_features)
        total: Optional[Tensor] = None
        for _ in range(num_trials):
            attributions = self.attr_method.attribute(
                inp.to_tensor().to(self.uncertainty.device),
                additional_forward_args=(inp, targets, tuple(measures)),
                **kwargs,
            )
            trial = attributions.detach().reshape(shape)
            total = trial if total is None else total + trial
        assert total is not None  # num_trials >= 1
        return list((total / num_trials).split(rows))

    def _perturbed_uncertainty(self, perturbed: Tensor, inp: Any, targets: Tensor, measures: Tuple[str, ...]) -> Tensor:
        """The explained outputs of each perturbed prompt: per measure the sequence's value then,
        for per-token methods, every position's: ``(rows, K)``; a scalar surrogate target ``(rows,)``."""
        rows = perturbed if perturbed.dim() == 2 else perturbed.reshape(1, -1)
        values = [self._values(inp.to_model_input(row.unsqueeze(0)), targets, measures) for row in rows]
        stacked = torch.stack(values)
        return stacked if self.include_per_token_attr else stacked[:, 0]

    def _values(self, model_input: Any, targets: Tensor, measures: Tuple[str, ...]) -> Tensor:
        forward = self.uncertainty
        ids, mask = prompt_ids(model_input, self.tokenizer, forward.device)
        batch = token_batch(ids, mask, targets.reshape(1, -1))
        with torch.no_grad():
            positions = forward.scores(batch)
            # reduction="none" keeps positions; the sequence's row is then their sum
            reduced = (
                Decomposition(*(t.sum(1) for t in positions))
                if forward.reduction == "none"
                else forward.reduce(positions, batch.valid)
            )
        parts = []
        for measure in measures:
            parts.append(reduced.select(measure).reshape(1))
            if self.include_per_token_attr:
                parts.append(positions.select(measure)[0])
        return torch.cat(parts)

    def _result(self, inp: Any, targets: Tensor, attributions: Tensor) -> LLMAttributionResult:
        attributions = inp.format_attr(attributions)
        return LLMAttributionResult(
            seq_attr=attributions[0],
            token_attr=attributions[1:] if self.include_per_token_attr else None,
            input_tokens=inp.values,
            output_tokens=pretty_tokens(targets, self.tokenizer),
            inp=inp,
        )
