"""Read a run folder (docs/CONTRACTS.md) into typed objects: the only I/O on the input side.

Everything downstream (summary, charts, report, compare, notebook) takes a :class:`Run`, so a run
can be analysed from its folder alone, on any machine. A run that was cut short is still loaded:
what is there is returned, and what is missing or doubtful is listed in ``notes``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from loadgen import record

from .metrics import Ceiling, Fault, Window, ceiling_from_meta, faults_from_meta
from .repeats import REPEAT_PREFIX

#: The modes of a run whose meta does not list them (runs made before scenarios named their
#: deployments): the article's pair.
MODES = ("rest", "stream")


@dataclass
class ModeData:
    """One mode's recorded data and the settings needed to read it."""

    name: str
    table: pd.DataFrame
    window: Window
    faults: tuple[Fault, ...]
    ceiling: Ceiling
    meta: dict[str, Any]
    cpu: pd.DataFrame | None = None
    complete: bool = True
    #: <mode>/cores.csv: the service cores' busy seconds (others' load on them; older runs: None)
    cores: pd.DataFrame | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def role_by_pid(self) -> dict[int, str]:
        """pid -> role for processes the run declared a role for (used to split cpu.csv)."""
        out: dict[int, str] = {}
        for p in self.meta.get("processes") or []:
            if isinstance(p, dict) and p.get("pid") is not None and p.get("role"):
                out[int(p["pid"])] = str(p["role"])
        return out


@dataclass
class Run:
    path: Path
    meta: dict[str, Any]
    modes: dict[str, ModeData]
    missing: list[str]
    notes: list[str] = field(default_factory=list)
    #: A repeated run's repeats, each a run folder of its own (``repeat-<k>/``), in run order;
    #: ``modes`` then holds one of them (the first on loading; analysis picks its own).
    repeats: list[Run] = field(default_factory=list)

    @property
    def run_id(self) -> str:
        return str(self.meta.get("run_id") or self.path.name)

    @property
    def scenario_name(self) -> str:
        sc = self.meta.get("scenario")
        if isinstance(sc, dict) and sc.get("name"):
            return str(sc["name"])
        if isinstance(sc, str) and sc:
            return sc
        rid = self.run_id
        return rid.split("-", 1)[1] if "-" in rid else rid

    @property
    def complete(self) -> bool:
        """True only if meta says so, every mode is there and every mode says so."""
        return bool(self.meta.get("complete", False)) and not self.missing and \
            all(m.complete for m in self.modes.values()) and all(r.complete for r in self.repeats)

    @property
    def machine(self) -> str:
        m = self.meta.get("machine") or {}
        return f"{m.get('cpu_model', 'unknown CPU')}, {m.get('cpus', '?')} cores"

    @property
    def caption(self) -> str:
        return f"scenario {self.scenario_name} · {self.machine} · run {self.run_id}"


def _window(meta: dict, mode_meta: dict, table: pd.DataFrame, notes: list[str]) -> Window:
    """The mode's window from meta; else from the scenario; else from the data (noted)."""
    sc = meta.get("scenario") if isinstance(meta.get("scenario"), dict) else {}
    for src, where in ((mode_meta, "meta.modes"), (sc, "meta.scenario")):
        w, d = src.get("warmup_s"), src.get("duration_s")
        if d is not None:
            if where != "meta.modes":
                notes.append(f"window taken from {where} (the mode's own entry has none)")
            return Window(float(w or 0.0), float(d))
    t = table["request_intended_s"].astype(float)
    span = float(t.max() - 0.0) if len(t) and t.notna().any() else 0.0
    notes.append("no window in meta.json: using the whole recorded span, no warm-up")
    return Window(0.0, max(span, 1.0))


def _read_cpu(path: Path, notes: list[str]) -> pd.DataFrame | None:
    if not path.exists():
        return None
    try:
        cpu = pd.read_csv(path)
    except Exception as e:  # a half-written CSV must not sink the report
        notes.append(f"{path.name} unreadable ({type(e).__name__}: {e})")
        return None
    need = {"t_s", "process", "pid", "cpu_percent"}
    if not need <= set(cpu.columns):
        notes.append(f"{path.name} lacks columns {sorted(need - set(cpu.columns))}")
        return None
    return cpu


def _read_cores(path: Path, notes: list[str]) -> pd.DataFrame | None:
    if not path.exists():
        return None
    try:
        return pd.read_csv(path)
    except Exception as e:  # a half-written CSV must not sink the report
        notes.append(f"{path.name} unreadable ({type(e).__name__}: {e})")
        return None


