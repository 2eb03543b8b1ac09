"""What a run was: machine, versions, git commit. Recorded so a figure can be traced and re-run."""

from __future__ import annotations

import json
import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

#: Packages every run depends on; each deployment kind adds its own (``Kind.packages``).
PACKAGES = ("locust", "scikit-learn", "numpy", "scipy", "pandas", "pyarrow", "orjson",
            "matplotlib", "psutil")


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine() -> dict:
    return {"cpu_model": cpu_model(), "cpus": os.cpu_count(),
            "usable_cpus": sorted(os.sched_getaffinity(0)),
            "python": platform.python_version(), "platform": platform.platform(),
            "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)}


def packages() -> dict:
    out = {}
    from services import registry

    for name in dict.fromkeys([*PACKAGES, *registry.packages()]):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def git_commit() -> dict:
    def _git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True,
                              timeout=10).stdout.strip()
    try:
        return {"commit": _git("rev-parse", "HEAD") or None,
                "dirty": bool(_git("status", "--porcelain", "--untracked-files=no"))}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}


def write_json(path: Path, data: dict) -> None:
    """Write atomically so a reader (or an interrupted run) never sees half a file."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=False, default=str))
    tmp.replace(path)
