"""``python -m app.serve [uvicorn options]``: uvicorn with this service's defaults.

``./run serve`` and the container image start the service through this, so both get:

- **every core**: ``--workers`` one per core available to the process when the store is shared
  by processes (SQLite, Redis), one with the memory store, unless ``--workers``,
  ``UVICORN_WORKERS`` or ``WEB_CONCURRENCY`` says otherwise;
- **WebSockets that close cleanly and stay bounded**: uvicorn's sans-I/O ``websockets``
  implementation (``UVICORN_WS``: the faster one, with write flow control since uvicorn 0.52.1;
  it sends open sockets a 1012 close frame when the server stops, and stops reading a socket
  until the app has taken what it read), and frames of at most ``FORECAST_MAX_BODY_BYTES``
  (``UVICORN_WS_MAX_SIZE``);
- **one /metrics for all workers**: with several, a fresh folder where they share their metrics
  (``FORECAST_METRICS_SHARE_DIR``, app.metrics_share), so that any worker's scrape counts all.

Anything given on the command line or in ``UVICORN_*`` variables wins.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from app.metrics_share import fresh_share_folder
from app.settings import get_settings
from app.workers import configured_workers, default_workers, uvicorn_workers

APP = "app.main:app"
# uvicorn's WebSocket implementation for /stream (see above); benches and tests start it too.
WEBSOCKETS = "websockets-sansio"
METRICS_SHARE_VARIABLE = "FORECAST_METRICS_SHARE_DIR"


def uvicorn_command(
    args: Sequence[str],
    environ: Mapping[str, str],
    store: str,
    max_body_bytes: int,
    cores: int,
    share_folder: Callable[[], Path] = fresh_share_folder,
) -> tuple[list[str], dict[str, str]]:
    """The uvicorn command line and environment for ``args`` (uvicorn options); for several
    workers, a folder of ``share_folder()`` where they share their metrics."""
    env = {"UVICORN_WS": WEBSOCKETS, "UVICORN_WS_MAX_SIZE": str(max_body_bytes), **environ}
    command = [sys.executable, "-m", "uvicorn", APP, *args]
    if configured_workers(args, environ):
        workers = uvicorn_workers(args, environ)
    else:
        workers = default_workers(store, cores)
        command += ["--workers", str(workers)]
    if workers > 1 and not environ.get(METRICS_SHARE_VARIABLE):
        env[METRICS_SHARE_VARIABLE] = str(share_folder())
    return command, env


def main() -> None:
    settings = get_settings()
    command, env = uvicorn_command(
        sys.argv[1:], os.environ, settings.store, settings.max_body_bytes,
        len(os.sched_getaffinity(0)),
    )  # fmt: skip
    os.execve(command[0], command, env)


if __name__ == "__main__":
    main()
