"""The one cache folder of the package (trained ensembles and VAEs).

``$CAPTUM_UNCERTAINTY_CACHE`` if set, else ``$XDG_CACHE_HOME/captum_uncertainty``, else
``~/.cache/captum_uncertainty``: a per-user folder, the way ``torch.hub`` picks its own, never
the current working folder.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Dict, Optional, Union

from captum_uncertainty._hashing import json_sha256

__all__ = [
    "CACHE_ENVIRONMENT_VARIABLE",
    "USER_CACHE",
    "CacheDir",
    "UserCache",
    "cache_file",
    "default_cache_dir",
    "resolve_cache_dir",
]

CACHE_ENVIRONMENT_VARIABLE = "CAPTUM_UNCERTAINTY_CACHE"


def default_cache_dir() -> Path:
    """The cache folder, read from the environment at each call."""
    explicit = os.environ.get(CACHE_ENVIRONMENT_VARIABLE)
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "captum_uncertainty"


def cache_file(cache_dir: Path, prefix: str, config: Dict[str, Any]) -> Path:
    """``cache_dir/<prefix>-<hash of config>.pt``: one file per configuration."""
    key = json_sha256(config)[:16]
    return Path(cache_dir) / f"{prefix}-{key}.pt"


class UserCache:
    """The default of every ``cache_dir`` argument: :func:`default_cache_dir`, read at call time."""

    def __repr__(self) -> str:
        return "USER_CACHE"


USER_CACHE = UserCache()

CacheDir = Optional[Union[str, Path, UserCache]]


def resolve_cache_dir(cache_dir: CacheDir) -> Optional[Path]:
    """``None`` (no cache), the user cache, or the given folder."""
    if cache_dir is None:
        return None
    return default_cache_dir() if isinstance(cache_dir, UserCache) else Path(cache_dir)
