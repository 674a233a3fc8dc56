"""The output folder's files: durable atomic writes, and the lock that keeps one run per folder.

Every file of ``out`` (shards and manifest) is written to a hidden temporary file in the same
folder, flushed and ``os.fsync``'d, renamed into place (``os.replace``), and then the folder
itself is fsync'd so that the rename survives a power cut too. Platforms that cannot fsync a
directory (Windows cannot open one; some network file systems refuse it) skip that last step.

``out/_lock`` marks a folder a run is writing (``pid``, ``host``, start time and a random
token, as JSON). It is created atomically (``O_CREAT | O_EXCL``), removed when the run ends, and
taken over only from a process of this host that is no longer alive.
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import json
import os
import re
import secrets
import socket
import time
import warnings
from pathlib import Path
from typing import IO, Any, Callable, Dict, Optional

__all__ = [
    "LOCK",
    "TEMPORARY_FILE_PATTERN",
    "acquire_lock",
    "atomic_write",
    "check_unlocked",
    "fsync_folder",
    "is_lock_file",
    "release_lock",
]

#: File name of the lock inside ``out`` (the leading ``_`` keeps Parquet readers off it).
LOCK = "_lock"
#: Hidden temporary files (shards and manifest being written: ``.<name>.tmp-<pid>-<random>``),
#: removed by a re-run. Older versions wrote ``.<name>.tmp-<pid>``.
TEMPORARY_FILE_PATTERN = re.compile(r"^\..+\.tmp-\d+(-[0-9a-f]+)?$")
#: ``errno`` values of a file system that does not support fsync on a directory.
_NO_DIRECTORY_FSYNC = {errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EBADF, errno.EACCES, errno.EPERM}
#: How long a reader waits for a lock file that was just created to get its content.
_LOCK_CONTENT_WAIT = 1.0


def fsync_folder(folder: Path) -> None:
    """``os.fsync`` the folder, so that files renamed into it survive a crash of the machine.

    Skipped where a directory cannot be opened or fsync'd: on Windows, and on file systems that
    answer ``EINVAL``/``ENOTSUP`` (some network file systems).
    """
    if os.name == "nt":  # a directory cannot be opened there; NTFS journals the rename itself
        return
    try:
        descriptor = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except (PermissionError, IsADirectoryError):
        return
    try:
        os.fsync(descriptor)
    except OSError as error:
        if error.errno not in _NO_DIRECTORY_FSYNC:
            raise
    finally:
        os.close(descriptor)


def atomic_write(final: Path, write: Callable[[IO[bytes]], object]) -> None:
    """Write ``final`` durably and atomically: ``write(handle)`` fills a hidden temporary file of
    the same folder, which is flushed, fsync'd and renamed to ``final``; then the folder is fsync'd.

    A reader sees the old file or the new one, never a part; after an error the temporary file is
    removed (after a kill it stays, hidden, until a re-run removes it).
    """
    temporary = final.with_name(f".{final.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}")
    try:
        with open(temporary, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, final)
    except BaseException:
        with contextlib.suppress(OSError):
            temporary.unlink()
        raise
    fsync_folder(final.parent)


def is_lock_file(name: str) -> bool:
    """Whether a file name of ``out`` belongs to the lock (``_lock``, or one being taken over)."""
    return name == LOCK or name.startswith(LOCK + ".stale-")


def _pid_alive(pid: int) -> Optional[bool]:
    """Whether process ``pid`` of this host is alive; ``None`` where that cannot be told.

    On Windows ``os.kill(pid, 0)`` would not probe but send a console event, so it is not asked.
    A zombie (dead, not yet reaped by its parent) counts as alive.
    """
    if os.name == "nt" or pid <= 0:
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by another user
        return True
    except OSError:
        return None
    return True


def _read_holder(path: Path) -> Optional[Dict[str, Any]]:
    """The lock's content (``None`` if the file is gone); waits briefly for a lock being created."""
    deadline = time.monotonic() + _LOCK_CONTENT_WAIT
    while True:
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        try:
            holder = json.loads(text)
            if isinstance(holder, dict):
                holder["text"] = text
                return holder
        except json.JSONDecodeError:
            pass
        if time.monotonic() > deadline:
            return {"text": text}
        time.sleep(0.05)


def _describe(holder: Dict[str, Any]) -> str:
    return f"pid {holder.get('pid', '?')} on host {holder.get('host', '?')}, started {holder.get('started', '?')}"


