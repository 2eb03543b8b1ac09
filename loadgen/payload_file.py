"""A payload file the user brings (``make bench PAYLOAD=file.jsonl|csv|parquet``).

Each row gives one input: the value of its ``column`` (default ``text``), or with column ``*`` the
whole row (a JSONL line as it is, a CSV or parquet row as an object). A string is sent as
``"text"``, any other JSON value as ``"input"`` (for a model that declares ``input: "json"``).
Rows are sampled with the scenario's ``sample`` and ``seed``: ``sample`` distinct rows in a seeded
order, or every row once when the file has fewer; the drivers cycle through them. The file's
sha256 is recorded (``Payloads.describe()["source"]``, so ``meta.json``).

A file that can't serve (missing, unknown extension, not UTF-8, empty, no such column, a row
without a usable value) is :class:`PayloadError`, one line saying where and what to do:
``python -m loadgen.payload_file check FILE [--column C]`` prints it (``make bench`` runs it first).
"""

from __future__ import annotations

import argparse
import csv
import gzip
import hashlib
import io
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson

WHOLE_ROW = "*"
FORMATS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv", ".parquet": "parquet",
           ".pq": "parquet"}
_HINT = "name the column with PAYLOAD_COLUMN= (payload.column), or '*' for whole rows"


class PayloadError(ValueError):
    """A payload file that can't be used; the message is one line."""


@dataclass(frozen=True)
class FileSource:
    """Where a run's inputs came from (``Payloads.describe()["source"]``)."""
    kind: str          # "file"
    path: str
    format: str        # jsonl | csv | parquet (gzip noted in compressed)
    compressed: bool
    column: str
    sha256: str        # of the file's bytes
    rows: int          # usable rows in the file
    sampled: int       # distinct rows sent (cycled by the drivers)
    seed: int
    inputs: str        # "text", "json" or "mixed"

    def describe(self) -> dict[str, Any]:
        return asdict(self)


def file_format(path: Path) -> tuple[str, bool]:
    """(format, gzipped) from the name: ``x.csv``, ``x.jsonl.gz``, ``x.parquet``."""
    suffixes = [s.lower() for s in path.suffixes]
    gz = bool(suffixes) and suffixes[-1] == ".gz"
    ext = suffixes[-2] if gz and len(suffixes) > 1 else (suffixes[-1] if suffixes else "")
    fmt = FORMATS.get(ext)
    if fmt is None or (gz and fmt == "parquet"):
        raise PayloadError(f"payload file {path}: unknown format {''.join(path.suffixes) or '(none)'!r}"
                           f"; use .jsonl, .csv (either may be .gz) or .parquet")
    return fmt, gz


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_inputs(path: str | Path, column: str = "text") -> tuple[list[Any], FileSource]:
    """Every usable row's input, in file order, and the file's description (``sampled`` = all)."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise PayloadError(f"payload file {p}: no such file")
    fmt, gz = file_format(p)
    column = column or "text"
    if fmt == "parquet":
        inputs = _parquet(p, column)
    else:
        text = _utf8(p, gz)
        inputs = _jsonl(p, text, column) if fmt == "jsonl" else _csv(p, text, column)
    if not inputs:
        raise PayloadError(f"payload file {p} has no rows")
    kinds = {isinstance(x, str) for x in inputs}
    src = FileSource("file", str(p.resolve()), fmt, gz, column, sha256_file(p), len(inputs),
                     len(inputs), 0, "mixed" if len(kinds) == 2 else
                     ("text" if kinds == {True} else "json"))
    return inputs, src


def load(path: str | Path, column: str, sample: int, seed: int) -> tuple[list[Any], FileSource]:
    """``sample`` rows drawn with ``seed`` (every row, in a seeded order, if there are fewer):
    the same file, column, sample and seed always give the same inputs in the same order."""
    inputs, src = read_inputs(path, column)
    rng = np.random.default_rng(seed)
    n = len(inputs)
    idx = rng.choice(n, size=sample, replace=False) if sample < n else rng.permutation(n)
    picked = [inputs[i] for i in idx.tolist()]
    return picked, FileSource(**{**asdict(src), "sampled": len(picked), "seed": seed})


# -- formats --------------------------------------------------------------------------------------
def _utf8(p: Path, gz: bool) -> str:
    try:
        raw = gzip.decompress(p.read_bytes()) if gz else p.read_bytes()
    except (OSError, EOFError) as e:
        raise PayloadError(f"payload file {p} cannot be read ({type(e).__name__}: {e})") from None
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        raise PayloadError(f"payload file {p} is not UTF-8: byte 0x{raw[e.start]:02x} at offset "
                           f"{e.start} (line {line}); save it as UTF-8") from None


def _value(p: Path, where: str, v: Any, column: str) -> Any:
    """One row's input, checked: not missing, not null, not blank text."""
    if v is None:
        raise PayloadError(f"payload file {p}: {where}: {column!r} is null")
    if isinstance(v, str) and not v.strip():
        raise PayloadError(f"payload file {p}: {where}: {column!r} is empty")
    return v


