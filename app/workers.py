"""How many uvicorn worker processes serve this app, and which stores they can share."""

from __future__ import annotations

import multiprocessing
import os
import sys
from collections.abc import Mapping, Sequence


def uvicorn_workers(
    argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None
) -> int:
    """The ``--workers`` of the uvicorn that started this process; 1 when it runs alone.

    uvicorn starts its workers as spawned children, and a spawned child inherits its parent's
    ``sys.argv``; the option's other sources are uvicorn's own (``UVICORN_WORKERS``, then
    ``WEB_CONCURRENCY``). ``--reload`` runs one process whatever ``--workers`` says.
    """
    if argv is None:
        if multiprocessing.parent_process() is None:
            return 1  # not a spawned worker: one process, whatever the command line says
        argv = sys.argv
    environ = os.environ if environ is None else environ
    if "--reload" in argv:
        return 1
    for index, arg in enumerate(argv):
        if arg == "--workers" and index + 1 < len(argv):
            return _count(argv[index + 1])
        if arg.startswith("--workers="):
            return _count(arg.partition("=")[2])
    for variable in ("UVICORN_WORKERS", "WEB_CONCURRENCY"):
        if environ.get(variable):
            return _count(environ[variable])
    return 1


def _count(text: str) -> int:
    try:
        return max(1, int(text))
    except ValueError:
        return 1  # uvicorn itself refuses it


def configured_workers(argv: Sequence[str], environ: Mapping[str, str]) -> bool:
    """Whether uvicorn's command line or environment already says how many workers to run."""
    return any(arg == "--workers" or arg.startswith("--workers=") for arg in argv) or any(
        environ.get(variable) for variable in ("UVICORN_WORKERS", "WEB_CONCURRENCY")
    )


def default_workers(store: str, cores: int) -> int:
    """Workers to run when nobody said: one per core for a store the processes share, one for
    the memory store (its sessions live in one process)."""
    return 1 if store == "memory" else max(1, cores)


def split_sessions_reason(store: str, workers: int) -> str | None:
    """Why ``store`` cannot serve ``workers`` processes, or None when it can."""
    if store == "memory" and workers > 1:
        return (
            f"FORECAST_STORE=memory with {workers} uvicorn workers would split sessions between "
            "processes: use FORECAST_STORE=sqlite or redis, or one worker"
        )
    return None
