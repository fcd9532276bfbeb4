"""Where real data sets live: local roots, public download sources, and a processed cache.

A data set ``name`` is read from ``<root>/<name>/{train,test}.txt``. The root is, in order: the
``root`` argument, the ``CERP_DATA_DIR`` environment variable, the project's ``data/`` folder
(a source checkout) or the user cache (an installed package). Missing files are downloaded
with pooch and verified by hash when the machine is online.
"""

from __future__ import annotations

import functools
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import pooch

from cerp_core.data.errors import DataIntegrityError, DatasetNotFoundError

DATA_DIR_ENV = "CERP_DATA_DIR"
CACHE_DIR_ENV = "CERP_CACHE_DIR"
SPLITS = ("train", "test")

_LIGHTGCN = "https://raw.githubusercontent.com/kuandeng/LightGCN/master/Data"
_CERP = "https://raw.githubusercontent.com/xurong-liang/CERP/main/CERP-LightGCN/data"


@dataclass(frozen=True)
class RemoteFile:
    """A public file and how to verify it: sha256, or a git blob id where only that is known."""

    url: str
    sha256: str | None = None
    git_blob: str | None = None


REAL_DATASETS: dict[str, dict[str, RemoteFile]] = {
    "gowalla": {
        "train": RemoteFile(
            f"{_LIGHTGCN}/gowalla/train.txt",
            sha256="7244696fdeb23911319cf7b689f2e15a3c4c92549c873a5677b44e3f13cc3e62",
        ),
        "test": RemoteFile(
            f"{_LIGHTGCN}/gowalla/test.txt",
            sha256="099a2a73924e4b754dc6efd730d764f492321b53c38eb93298850c83acf57be3",
        ),
    },
    "yelp2018": {
        "train": RemoteFile(
            f"{_LIGHTGCN}/yelp2018/train.txt",
            sha256="1e9568725a9e833d0ac3bae01c94cd95367f73b3bb6104fd26b5f65ea5054093",
        ),
        "test": RemoteFile(
            f"{_LIGHTGCN}/yelp2018/test.txt",
            sha256="9cd9b37926cd1447a06625ffa7914527573fb097c10cb0bbdb1d1b8ded3742fe",
        ),
    },
    "yelp2020": {
        "train": RemoteFile(
            f"{_CERP}/yelp2020/train.txt", git_blob="392633dd8c6e99d4b64eb0da0d0f5efacf66e95a"
        ),
        "test": RemoteFile(
            f"{_CERP}/yelp2020/test.txt",
            sha256="a6bed672223be8d3040f2ac1a574c0dc496383f9314f6b810f8ded598b7cf308",
        ),
    },
}


def project_data_dir() -> Path:
    """The checkout's ``data/`` folder, or the user cache when installed as a package."""
    checkout = Path(__file__).resolve().parents[2] / "data"
    return checkout if checkout.is_dir() else Path(pooch.os_cache("cerp-suite"))


def data_root(root: str | Path | None = None) -> Path:
    """The folder holding ``<name>/{train,test}.txt``: argument, environment, project default."""
    if root is not None:
        return Path(root)
    env = os.environ.get(DATA_DIR_ENV)
    return Path(env) if env else project_data_dir()


def cache_dir() -> Path:
    """Where processed (parsed) copies are cached: ``CERP_CACHE_DIR`` or ``data/cache``."""
    env = os.environ.get(CACHE_DIR_ENV)
    return Path(env) if env else project_data_dir() / "cache"


def git_blob_id(path: Path) -> str:
    """The id git gives a file's content (``git hash-object``)."""
    content = path.read_bytes()
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


def _verify_blob(remote: RemoteFile, path: Path) -> None:
    if remote.git_blob and git_blob_id(path) != remote.git_blob:
        path.unlink()
        raise DatasetNotFoundError(
            f"{remote.url} did not match git blob {remote.git_blob}; the download was removed"
        )


def locate(name: str, root: str | Path | None = None) -> dict[str, Path]:
    """Paths of a real data set's train and test files, downloading them if needed."""
    if name not in REAL_DATASETS:
        raise DatasetNotFoundError(f"unknown data set {name!r}; known: {sorted(REAL_DATASETS)}")
    folder = data_root(root) / name
    paths = {split: folder / f"{split}.txt" for split in SPLITS}
    for split, path in paths.items():
        if not path.is_file():
            _download(REAL_DATASETS[name][split], path, name)
    return paths


def _download(remote: RemoteFile, path: Path, name: str) -> None:
    known = f"sha256:{remote.sha256}" if remote.sha256 else None
    try:
        pooch.retrieve(
            remote.url, known_hash=known, fname=path.name, path=path.parent, progressbar=False
        )
    except Exception as error:  # pooch raises requests/OSError/ValueError subclasses
        raise DatasetNotFoundError(
            f"data set {name!r}: {path} is missing and could not be downloaded from "
            f"{remote.url} ({type(error).__name__}: {error}). Put train.txt and test.txt in "
            f"{path.parent}, or point {DATA_DIR_ENV} (or root=) at a folder holding {name}/."
        ) from error
    _verify_blob(remote, path)


def file_sha256(path: Path) -> str:
    """SHA-256 of a file (the key of the processed cache), computed once per path, size and
    modification time in a process."""
    status = path.stat()
    return _sha256(str(path.resolve()), status.st_size, status.st_mtime_ns)


@functools.lru_cache(maxsize=64)
def _sha256(path: str, size: int, mtime_ns: int) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def verify(name: str, paths: dict[str, Path]) -> None:
    """Raise :class:`DataIntegrityError` naming the file if a real data set's file differs
    from the published one (a cut or edited copy would otherwise train and be recorded under
    the data set's name)."""
    for split, path in paths.items():
        remote = REAL_DATASETS[name][split]
        if remote.sha256:
            expected, found = remote.sha256, file_sha256(path)
        elif remote.git_blob:
            expected, found = remote.git_blob, git_blob_id(path)
        else:
            continue
        if found != expected:
            raise DataIntegrityError(
                f"{path} is not the published {name} {split} file (its hash is {found[:16]}..., "
                f"expected {expected[:16]}... from {remote.url}); restore it, or put other "
                "data in a folder of another name and load that folder by its path"
            )