def _jsonl(p: Path, text: str, column: str) -> list[Any]:
    out = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            doc = orjson.loads(line)
        except orjson.JSONDecodeError as e:
            raise PayloadError(f"payload file {p}: line {n} is not JSON ({e})") from None
        if column == WHOLE_ROW:
            out.append(_value(p, f"line {n}", doc, "the line"))
            continue
        if not isinstance(doc, dict):
            raise PayloadError(f"payload file {p}: line {n} is a JSON {type(doc).__name__}, not an "
                               f"object with {column!r}; {_HINT}")
        if column not in doc:
            keys = ", ".join(map(str, list(doc)[:8])) or "none"
            raise PayloadError(f"payload file {p}: line {n} has no {column!r} (its keys: {keys}); "
                               f"{_HINT}")
        out.append(_value(p, f"line {n}", doc[column], column))
    return out


def _csv(p: Path, text: str, column: str) -> list[Any]:
    try:
        rows = csv.reader(io.StringIO(text, newline=""))
        header = next(rows, None)
        if header is None:
            return []
        if column != WHOLE_ROW and column not in header:
            raise PayloadError(f"payload file {p}: no column {column!r} (its columns: "
                               f"{', '.join(header[:12]) or 'none'}); {_HINT}")
        out = []
        j = header.index(column) if column != WHOLE_ROW else -1
        for n, row in enumerate(rows, 2):
            if not row:
                continue
            if len(row) != len(header):
                raise PayloadError(f"payload file {p}: line {n} has {len(row)} fields, the header "
                                   f"{len(header)}")
            out.append(dict(zip(header, row)) if j < 0 else _value(p, f"line {n}", row[j], column))
        return out
    except csv.Error as e:
        raise PayloadError(f"payload file {p}: not valid CSV ({e})") from None


def _parquet(p: Path, column: str) -> list[Any]:
    import pyarrow.parquet as pq  # noqa: PLC0415 — only for parquet files

    try:
        table = pq.read_table(p)
    except Exception as e:  # noqa: BLE001 — pyarrow raises several kinds; one line for all
        raise PayloadError(f"payload file {p} is not a readable parquet file "
                           f"({type(e).__name__}: {e})") from None
    if column == WHOLE_ROW:
        values = table.to_pylist()
    elif column not in table.column_names:
        raise PayloadError(f"payload file {p}: no column {column!r} (its columns: "
                           f"{', '.join(table.column_names[:12]) or 'none'}); {_HINT}")
    else:
        values = table.column(column).to_pylist()
    out = []
    for n, v in enumerate(values, 1):
        v = _value(p, f"row {n}", v, column)
        try:
            v = orjson.loads(orjson.dumps(v))   # plain JSON values (dates become ISO strings)
        except orjson.JSONEncodeError as e:
            raise PayloadError(f"payload file {p}: row {n}: {column!r} holds "
                               f"{type(v).__name__}, which is not JSON ({e})") from None
        out.append(v)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m loadgen.payload_file",
                                 description="check a payload file: one line, exit 0 if usable")
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("check")
    c.add_argument("path")
    c.add_argument("--column", default="text")
    a = ap.parse_args(argv)
    try:
        _inputs, src = read_inputs(a.path, a.column or "text")
    except PayloadError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"payload file {src.path}: {src.rows} rows of {src.inputs} input from "
          f"{'whole rows' if src.column == WHOLE_ROW else repr(src.column)} ({src.format}"
          f"{', gzip' if src.compressed else ''}), sha256 {src.sha256[:12]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
