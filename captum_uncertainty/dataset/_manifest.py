"""The run's configuration and ``out/_manifest.json``: writing, reading and comparing it."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import Tensor

from captum_uncertainty._hashing import values_sha256
from captum_uncertainty._version import __version__
from captum_uncertainty.dataset._folder import atomic_write
from captum_uncertainty.forward import UncertaintyForward
from captum_uncertainty.likelihoods import Gaussian

__all__ = [
    "LAYOUT_KEYS",
    "MANIFEST",
    "POSTERIOR_KEY",
    "RUN_CONFIG_KEYS",
    "UNITS_KEY",
    "check_posterior",
    "describe_differences",
    "differing_keys",
    "json_safe",
    "posterior_fingerprint",
    "read_manifest",
    "run_config",
    "units_of",
    "write_json",
]

#: File name of the manifest inside ``out`` (the leading ``_`` keeps Parquet readers off it).
MANIFEST = "_manifest.json"
#: The manifest's ``format``: a folder of another format is not continued.
_MANIFEST_FORMAT = "captum_uncertainty.attribute_dataset/1"
#: Manifest keys that must match for a call to continue an existing ``out``.
RUN_CONFIG_KEYS = (
    "format",
    "library_version",
    "explainer",
    "measure",
    "forward_settings",
    "num_samples",
    "attribute_kwargs",
    "batch_size",
    "shard_size",
    "seed",
    "num_inputs",
)
#: Manifest keys describing the written columns (taken from the first attributed batch).
LAYOUT_KEYS = ("columns", "map_columns", "map_shape", "map_dtype")
#: Manifest key of ``Posterior.fingerprint()`` (``None``: the posterior has none); must match
#: for a call to continue an existing ``out``.
POSTERIOR_KEY = "posterior_fingerprint"
#: Manifest key of the units of the uncertainties and maps (:func:`units_of`). Descriptive only:
#: it follows from the forward's likelihood, which ``forward_settings`` already compares, so it
#: is not compared on a resume and a folder written before it existed is continued.
UNITS_KEY = "units"


def json_safe(value: Any) -> Any:
    """A JSON form of an ``attribute`` argument; tensors become shape, dtype and a sha256 of their bytes."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else repr(value)
    if isinstance(value, np.generic):
        return json_safe(value.item())
    if isinstance(value, (Tensor, np.ndarray)):
        return _tensor_summary(value)
    if isinstance(value, (list, tuple)):
        return [json_safe(item) for item in value]
    if isinstance(value, dict):
        return {str(key): json_safe(value[key]) for key in sorted(value, key=str)}
    if isinstance(value, (torch.dtype, torch.device)):
        return str(value)
    if callable(value):
        return {"callable": _qualified_name(value)}
    return {"object": _qualified_name(type(value)), "repr": re.sub(r" at 0x[0-9a-fA-F]+", "", repr(value))}


def _tensor_summary(value: Union[Tensor, np.ndarray]) -> Dict[str, Any]:
    return {"tensor": {"shape": list(value.shape), "dtype": str(value.dtype), "sha256": values_sha256(value)}}


def _qualified_name(obj: Any) -> str:
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', type(obj).__qualname__)}"


def units_of(forward: Any) -> Optional[str]:
    """The units of what an :class:`~captum_uncertainty.UncertaintyForward` returns and of its maps:
    ``"nats"`` for a classifier (Categorical, Bernoulli: entropies), ``"squared output units"``
    for a regressor (Gaussian: variances); ``None`` for anything else."""
    likelihood = getattr(forward, "likelihood", None) if isinstance(forward, UncertaintyForward) else None
    if likelihood is None:
        return None
    if likelihood.is_classifier:
        return "nats"
    if isinstance(likelihood, Gaussian):
        return "squared output units"
    return None


def run_config(
    explainer: Any,
    forward: UncertaintyForward,
    attribute_kwargs: Dict[str, Any],
    batch_size: Optional[int],
    shard_size: int,
    seed: int,
    num_inputs: Optional[int],
    fingerprint: Optional[str] = None,
) -> Dict[str, Any]:
    """The manifest's configuration keys (:data:`RUN_CONFIG_KEYS`, :data:`POSTERIOR_KEY` and the
    descriptive :data:`UNITS_KEY`) of one call."""

    try:
        num_samples: Optional[int] = int(forward.num_samples)
    except ValueError:  # a SampleCallable learns S on its first call
        num_samples = None
    return {
        "format": _MANIFEST_FORMAT,
        "library_version": __version__,
        "explainer": type(explainer).__name__,
        "measure": forward.measure,
        # what shapes the outputs; validate only adds checks
        "forward_settings": json_safe(forward.likelihood.settings()),
        "num_samples": num_samples,
        "attribute_kwargs": json_safe(attribute_kwargs),
        "batch_size": batch_size,
        "shard_size": shard_size,
        "seed": seed,
        "num_inputs": num_inputs,
        POSTERIOR_KEY: fingerprint,
        UNITS_KEY: units_of(forward),
    }


