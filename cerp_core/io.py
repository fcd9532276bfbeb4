"""File safety: atomic writes, and checkpoints that a damaged file cannot crash.

Every writer here writes to a temporary file in the destination's folder, named per process
(and thread), ``.<name>.<pid>.<thread>.tmp``, then renames it over the destination with
:func:`os.replace`. A rename within one file system is atomic, so a process killed mid-write
leaves either the previous file or the new one, never a torn one, and two processes writing
the same path never share a temporary file. When writing fails, the temporary file is removed
and the error propagates; the previous file is untouched.

The rename protects against the writing process dying, not against the machine losing power:
nothing is ``fsync``-ed. A checkpoint torn anyway (a disk that filled up, a copy cut short)
is handled by :func:`load_checkpoint`, which sets it aside and lets the stage start afresh.
"""

from __future__ import annotations

import os
import pickle
import threading
import warnings
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch

__all__ = [
    "make_output_folder",
    "CorruptCheckpointWarning",
    "UNREADABLE_CHECKPOINT_ERRORS",
    "load_checkpoint",
    "save_npz_atomic",
    "save_torch_atomic",
    "set_aside",
    "write_text_atomic",
]

#: What ``torch.load(path, weights_only=False)`` raises for a file that exists but holds no
#: readable checkpoint (checked on truncations at every length, random bytes and byte flips
#: of a real checkpoint, torch 2.13):
#:
#: - ``RuntimeError``: the zip reader (``PytorchStreamReader failed reading zip archive``,
#:   ``invalid header``, a missing record, a record of the wrong size), or ``Invalid magic
#:   number`` for a pickle that is not a torch file;
#: - ``OSError``: ``[Errno 22] Invalid argument`` when the zip reader seeks before the start
#:   of a file truncated near its end (the file is opened before, so a missing or unreadable
#:   file is not mistaken for a damaged one);
#: - ``EOFError``: a zero-byte file (``Ran out of input``);
#: - ``pickle.UnpicklingError``: random bytes (``invalid load key``, ``pickle data was
#:   truncated``, ``could not find MARK``);
#: - ``ValueError`` (including ``UnicodeDecodeError``), ``OverflowError``, ``MemoryError``,
#:   ``TypeError``, ``KeyError``, ``IndexError``: random bytes that the unpickler partly
#:   decodes (bad protocol numbers, absurd lengths, garbled opcodes);
#: - ``AttributeError``, ``ImportError``: a garbled class or module name (also raised when the
#:   checkpoint names a class that the code no longer has, which equally cannot resume);
#: - ``AssertionError``: a garbled record name (``Unknown typename for persistent_load``);
#: - ``zipfile.BadZipFile``: not raised by torch's reader today, listed for other readers.
UNREADABLE_CHECKPOINT_ERRORS: tuple[type[BaseException], ...] = (
    RuntimeError,
    OSError,
    EOFError,
    pickle.UnpicklingError,
    ValueError,
    OverflowError,
    MemoryError,
    TypeError,
    KeyError,
    IndexError,
    AttributeError,
    ImportError,
    AssertionError,
    zipfile.BadZipFile,
)


class CorruptCheckpointWarning(UserWarning):
    """A checkpoint could not be read; it was set aside and its stage starts from scratch."""


# ----------------------------------------------------------------------------- writing


def _temporary_path(path: Path) -> Path:
    """``.<name>.<pid>.<thread>.tmp`` beside ``path``: no two writers share one."""
    return path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")


def _write_atomic(path: str | os.PathLike[str], write: Callable[[IO[bytes]], None]) -> None:
    """Create the parent folders, ``write`` a temporary file, rename it to ``path``.

    On any failure the temporary file is removed and the error is raised again.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temporary_path(path)
    try:
        with open(tmp, "wb") as file:
            write(file)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def make_output_folder(path: Path) -> None:
    """Create ``path`` (a command's ``--out``) if needed; raise ``ValueError`` saying why it
    cannot be one: a file stands there, or it cannot be written."""
    if path.exists() and not path.is_dir():
        raise ValueError(f"--out {path} is a file, not a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ValueError(f"--out {path} cannot be written: {error.strerror}") from None
    if not os.access(path, os.W_OK):
        raise ValueError(f"--out {path} cannot be written: Permission denied")


def write_text_atomic(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically: a kill leaves the old file or the new one.

    Args:
        path: Destination; missing parent folders are created.
        text: The whole content; no newline translation.
    """
    _write_atomic(path, lambda file: file.write(text.encode("utf-8")))


def save_npz_atomic(path: str | os.PathLike[str], arrays: Mapping[str, np.ndarray]) -> None:
    """Write ``arrays`` as an uncompressed ``.npz`` (:func:`numpy.savez`) to ``path`` atomically.

    ``path`` is used as given: unlike ``np.savez`` on a file name, no ``.npz`` is appended.
    """
    _write_atomic(path, lambda file: np.savez(file, **arrays))


def save_torch_atomic(path: str | os.PathLike[str], state: Mapping[str, Any]) -> None:
    """Write ``state`` with :func:`torch.save` to ``path`` atomically: a kill mid-write leaves
    the previous checkpoint intact."""
    _write_atomic(path, lambda file: torch.save(state, file))


# ----------------------------------------------------------------------------- reading


def set_aside(path: str | os.PathLike[str]) -> Path:
    """Rename ``path`` to ``<name>.corrupt``, or ``<name>.corrupt-N`` (``N = 1, 2, ...``) when
    that is taken; return the new path. Nothing is deleted, so the file can still be examined.
    """
    path = Path(path)
    target, number = path.with_name(f"{path.name}.corrupt"), 0
    while target.exists():
        number += 1
        target = path.with_name(f"{path.name}.corrupt-{number}")
    os.replace(path, target)
    return target


def load_checkpoint(path: str | os.PathLike[str] | None) -> dict[str, Any] | None:
    """The dict saved at ``path``, or ``None`` when there is none to resume from.

    ``None`` is returned when ``path`` is ``None`` or no file exists there, and also when the
    file exists but cannot be read as a checkpoint (zero bytes, truncated, random bytes, or a
    saved object that is not a dict): that file is moved aside with :func:`set_aside` and one
    :class:`CorruptCheckpointWarning` names it and the reason, so that the caller starts the
    stage from scratch instead of stopping with a traceback. A file that cannot be opened at
    all (no permission, a folder) raises as usual: it is not known to be damaged.

    Checkpoints hold dataclasses, so they are unpickled with ``weights_only=False``: load only
    checkpoints this suite wrote. Tensors are mapped to the CPU.
    """
    if path is None:
        return None
    path = Path(path)
    if not path.is_file():
        return None
    try:
        file = open(path, "rb")  # outside the handler below: failing to open is not damage
    except FileNotFoundError:  # removed since is_file(): nothing to resume from either
        return None
    with file:
        try:
            state = torch.load(file, map_location="cpu", weights_only=False)
        except UNREADABLE_CHECKPOINT_ERRORS as error:
            message = str(error).strip().splitlines()
            reason = f"{type(error).__name__}: {message[0] if message else 'no message'}"
        else:
            if isinstance(state, dict):
                return state
            reason = f"it holds a {type(state).__name__}, not a dict"
    try:
        where = f"moved to {set_aside(path)}"
    except OSError as error:
        where = f"could not be moved aside ({error}); the next save replaces it"
    warnings.warn(
        f"checkpoint {path} is unreadable ({reason}); {where}; starting this stage from scratch",
        CorruptCheckpointWarning,
        stacklevel=2,
    )
    return None
