r"""The uncertainty of a causal language model's next tokens as a Captum forward function.

At every scored position ``t`` the ``S`` posterior samples give next-token distributions
``p_s(. | x_{<t})``; their entropy decomposition (total ``H[mean_s p_s]``, aleatoric
``mean_s H[p_s]``, epistemic the mutual information) is the one of
:class:`~captum_uncertainty.Categorical`, computed from the logits in log space. A prompt alone
scores the next token after its last real token; a prompt with a continuation (``target_ids``)
scores every continuation token under teacher forcing, and the positions are reduced to one
number per sequence.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from captum_uncertainty._validation import check_bool, check_choice, check_positive_int
from captum_uncertainty.likelihoods import MEASURES, Categorical, Decomposition, log_mean_probabilities
from captum_uncertainty.llm._utils import TokenBatch, run_samples, token_batch
from captum_uncertainty.posterior import Posterior, as_posterior
from captum_uncertainty.posterior._utils import spread_encoding

__all__ = ["REDUCTIONS", "SUPPORTED_REDUCTIONS", "CausalLMUncertaintyForward"]

#: The ``reduction`` choices of :class:`CausalLMUncertaintyForward`: how the scored positions of a
#: sequence are reduced.
SUPPORTED_REDUCTIONS = ("sum", "mean", "none")
#: Deprecated alias of :data:`SUPPORTED_REDUCTIONS`, kept for one release.
REDUCTIONS = SUPPORTED_REDUCTIONS

_NEXT_TOKEN = Categorical("logits")


class CausalLMUncertaintyForward(nn.Module):
    r"""Total, aleatoric or epistemic uncertainty of a causal LM's next tokens, per sequence.

    ``forward(input_ids, attention_mask=None, target_ids=None, target_mask=None)`` runs every
    posterior sample once on the prompt (and the continuation, teacher-forced), takes at each
    scored position the ``S`` next-token distributions and returns their decomposition's
    ``measure`` in nats:

    * no ``target_ids``: the uncertainty of the next token after each prompt, ``(N,)``;
    * with ``target_ids`` ``(N, T)`` (or ``(T,)`` / ``(1, T)`` for every prompt): the
      uncertainty at each continuation token (the distribution it is drawn from, given the
      prompt and the continuation before it), reduced by ``reduction``: ``"sum"`` (the
      default: the decomposition is additive over positions, so the sum of the per-token
      attributions is the sequence's), ``"mean"`` over the real tokens, or ``"none"``
      (``(N, T)``, zeros at padding).

    Padding on either side is handled: the attention mask hides it and position ids count only
    real tokens, so a row's value does not depend on its padding or on the other rows. A
    continuation shorter than ``T`` marks its padding in ``target_mask``. Each call is one
    full pass per sample: no key-value cache is carried between calls. A tokenizer's output
    (``BatchEncoding`` or any mapping) is accepted as keyword arguments
    (``forward(**encoding)``) or as the first argument.

    Posterior samples of an LM: a list of Hugging Face causal LMs (a deep ensemble, run in
    eval mode), :class:`~captum_uncertainty.MCDropout` (with ``mask_layout="feature"`` its
    masks do not depend on the prompt's length), or :func:`~captum_uncertainty.llm.from_peft`
    (LoRA adapters on one base model). Every sample is called as the user's module with
    keyword arguments, through :meth:`Posterior.sampling <captum_uncertainty.Posterior.sampling>`.

    Args:
        posterior (Posterior or sequence of nn.Module): the samples; a list of models is a
            deep ensemble.
        measure (str): ``"total"``, ``"aleatoric"`` or ``"epistemic"``. Default: ``"total"``.
        reduction (str, keyword only): ``"sum"``, ``"mean"`` or ``"none"`` over the scored
            positions. Default: ``"sum"`` (additive, see above).
        validate (bool, keyword only): check that the samples' log-probabilities are finite.
            Default: ``True``.

    Examples::

        >>> uf = CausalLMUncertaintyForward([gpt_a, gpt_b, gpt_c], "epistemic")
        >>> encoding = tokenizer(["The capital of France is"], return_tensors="pt")
        >>> uf(**encoding)                                   # (1,): the next token's mutual information
        >>> uf(**encoding, target_ids=continuation)          # (1,): summed over the continuation
        >>> per_token = uf.position_decomposition(**encoding, target_ids=continuation)   # (N, T) each
    """

    def __init__(
        self, posterior: Any, measure: str = "total", *, reduction: str = "sum", validate: bool = True
    ) -> None:
        super().__init__()
        self.posterior: Posterior = as_posterior(posterior)
        self.measure = check_choice(measure, "measure", MEASURES)
        self.reduction = check_choice(reduction, "reduction", SUPPORTED_REDUCTIONS)
        self.validate = check_bool(validate, "validate")

    @property
    def num_samples(self) -> int:
        """Number of posterior samples ``S``."""
        return self.posterior.num_samples

    @property
    def device(self) -> torch.device:
        """The device of the first sample's parameters (CPU without parameters)."""
        for module in self.posterior.sample_modules():
            for parameter in module.parameters():
                return parameter.device
        return torch.device("cpu")

    def with_measure(self, measure: str) -> "CausalLMUncertaintyForward":
        """A new forward sharing this posterior, returning another measure."""
        return CausalLMUncertaintyForward(self.posterior, measure, reduction=self.reduction, validate=self.validate)

    def batch(self, *args: Any, **kwargs: Any) -> TokenBatch:
        """The token batch :meth:`forward` scores, from the same arguments."""
        args, kwargs = spread_encoding(args, kwargs)
        return _batch_from(args, kwargs)

    def sample_log_probabilities(self, *args: Any, **kwargs: Any) -> Tensor:
        """Each sample's next-token log-probabilities at the scored positions, ``(S, N, T, V)``."""
        return self._log_probabilities(self.batch(*args, **kwargs))

    def log_predictive(self, *args: Any, **kwargs: Any) -> Tensor:
        """``log mean_s p_s`` at the scored positions, ``(N, T, V)``: the posterior predictive."""
        return log_mean_probabilities(self.sample_log_probabilities(*args, **kwargs))

    def position_decomposition(self, *args: Any, **kwargs: Any) -> Decomposition:
        """Total, aleatoric and epistemic uncertainty at every scored position, each ``(N, T)``
        (``T = 1`` without a continuation), zero at padding."""
        return self.scores(self.batch(*args, **kwargs))

    def decompose(self, *args: Any, **kwargs: Any) -> Decomposition:
        """All three measures, reduced over positions as ``reduction`` says."""
        batch = self.batch(*args, **kwargs)
        return self.reduce(self.scores(batch), batch.valid)

    def forward(self, *args: Any, **kwargs: Any) -> Tensor:
        """The measure per sequence: ``(N,)``, or ``(N, T)`` with ``reduction="none"``."""
        return self.decompose(*args, **kwargs).select(self.measure)

    def scores(self, batch: TokenBatch, embeds: Optional[Sequence[Tensor]] = None) -> Decomposition:
        """The per-position decomposition of ``batch``, each sample fed ``embeds[s]`` (its
        token embeddings) instead of the ids when given: what gradient methods differentiate."""
        return self.positions_of(batch, self._log_probabilities(batch, embeds))

    def positions_of(self, batch: TokenBatch, log_p: Tensor) -> Decomposition:
        """The decomposition at each position from ``(S, N, T, V)`` log-probabilities."""
        samples, rows, positions, vocabulary = log_p.shape
        flat = _NEXT_TOKEN.decompose(log_p.reshape(samples, rows * positions, vocabulary), validate=False)
        zero = log_p.new_zeros(())
        return Decomposition(*(torch.where(batch.valid, t.reshape(rows, positions), zero) for t in flat))

    def reduce(self, terms: Decomposition, valid: Tensor) -> Decomposition:
        """Positions reduced as ``reduction`` says."""
        if self.reduction == "none":
            return terms
        sums = Decomposition(*(t.sum(1) for t in terms))
        if self.reduction == "sum":
            return sums
        counts = valid.sum(1).clamp(min=1).to(terms.total.dtype)
        return Decomposition(*(t / counts for t in sums))

    def generate(
        self,
        input_ids: Tensor,
        attention_mask: Optional[Tensor] = None,
        max_new_tokens: int = 25,
        eos_token_id: Optional[int] = None,
    ) -> Tuple[Tensor, Tensor]:
        """Greedy continuation from the posterior predictive ``mean_s p_s`` (not from one sample).

        Each step runs every sample on the prompt and the tokens so far (no cache) and appends
        the most probable token; a row that produced ``eos_token_id`` is done (later positions
        are padding in the returned mask).

        Returns:
            (Tensor, Tensor): ``target_ids`` and ``target_mask``, each ``(N, T)`` with
            ``T <= max_new_tokens``.
        """
        check_positive_int(max_new_tokens, "max_new_tokens")
        prompt = token_batch(input_ids, attention_mask)
        rows = prompt.input_ids.shape[0]
        targets = prompt.input_ids.new_zeros((rows, 0))
        mask = prompt.attention_mask.new_zeros((rows, 0))
        with torch.no_grad():
            for _ in range(max_new_tokens):
                extended = torch.cat([prompt.input_ids, targets], 1)
                extended_mask = torch.cat([prompt.attention_mask, mask], 1)
                step = token_batch(extended, extended_mask)
                following = log_mean_probabilities(self._log_probabilities(step))[:, -1].argmax(-1)
                alive = mask[:, -1] if mask.shape[1] else torch.ones_like(following)
                if mask.shape[1] and eos_token_id is not None:
                    alive = alive * (targets[:, -1] != eos_token_id).to(alive.dtype)
                if not bool(alive.any()):
                    break
                targets = torch.cat([targets, following.unsqueeze(1)], 1)
                mask = torch.cat([mask, alive.unsqueeze(1)], 1)
        return targets, mask

    def _log_probabilities(self, batch: TokenBatch, embeds: Optional[Sequence[Tensor]] = None) -> Tensor:
        log_p = run_samples(self.posterior, batch, embeds)
        if self.validate and not bool(torch.isfinite(log_p.detach()).all()):
            raise ValueError("a posterior sample returned non-finite next-token logits (NaN or inf)")
        return log_p

    def extra_repr(self) -> str:
        return f"measure={self.measure!r}, samples={self.num_samples}, reduction={self.reduction!r}"


_ARGUMENTS = ("input_ids", "attention_mask", "target_ids", "target_mask")


def _batch_from(args: Tuple[Any, ...], kwargs: dict) -> TokenBatch:
    """``token_batch`` from positional and keyword arguments named as the forward's; a
    tokenizer's ``token_type_ids`` are accepted and unused (a causal LM has none)."""
    if len(args) > len(_ARGUMENTS):
        raise TypeError(f"forward takes at most {len(_ARGUMENTS)} positional arguments {_ARGUMENTS}, got {len(args)}")
    values = dict(zip(_ARGUMENTS, args))
    kwargs = {k: v for k, v in kwargs.items() if k != "token_type_ids"}
    for name, value in kwargs.items():
        if name not in _ARGUMENTS:
            raise TypeError(f"forward got an unexpected keyword argument {name!r}; it takes {_ARGUMENTS}")
        if name in values:
            raise TypeError(f"forward got {name!r} both positionally and as a keyword")
        values[name] = value
    if "input_ids" not in values:
        raise TypeError("forward needs input_ids (N, L): token ids, or a tokenizer's output")
    return token_batch(**values)
