r"""Layer Integrated Gradients of a language model's uncertainty on every sample's embeddings.

Captum's :class:`~captum.attr.LLMGradientAttribution` runs ``LayerIntegratedGradients`` on one
model's embedding layer towards one token's log-probability. The uncertainty of ``S`` posterior
samples depends on the token embeddings ``e_1, ..., e_S`` of all of them (ensemble members have
their own embedding tables; MC-dropout and LoRA samples share one, run ``S`` times), so all of
them move together along ``e_s(a) = e_s(x') + a (e_s(x) - e_s(x'))`` and

.. math:: U(x) - U(x') = \sum_s \int_0^1 \nabla_{e_s} U(e_1(a), \dots, e_S(a)) \cdot
          (e_s(x) - e_s(x')) \, da ,

summed over samples and over the embedding dimension: one number per prompt token, complete.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple, Union

import torch
from captum.attr import Attribution, LayerIntegratedGradients, LLMAttributionResult, TextTokenInput
from torch import Tensor

from captum_uncertainty._validation import check_bool, check_optional_positive_int, check_positive_int
from captum_uncertainty.attr._utils.path import quadrature
from captum_uncertainty.likelihoods import Decomposition
from captum_uncertainty.llm._utils import (
    TokenBatch,
    generated_target,
    input_embeddings,
    pretty_tokens,
    prompt_ids,
    target_token_ids,
    token_batch,
)
from captum_uncertainty.llm.forward import CausalLMUncertaintyForward

__all__ = ["LLMGradientUncertaintyAttribution"]


class LLMGradientUncertaintyAttribution(Attribution):
    r"""Which prompt tokens make a language model unsure: Layer Integrated Gradients of the
    continuation's uncertainty on every posterior sample's token embeddings at once.

    The counterpart of Captum's :class:`~captum.attr.LLMGradientAttribution` for uncertainty:
    it takes Captum's ``TextTokenInput`` and returns Captum's ``LLMAttributionResult``, with
    ``token_attr[t]`` the attribution of the uncertainty at continuation token ``t`` and
    ``seq_attr`` that of the sequence (the tokens reduced as the forward's ``reduction`` says,
    which is linear, so ``seq_attr`` is the same reduction of ``token_attr``). The baseline
    prompt replaces every interpretable token by the input's ``baselines`` token id (Captum's
    rule); the continuation's tokens do not move. Complete: ``seq_attr.sum()`` equals
    ``U(prompt) - U(baseline prompt)`` up to the quadrature error, reported as the convergence
    delta. Every sample must expose ``get_input_embeddings()`` and accept ``inputs_embeds`` (all
    Hugging Face causal LMs do). The user's models keep their flags; only the path's
    embeddings require gradients.

    Args:
        forward_func (CausalLMUncertaintyForward or LayerIntegratedGradients): the uncertainty
            to explain, or a Captum ``LayerIntegratedGradients`` built on one (its layer is
            replaced by every sample's embedding layer; its ``multiplies_by_inputs`` is kept),
            so code written for Captum works by swapping the class.
        tokenizer: the language model's tokenizer.
        multiply_by_inputs (bool): multiply by ``e_s(x) - e_s(x')`` (complete, the default) or
            return the path-integrated gradients summed over samples.

    Examples::

        >>> uf = CausalLMUncertaintyForward([lm_a, lm_b, lm_c], "epistemic")
        >>> attr = LLMGradientUncertaintyAttribution(uf, tokenizer)
        >>> result, delta = attr.attribute(TextTokenInput(prompt, tokenizer), target=" mat",
        ...                                n_steps=64, return_convergence_delta=True)
        >>> result.seq_attr, result.token_attr          # (P,), (T, P) in nats
    """

    def __init__(
        self,
        forward_func: Union[CausalLMUncertaintyForward, LayerIntegratedGradients],
        tokenizer: Any,
        multiply_by_inputs: bool = True,
    ) -> None:
        if isinstance(forward_func, LayerIntegratedGradients):
            multiply_by_inputs = forward_func.multiplies_by_inputs
            forward_func = forward_func.forward_func
        if not isinstance(forward_func, CausalLMUncertaintyForward):
            raise TypeError(
                f"forward_func must be a CausalLMUncertaintyForward (or a LayerIntegratedGradients built on one), got "
                f"{type(forward_func).__name__}"
            )
        super().__init__(forward_func)
        self.uncertainty: CausalLMUncertaintyForward = forward_func
        self.tokenizer = tokenizer
        self._multiply_by_inputs = check_bool(multiply_by_inputs, "multiply_by_inputs")

    @property
    def multiplies_by_inputs(self) -> bool:
        return self._multiply_by_inputs

    def has_convergence_delta(self) -> bool:
        return True

    def attribute(
        self,
        inp: TextTokenInput,
        target: Union[str, Tensor, None] = None,
        gen_args: Optional[Dict[str, Any]] = None,
        n_steps: int = 50,
        method: str = "gausslegendre",
        internal_batch_size: Optional[int] = None,
        return_convergence_delta: bool = False,
        *,
        decompose: bool = False,
    ) -> Any:
        """Attribute the continuation's uncertainty to the prompt's tokens.

        Args:
            inp (TextTokenInput): the prompt, as in Captum (``skip_tokens`` are not attributed,
                ``baselines`` is the replacement token id).
            target (str or Tensor, optional): the continuation. Default: generated greedily from
                the posterior predictive.
            gen_args (dict, optional): with ``target=None``: ``max_new_tokens`` (default 25),
                ``eos_token_id``.
            n_steps (int): integration points. Default: 50.
            method (str): ``"gausslegendre"`` (default) or a Riemann rule, as Captum's IG.
            internal_batch_size (int, optional): path points per pass. Default: all at once.
            return_convergence_delta (bool): also return ``seq_attr.sum() - (U(x) - U(x'))``.
            decompose (bool, keyword only): a :class:`~captum_uncertainty.Decomposition` of
                three results (epistemic = total - aleatoric), from the same passes.

        Returns:
            LLMAttributionResult (or a Decomposition of three), and with
            ``return_convergence_delta`` the delta (a float; a Decomposition of three).
        """
        if not isinstance(inp, TextTokenInput):
            raise TypeError(f"inp must be a TextTokenInput, got {type(inp).__name__}")
        check_positive_int(n_steps, "n_steps")
        check_optional_positive_int(internal_batch_size, "internal_batch_size")
        check_bool(decompose, "decompose")
        forward = self.uncertainty
        device = forward.device
        ids, mask = prompt_ids(inp.to_model_input(), self.tokenizer, device)
        baseline_ids, _ = prompt_ids(inp.to_model_input(torch.zeros_like(inp.to_tensor())), self.tokenizer, device)
        if target is None:
            targets = generated_target(forward, ids, mask, self.tokenizer, gen_args)
        else:
            if gen_args is not None:
                raise ValueError("gen_args is only read when target is None (the continuation is generated)")
            targets = target_token_ids(target, self.tokenizer, device)
        measures = ("total", "aleatoric") if decompose else (forward.measure,)
        batch = token_batch(ids, mask, targets.reshape(1, -1))
        token_maps, changes = self._integrate(ids, baseline_ids, batch, measures, n_steps, method, internal_batch_size)
        if decompose:
            token_maps.append(token_maps[0] - token_maps[1])
            changes.append(changes[0] - changes[1])
        results, deltas = [], []
        for per_token, change in zip(token_maps, changes):
            per_token = self._interpretable(per_token, inp)
            sequence = self._reduced(per_token)
            results.append(
                LLMAttributionResult(
                    seq_attr=sequence,
                    token_attr=per_token,
                    input_tokens=inp.values,
                    output_tokens=pretty_tokens(targets, self.tokenizer),
                )
            )
            deltas.append(float(sequence.sum()) - change)
        result: Any = Decomposition(*results) if decompose else results[0]
        if return_convergence_delta:
            return result, (Decomposition(*deltas) if decompose else deltas[0])  # type: ignore[arg-type]
        return result

    def _reduced(self, per_token: Tensor) -> Tensor:
        if self.uncertainty.reduction == "mean":
            return per_token.mean(0)
        return per_token.sum(0)

    def _interpretable(self, per_token: Tensor, inp: TextTokenInput) -> Tensor:
        mask = inp.itp_mask
        if mask is None:
            return per_token
        return per_token[:, mask.reshape(-1).to(per_token.device)]

    def _integrate(
        self,
        ids: Tensor,
        baseline_ids: Tensor,
        batch: TokenBatch,
        measures: Tuple[str, ...],
        n_steps: int,
        method: str,
        internal_batch_size: Optional[int],
    ) -> Tuple[List[Tensor], List[float]]:
        """Per measure the ``(T, P)`` per-token attributions and ``U(x) - U(x')`` summed over
        the scored positions, as the forward reduces them."""
        forward = self.uncertainty
        prompt_length = ids.shape[1]
        ends, starts, continuations = self._embeddings(ids, baseline_ids, batch)
        nodes, weights = quadrature(method, n_steps, ends[0])
        chunk = internal_batch_size or len(nodes)
        positions = int(batch.valid.shape[1])
        integrals = [[torch.zeros_like(e) for e in ends] for _ in range(len(measures) * positions)]
        for first in range(0, len(nodes), chunk):
            alphas = nodes[first : first + chunk].to(ends[0].dtype).reshape(-1, 1, 1)
            step_weights = weights[first : first + chunk].to(ends[0].dtype)
            paths = [(b + alphas * (e - b)).detach().requires_grad_(True) for e, b in zip(ends, starts)]
            points = alphas.shape[0]
            embeds = [torch.cat([p, c.expand(points, -1, -1)], 1) for p, c in zip(paths, continuations)]
            scores = forward.scores(_repeated(batch, points), embeds)
            outputs = [scores.select(m)[:, t] for m in measures for t in range(positions)]
            for k, output in enumerate(outputs):
                grads = torch.autograd.grad((output * step_weights).sum(), paths, retain_graph=k + 1 < len(outputs))
                for s, grad in enumerate(grads):
                    integrals[k][s] += grad.sum(0)
        maps: List[Tensor] = []
        for k in range(len(integrals)):
            terms = [g * (e - b) if self._multiply_by_inputs else g for g, e, b in zip(integrals[k], ends, starts)]
            maps.append(torch.stack(terms).sum(0).sum(-1)[:prompt_length])
        per_measure = [torch.stack(maps[i * positions : (i + 1) * positions]) for i in range(len(measures))]
        changes = self._changes(ids, baseline_ids, batch, measures)
        return [m.detach() for m in per_measure], changes

    def _embeddings(
        self, ids: Tensor, baseline_ids: Tensor, batch: TokenBatch
    ) -> Tuple[List[Tensor], List[Tensor], List[Tensor]]:
        """Every sample's token embeddings of the prompt, the baseline prompt and the continuation."""
        posterior = self.uncertainty.posterior
        prompt_length = ids.shape[1]
        ends, starts, continuations = [], [], []
        with torch.no_grad():
            for s in range(posterior.num_samples):
                with posterior.sampling(s) as module:
                    layer = input_embeddings(module, s)
                    ends.append(layer(ids)[0].detach())
                    starts.append(layer(baseline_ids)[0].detach())
                    continuations.append(layer(batch.input_ids[:, prompt_length:]).detach())
        return ends, starts, continuations

    def _changes(self, ids: Tensor, baseline_ids: Tensor, batch: TokenBatch, measures: Tuple[str, ...]) -> List[float]:
        forward = self.uncertainty
        targets = batch.input_ids[:, batch.prompt_length :]
        target_mask = batch.attention_mask[:, batch.prompt_length :]
        prompt_mask = batch.attention_mask[:, : batch.prompt_length]
        with torch.no_grad():
            at_x = forward.decompose(ids, prompt_mask, targets, target_mask)
            at_baseline = forward.decompose(baseline_ids, prompt_mask, targets, target_mask)
        return [float(at_x.select(m).sum() - at_baseline.select(m).sum()) for m in measures]


def _repeated(batch: TokenBatch, points: int) -> TokenBatch:
    """One batch row per path point."""
    return TokenBatch(
        batch.input_ids.expand(points, -1),
        batch.attention_mask.expand(points, -1),
        batch.position_ids.expand(points, -1),
        batch.predicting.expand(points, -1),
        batch.valid.expand(points, -1),
        batch.prompt_length,
    )
