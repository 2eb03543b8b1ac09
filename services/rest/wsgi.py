"""uWSGI entry point: ``module = services.rest.wsgi:application``.

Reads the effective settings from ``RVS_REST_SETTINGS_FILE`` (JSON written by config.render) and
loads the real model once in this process. With ``lazy-apps`` that is once per worker, after
fork. When ``RVS_REST_READY_DIR`` is set, a file named after this PID is written there once the
model is loaded, so the launcher can wait for *every* worker, not just the first.
"""

from __future__ import annotations

import os


#: The variables our uwsgi.ini sets with ``env = K=V`` (see config.render_uwsgi_ini).
UWSGI_ENV = ("RVS_REST_SETTINGS_FILE", "RVS_REST_READY_DIR",
             "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def _sync_uwsgi_env() -> None:
    """uWSGI applies ``env = K=V`` with setenv() after the embedded interpreter (pyuwsgi) has
    taken its snapshot of os.environ, so read them from the C environment into os.environ."""
    import ctypes
    try:
        getenv = ctypes.CDLL(None).getenv
    except (OSError, AttributeError):
        return
    getenv.restype = ctypes.c_char_p
    getenv.argtypes = [ctypes.c_char_p]
    for k in UWSGI_ENV:
        v = getenv(k.encode())
        if v is not None:
            os.environ[k] = v.decode()


_sync_uwsgi_env()  # before numpy & co. are imported, so BLAS thread limits apply

import logging  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import orjson  # noqa: E402

from services.rest.app import create_app  # noqa: E402
from services.rest.settings import RestSettings  # noqa: E402

logging.basicConfig(stream=sys.stderr, level=logging.INFO,
                    format="%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s")


def _settings() -> RestSettings:
    path = os.environ.get("RVS_REST_SETTINGS_FILE")
    if not path:
        return RestSettings()
    return RestSettings.from_dict(orjson.loads(Path(path).read_bytes()))


application = create_app(settings=_settings())

_ready = os.environ.get("RVS_REST_READY_DIR")
if _ready:
    Path(_ready).mkdir(parents=True, exist_ok=True)
    (Path(_ready) / str(os.getpid())).write_text("ready\n")
