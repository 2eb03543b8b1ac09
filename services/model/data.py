"""The configurable data source: IMDB reviews as ``<split>.csv.gz`` files (header ``text,label``).

``RVS_DATA_DIR`` names the folder; by default it is ``../shared/data/imdb`` next to the repo root.
Any folder holding ``train.csv.gz`` and ``test.csv.gz`` in that format works, so a user can put
their own labelled texts through the same experiment (see docs/CONTRACTS.md).
"""

from __future__ import annotations

import csv
import functools
import gzip
import hashlib
import io
import os
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[2]  # parent of the `services` package dir
DEFAULT_DATA_DIR = REPO_ROOT.parent / "shared" / "data" / "imdb"
SPLITS = ("train", "test")
HEADER = ["text", "label"]

_HOW_TO_SET = "set RVS_DATA_DIR=/path/to/folder (or `make model DATA=/path/to/folder`)"
_EXPECTED = "train.csv.gz and test.csv.gz, header text,label, label 0/1"


class DataSourceError(RuntimeError):
    """The data source is missing or malformed; the message is one line that says what to set."""


def data_dir() -> Path:
    """The data folder: ``$RVS_DATA_DIR`` if set (and not empty), else the default next to the repo."""
    env = os.environ.get("RVS_DATA_DIR", "").strip()
    return Path(env).expanduser() if env else DEFAULT_DATA_DIR


def split_path(split: str, data_dir_: str | os.PathLike | None = None) -> Path:
    """Path of ``<split>.csv.gz`` in the data folder, checked to exist (else DataSourceError)."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, not {split!r}")
    folder = Path(data_dir_).expanduser() if data_dir_ is not None else data_dir()
    if not folder.is_dir():
        raise DataSourceError(
            f"data folder {folder} does not exist; {_HOW_TO_SET} with {_EXPECTED}"
        )
    path = folder / f"{split}.csv.gz"
    if not path.is_file():
        raise DataSourceError(
            f"{path} is missing; {_HOW_TO_SET} to a folder with {_EXPECTED}"
        )
    return path


def load_split(
    split: str, data_dir: str | os.PathLike | None = None
) -> tuple[list[str], np.ndarray]:
    """Read ``<split>.csv.gz`` → (texts, labels as int64 array of 0/1), in file order."""
    path = split_path(split, data_dir)
    st = path.stat()
    texts, labels = _read_csv_gz(str(path.resolve()), st.st_mtime_ns, st.st_size)
    return list(texts), labels.copy()


@functools.lru_cache(maxsize=2)
def _read_csv_gz(path: str, _mtime_ns: int, _size: int) -> tuple[tuple[str, ...], np.ndarray]:
    # mtime and size are part of the cache key so a replaced file is read again.
    texts: list[str] = []
    labels: list[int] = []
    try:
        with gzip.open(path, "rb") as raw, io.TextIOWrapper(raw, encoding="utf-8", newline="") as fh:
            reader = csv.reader(fh)
            header = next(reader, None)
            if header != HEADER:
                raise DataSourceError(
                    f"{path}: header is {header!r}, expected 'text,label'; {_HOW_TO_SET} to a folder with {_EXPECTED}"
                )
            for lineno, row in enumerate(reader, start=2):
                if len(row) != 2 or row[1] not in ("0", "1"):
                    raise DataSourceError(
                        f"{path}: row {lineno} is not 'text,label' with label 0 or 1; expected {_EXPECTED}"
                    )
                texts.append(row[0])
                labels.append(int(row[1]))
    except (OSError, EOFError, UnicodeDecodeError, csv.Error) as exc:
        raise DataSourceError(
            f"{path} cannot be read as UTF-8 CSV in gzip ({type(exc).__name__}: {exc}); expected {_EXPECTED}"
        ) from None
    if not texts:
        raise DataSourceError(f"{path} has no rows; expected {_EXPECTED}")
    return tuple(texts), np.asarray(labels, dtype=np.int64)


def sha256_of(path: str | os.PathLike) -> str:
    """Hex sha256 of a file's bytes (the training data hash recorded in the model artifact)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def sample_reviews(
    n: int, seed: int, split: str = "test", data_dir: str | os.PathLike | None = None
) -> tuple[list[str], np.ndarray]:
    """A seeded sample of ``n`` reviews (texts, labels) from ``split``.

    Without replacement when ``n`` <= rows in the split, with replacement beyond that. The same
    (n, seed, split, file contents) always gives the same sample, in the same order.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, not {n}")
    texts, labels = load_split(split, data_dir)
    rng = np.random.default_rng(seed)
    if n <= len(texts):
        idx = rng.choice(len(texts), size=n, replace=False)
    else:
        idx = rng.integers(0, len(texts), size=n)
    return [texts[i] for i in idx.tolist()], labels[idx]