def load_mode(run_path: Path, meta: dict, name: str) -> tuple[ModeData | None, list[str]]:
    """One mode's data, or None (with the reason) if its table is absent or unreadable."""
    folder = run_path / name
    table_path = folder / "requests.parquet"
    notes: list[str] = []
    if not table_path.exists():
        return None, [f"{name}: no {name}/requests.parquet (mode not run or interrupted)"]
    try:
        table = record.read(table_path)
    except Exception as e:
        return None, [f"{name}: {name}/requests.parquet unreadable ({type(e).__name__}: {e})"]
    mode_meta = (meta.get("modes") or {}).get(name) or {}
    if not mode_meta:
        notes.append("no entry in meta.json modes")
    window = _window(meta, mode_meta, table, notes)
    complete = bool(mode_meta.get("complete", False))
    if not complete:
        notes.append("mode marked incomplete in meta.json")
    ceiling = ceiling_from_meta(meta, name)
    if ceiling.source != "measured":
        notes.append(f"efficiency ceiling: {ceiling.source.replace('_', ' ')}")
    data = ModeData(
        name=name, table=table, window=window, faults=faults_from_meta(mode_meta.get("faults")),
        ceiling=ceiling, meta=mode_meta, cpu=_read_cpu(folder / "cpu.csv", notes),
        complete=complete, notes=notes, cores=_read_cores(folder / "cores.csv", notes),
    )
    return data, [f"{name}: {n}" for n in notes]


REPO_ROOT = Path(__file__).resolve().parent.parent


def repeat_dirs(path: Path, meta: dict[str, Any]) -> list[Path]:
    """The repeat folders of a run, in run order: as meta.json lists them, else as found."""
    listed = [r.get("dir") for r in ((meta.get("repeats") or {}).get("runs") or [])
              if isinstance(r, dict) and r.get("dir")]
    if listed:
        return [path / d for d in listed if (path / d).is_dir()]
    found = [p for p in path.glob(f"{REPEAT_PREFIX}*") if p.is_dir()
             and p.name[len(REPEAT_PREFIX):].isdigit()]
    return sorted(found, key=lambda p: int(p.name[len(REPEAT_PREFIX):]))


def _load_repeats(path: Path, meta: dict[str, Any], notes: list[str]) -> list[Run]:
    out = []
    for d in repeat_dirs(path, meta):
        try:
            r = load_run(d)
        except FileNotFoundError:
            notes.append(f"{d.name}: nothing recorded (interrupted before it ran)")
            continue
        notes.extend(f"{d.name}: {n}" for n in r.notes)
        out.append(r)
    return out


def resolve_run_dir(path: str | Path) -> Path:
    """A run folder given relative to the current folder, or else to the repo root (so the
    notebook's default ``results/latest`` works whether Jupyter starts in the repo or in analysis/)."""
    p = Path(path).expanduser()
    if p.is_absolute() or p.exists():
        return p
    return REPO_ROOT / p if (REPO_ROOT / p).exists() else p


def load_run(path: str | Path) -> Run:
    """Load a run folder. Raises FileNotFoundError only if it is not a run folder at all."""
    path = resolve_run_dir(path).resolve()
    meta_path = path / "meta.json"
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: no such run folder")
    notes: list[str] = []
    if meta_path.exists():
        meta = json.loads(meta_path.read_text())
    elif _tables(path):
        meta, notes = {"run_id": path.name, "complete": False}, ["no meta.json: run incomplete"]
    else:
        raise FileNotFoundError(f"{path}: not a run folder (no meta.json, no <mode>/requests.parquet)")
    asked = _scenario_modes(meta)
    if not any((path / m / "requests.parquet").exists() for m in asked):
        repeats = _load_repeats(path, meta, notes)
        if repeats:
            return Run(path=path, meta=meta, modes=repeats[0].modes, missing=repeats[0].missing,
                       notes=notes, repeats=repeats)
    modes: dict[str, ModeData] = {}
    missing: list[str] = []
    for name in asked:
        data, mode_notes = load_mode(path, meta, name)
        if data is None and name not in asked:
            continue                  # not asked for (a stream-only broker fault): not missing
        notes.extend(mode_notes)
        if data is None:
            missing.append(name)
        else:
            modes[name] = data
    return Run(path=path, meta=meta, modes=modes, missing=missing, notes=notes)


def _scenario_modes(meta: dict) -> tuple[str, ...]:
    """The deployments the run's scenario asked for, in its order (the article's pair when meta
    does not say)."""
    sc = meta.get("scenario")
    modes = sc.get("modes") if isinstance(sc, dict) else None
    return tuple(modes) if isinstance(modes, list) and modes else MODES


def _tables(path: Path) -> list[str]:
    """Sub-folders holding a request table: the modes a run folder has, by name."""
    return sorted(p.parent.name for p in path.glob("*/requests.parquet"))


def mode_order(meta: dict, present) -> list[str]:
    """The modes to show, in the scenario's order, then any other present (sorted)."""
    present = list(present)
    asked = [m for m in _scenario_modes(meta) if m in present]
    return asked + sorted(m for m in present if m not in asked)
