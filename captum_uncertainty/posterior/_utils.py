"""Helpers shared by the posterior sources: modes, output reading and stacking, fingerprints."""

from __future__ import annotations

import inspect
import itertools
import json
import warnings
from contextlib import contextmanager
from typing import Any, Callable, Dict, Iterable, Iterator, Mapping, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor, nn

from captum_uncertainty._hashing import new_digest, tensor_sha256, update_with_tensor

__all__ = [
    "positional_inputs",
    "spread_encoding",
    "preserved_modes",
    "refuse_active_stochastic_layers",
    "first_parameter",
    "check_members_agree",
    "reads_indices",
    "batch_size_of",
    "tensor_output",
    "OutputReader",
    "check_member_output",
    "is_scalar_kl",
    "stack_sample_outputs",
    "per_sample_slices",
    "first_row",
    "leading_rows",
    "warn_if_constant",
    "expand_to_samples",
    "IDENTITY_ATTRIBUTES",
    "submodule_names",
    "identity_value",
    "fingerprint_of",
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


def refuse_active_stochastic_layers(members: Iterable[nn.Module]) -> None:
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


def check_members_agree(modules: Sequence[nn.Module]) -> None:
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


def reads_indices(modules: Sequence[nn.Module]) -> bool:
    """Whether a module reads integer inputs (an embedding lookup), so integer inputs are expected."""
    return any(isinstance(sub, (nn.Embedding, nn.EmbeddingBag)) for module in modules for sub in module.modules())


def batch_size_of(inputs: Tuple[Any, ...]) -> int:
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


def check_member_output(output: Any, index: int, batch_size: int, reader: OutputReader = tensor_output) -> Tensor:
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


def stack_sample_outputs(outputs: Sequence[Any], batch_size: int, reader: OutputReader = tensor_output) -> Tensor:
    """Read and stack per-sample ``(N, C)`` outputs, checking every sample has the same class count."""
    checked = [check_member_output(out, s, batch_size, reader) for s, out in enumerate(outputs)]
    classes = [out.shape[1] for out in checked]
    if len(set(classes)) > 1:
        detail = ", ".join(f"sample {s}: C={c}" for s, c in enumerate(classes))
        raise ValueError(f"posterior samples return different class counts ({detail})")
    return torch.stack(checked)


def per_sample_slices(inputs: Tuple[Any, ...], sample: int) -> Tuple[Any, ...]:
    return tuple(x[sample] if isinstance(x, Tensor) else x for x in inputs)


def first_row(inputs: Tuple[Any, ...], batch: int) -> Tuple[Any, ...]:
    """Row 0 of every per-example tensor (first dimension ``batch``); other inputs unchanged."""
    return leading_rows(inputs, batch, 1)


def leading_rows(inputs: Tuple[Any, ...], batch: int, rows: int) -> Tuple[Any, ...]:
    """The first ``rows`` rows of every per-example tensor (first dimension ``batch``); other
    inputs unchanged."""
    return tuple(x[:rows] if isinstance(x, Tensor) and x.dim() > 0 and x.shape[0] == batch else x for x in inputs)


def warn_if_constant(outputs: Tensor, inputs: Tuple[Any, ...], batch: int) -> None:
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
#: weights (read by :meth:`Posterior.identity`): a seed, a draw counter, a drop
#: probability, the sampled submodules and masks drawn eagerly into a list.
IDENTITY_ATTRIBUTES = ("seed", "_draws", "p", "dropouts", "layers", "_masks")


def submodule_names(modules: Sequence[nn.Module]) -> Dict[int, str]:
    """``id(submodule) -> "<sample module index>.<name>"`` over the sample modules."""
    names: Dict[int, str] = {}
    for index, module in enumerate(modules):
        for name, sub in module.named_modules():
            names.setdefault(id(sub), f"{index}.{name}" if name else str(index))
    return names


def identity_value(value: Any, names: Dict[int, str]) -> Any:
    """A JSON form of an identity attribute: submodules by name, tensors by sha256."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, Tensor):
        return tensor_sha256(value)
    if isinstance(value, nn.Module):
        return [names.get(id(value), "?"), type(value).__qualname__]
    if isinstance(value, (list, tuple)):
        return [identity_value(item, names) for item in value]
    return repr(type(value))


def fingerprint_of(name: str, identity: Dict[str, Any], modules: Sequence[nn.Module]) -> str:
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


def spread_encoding(args: Tuple[Any, ...], kwargs: Dict[str, Any]) -> Tuple[Tuple[Any, ...], Dict[str, Any]]:
    """A tokenizer's output (``BatchEncoding`` or any mapping) given as the first positional
    argument is spread into keyword arguments, as ``model(**encoding)`` would."""
    if args and isinstance(args[0], Mapping):
        encoding = dict(args[0])
        clash = sorted(set(encoding) & set(kwargs))
        if clash:
            raise TypeError(f"{clash} given both in the encoding and as keyword arguments; give each once")
        return args[1:], {**encoding, **kwargs}
    return args, kwargs


def positional_inputs(module: Optional[nn.Module], args: Tuple[Any, ...], kwargs: Dict[str, Any]) -> Tuple[Any, ...]:
    """Keyword inputs (a tokenizer's ``BatchEncoding``, given as keyword arguments or as the
    first positional argument) laid out in the positional order of ``module.forward``, gaps
    filled with the parameters' defaults: ``(input_ids, None, attention_mask)`` for a GPT-2
    classifier. Everything downstream (path chunks, sample expansion, Captum's
    ``additional_forward_args``) then handles plain positional tensors."""
    args, kwargs = spread_encoding(args, kwargs)
    if not kwargs:
        return args
    if module is None:
        raise TypeError(
            f"keyword inputs {sorted(kwargs)} need a posterior of modules whose forward names them; this posterior "
            "runs no module: pass the inputs positionally"
        )
    try:
        parameters = list(inspect.signature(module.forward).parameters.values())
    except (TypeError, ValueError) as error:
        where = f"{type(module).__name__}.forward"
        raise TypeError(f"cannot read the signature of {where} to place {sorted(kwargs)}") from error
    positional = [p for p in parameters if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    names = [p.name for p in positional]
    unknown = sorted(set(kwargs) - set(names))
    if unknown:
        raise TypeError(
            f"keyword inputs {unknown} are not positional parameters of {type(module).__name__}.forward {tuple(names)}"
        )
    taken = [name for name in names[: len(args)] if name in kwargs]
    if taken:
        raise TypeError(f"{taken} given both positionally and as keyword inputs")
    last = max(names.index(name) for name in kwargs)
    values = list(args)
    for parameter in positional[len(args) : last + 1]:
        if parameter.name in kwargs:
            values.append(kwargs[parameter.name])
        elif parameter.default is not inspect.Parameter.empty:
            values.append(parameter.default)
        else:
            raise TypeError(f"{type(module).__name__}.forward needs {parameter.name!r}, which was not given")
    return tuple(values)