def posterior_fingerprint(forward: UncertaintyForward) -> Tuple[Optional[str], Optional[str]]:
    """``(fingerprint, None)`` of the forward's posterior, or ``(None, why)`` if it has none.

    Hashes every parameter and buffer of the sample modules once (see ``Posterior.fingerprint()``);
    a posterior that cannot be fingerprinted (a ``SampleCallable`` without ``modules`` or
    ``fingerprint=``) gives the reason, recorded as a ``None`` fingerprint: such a run cannot be
    continued.
    """
    try:
        return forward.posterior.fingerprint(), None
    except ValueError as error:
        return None, str(error)


def check_posterior(
    folder: Path, stored: Dict[str, Any], config: Dict[str, Any], unfingerprinted: Optional[str]
) -> None:
    """Refuse (``ValueError``) to continue ``folder`` unless both runs have the same posterior fingerprint.

    ``unfingerprinted`` is why this call's posterior has no fingerprint (``None`` if it has one).
    """
    fix = f"use a new out folder, or delete {folder} to start over"
    old, new = stored.get(POSTERIOR_KEY), config.get(POSTERIOR_KEY)
    if POSTERIOR_KEY not in stored:
        raise ValueError(
            f"out {folder} records no {POSTERIOR_KEY} (written by an older version of attribute_dataset), so "
            f"nothing says its maps come from this posterior; {fix}"
        )
    if old is None:
        raise ValueError(
            f"the run in {folder} was made with a posterior without a fingerprint, so it cannot be continued: "
            "nothing says its maps come from this posterior. Give the posterior one (pass SampleCallable(..., "
            f"fingerprint='...'), e.g. a checkpoint's sha256, or modules=[...]) and {fix}"
        )
    if new is None:
        raise ValueError(
            f"the run in {folder} was made with a posterior of fingerprint {old[:16]}..., but this posterior has "
            f"none ({unfingerprinted}); pass SampleCallable(..., fingerprint='...') with the fingerprint that run "
            f"used, or {fix}"
        )
    if old != new:
        raise ValueError(
            f"the posterior's weights differ from the run in {folder} (or its seed, masks or samples): "
            f"{POSTERIOR_KEY} {old[:16]}... there, {new[:16]}... now (a retrained or reloaded posterior of the "
            f"same architecture has other weights); its maps belong to that posterior: {fix}"
        )


def read_manifest(out: Union[str, Path]) -> Dict[str, Any]:
    """The manifest of a folder written by :func:`~captum_uncertainty.attribute_dataset`.

    Args:
        out (str or Path): the output folder.

    Returns:
        dict: the configuration (``explainer``, ``measure``, ``num_samples``,
        ``attribute_kwargs``, ``batch_size``, ``shard_size``, ``seed``, ``library_version``,
        ``posterior_fingerprint``: ``Posterior.fingerprint()``, ``None`` if it has none), the
        ``units`` of the uncertainties and maps (``"nats"`` for a classifier,
        ``"squared output units"`` for a Gaussian regressor; ``None`` if not known, as in a
        folder written by an older version), the columns (``columns``, ``map_columns``,
        ``map_shape``, ``map_dtype``) and, once the run has finished, ``num_inputs``,
        ``num_shards`` and ``complete=True``.

    Examples::

        >>> manifest = read_manifest("out/maps")
        >>> frame = pandas.read_parquet("out/maps")
        >>> maps = numpy.stack(frame["attribution"]).reshape(-1, *manifest["map_shape"])
    """
    path = Path(out) / MANIFEST
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValueError(f"out {Path(out)} has no {MANIFEST}: it was not written by attribute_dataset") from None
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not valid JSON ({error}); the folder is damaged") from None
    if not isinstance(manifest, dict) or manifest.get("format") != _MANIFEST_FORMAT:
        raise ValueError(f"{path} is not a manifest of attribute_dataset (format {_MANIFEST_FORMAT!r})")
    manifest.setdefault(UNITS_KEY, None)  # written before the manifest stated its units
    return manifest


def differing_keys(stored: Dict[str, Any], config: Dict[str, Any], keys: Sequence[str]) -> List[str]:
    """Keys whose values differ (``num_inputs`` only when both runs know it)."""
    different = []
    for key in keys:
        old, new = stored.get(key), config.get(key)
        if key in ("num_inputs", "num_samples") and (old is None or new is None):
            continue
        if old != new:
            different.append(key)
    return different


def describe_differences(stored: Dict[str, Any], config: Dict[str, Any], keys: Sequence[str]) -> str:
    """``"key: <stored> there, <config> now; ..."`` for the error messages."""

    def short(value: Any) -> str:
        text = json.dumps(value, sort_keys=True)
        return text if len(text) <= 80 else text[:77] + "..."

    return "; ".join(f"{key}: {short(stored.get(key))} there, {short(config.get(key))} now" for key in keys)


def write_json(path: Path, data: Dict[str, Any]) -> None:
    """Write ``data`` to ``path`` durably and atomically (:func:`~captum_uncertainty.dataset._folder.atomic_write`:
    a hidden temporary file, fsync'd, ``os.replace``, then the folder fsync'd)."""
    text = json.dumps(data, indent=2, sort_keys=True) + "\n"
    atomic_write(path, lambda handle: handle.write(text.encode("utf-8")))