def _refusal(folder: Path, holder: Dict[str, Any], host: str) -> ValueError:
    """The error of a folder another run holds."""
    path = folder / LOCK
    if "pid" not in holder or "host" not in holder:
        return ValueError(
            f"out {folder} is locked by {path}, which cannot be read (content {holder.get('text', '')[:80]!r}): "
            f"another attribute_dataset run may be writing this folder. Use another out folder, or, if no run is "
            f"using this one, delete {path}"
        )
    if holder["host"] != host:
        where = f"that host is not this one ({host}), so whether the process still runs cannot be checked here"
    elif isinstance(holder["pid"], int) and _pid_alive(holder["pid"]):
        where = "that process is alive on this host"
    else:
        where = "whether that process is alive cannot be checked on this platform"
    return ValueError(
        f"out {folder} is in use by another attribute_dataset run ({_describe(holder)}; {where}): two runs must "
        f"not write one folder at the same time. Wait for that run to end or use another out folder; if that run "
        f"is gone (its process or machine died), delete {path} and run again"
    )


def _stale(holder: Dict[str, Any], host: str) -> bool:
    """A lock of a process of this host that no longer runs."""
    pid = holder.get("pid")
    return holder.get("host") == host and isinstance(pid, int) and _pid_alive(pid) is False


def check_unlocked(folder: Path) -> None:
    """Refuse (``ValueError``) a folder whose lock another live (or unverifiable) run holds; read-only.

    Lets a concurrent call fail on the lock before it looks at the folder's other files.
    """
    path = folder / LOCK
    if not path.exists():
        return
    holder = _read_holder(path)
    host = socket.gethostname()
    if holder is not None and not _stale(holder, host):
        raise _refusal(folder, holder, host)


def _take_over(path: Path, holder: Dict[str, Any]) -> None:
    """Remove the stale lock ``holder`` read from ``path``, unless another run replaced it meanwhile."""
    aside = path.with_name(f"{path.name}.stale-{os.getpid()}-{secrets.token_hex(4)}")
    try:
        os.rename(path, aside)
    except FileNotFoundError:  # another run removed it first
        return
    moved = aside.read_text(encoding="utf-8")
    if moved == holder["text"]:
        aside.unlink()
        return
    # between reading and renaming, another run took the stale lock over: give it back
    try:
        os.link(aside, path)
    except OSError:
        raise ValueError(
            f"out {path.parent}: another attribute_dataset run took the folder's stale lock at the same moment as "
            f"this one; stop the other runs, delete {path} and {aside}, and run again"
        ) from None
    aside.unlink()


def acquire_lock(folder: Path) -> str:
    """Create ``folder/_lock`` for this process; returns its content, the token :func:`release_lock` needs.

    Raises ``ValueError`` (naming the folder, the holder's pid and host, and the fix) when
    another run holds the lock. A lock of a process of this host that has died is taken over with
    a ``RuntimeWarning`` naming the dead pid; a lock of another host is never taken over.

    Examples::

        >>> token = acquire_lock(Path("out/maps"))
        >>> try:
        ...     ...  # write into out/maps
        ... finally:
        ...     release_lock(Path("out/maps"), token)
    """
    path = folder / LOCK
    host = socket.gethostname()
    started = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    record = {"pid": os.getpid(), "host": host, "started": started, "token": secrets.token_hex(16)}
    content = json.dumps(record, sort_keys=True) + "\n"
    for _ in range(5):
        try:
            descriptor = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            holder = _read_holder(path)
            if holder is None:  # released meanwhile: try again
                continue
            if not _stale(holder, host):
                raise _refusal(folder, holder, host) from None
            warnings.warn(
                f"out {folder}: taking over the stale lock of attribute_dataset run pid {holder['pid']} on this host "
                f"(started {holder.get('started', '?')}): that process is no longer running; the finished shards "
                "are kept and the run resumes",
                RuntimeWarning,
                stacklevel=3,  # the caller of attribute_dataset
            )
            _take_over(path, holder)
            continue
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            handle.write(content)
            handle.flush()
            os.fsync(handle.fileno())
        fsync_folder(folder)
        return content
    raise ValueError(f"out {folder}: could not take {path}, it changed hands repeatedly; run again")


def release_lock(folder: Path, token: str) -> None:
    """Remove ``folder/_lock`` if it still is this run's (``token`` from :func:`acquire_lock`).

    Never raises: a lock that cannot be removed gives a ``RuntimeWarning`` (a later run on this
    host takes it over, as the lock of a process that is gone).
    """
    path = folder / LOCK
    try:
        if path.read_text(encoding="utf-8") == token:
            path.unlink()
            fsync_folder(folder)
    except FileNotFoundError:
        pass
    except OSError as error:
        warnings.warn(f"could not remove the lock {path}: {error}", RuntimeWarning, stacklevel=2)
