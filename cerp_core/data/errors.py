"""Errors raised for bad or missing data; all are ``ValueError`` subclasses."""

from __future__ import annotations

from pathlib import Path


class DataError(ValueError):
    """Base class of every data problem the suite reports."""


class DataFormatError(DataError):
    """A data file breaks the expected format; names the file and the 1-based line."""

    def __init__(self, path: str | Path, line: int | None, message: str) -> None:
        self.path = Path(path)
        self.line = line
        where = f"{self.path}" if line is None else f"{self.path}, line {line}"
        super().__init__(f"{where}: {message}")


class DatasetNotFoundError(DataError):
    """A data set is neither on disk nor downloadable; says where to put the files."""


class DataIntegrityError(DataError):
    """A named data set's file differs from the published one; names the file."""


class DataWarning(UserWarning):
    """A data set loads, but with something worth knowing (unused ids, a rebuilt cache)."""
