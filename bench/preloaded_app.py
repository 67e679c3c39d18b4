"""The service on a memory store that already holds ``BENCH_SESSIONS`` sessions (the memory store
cannot be filled from outside the process): ``uvicorn bench.preloaded_app:app``."""

from __future__ import annotations

import asyncio
import os
import threading
import time

from app.main import create_app
from app.settings import get_settings
from app.stores.memory import MemoryStore
from bench.sessions_fill import fill, session_after_one_step


def _filled_store() -> MemoryStore:
    settings = get_settings()
    store = MemoryStore(ttl_s=settings.session_ttl_s, max_sessions=settings.max_sessions)
    record = session_after_one_step(settings.model_dir, time.time())
    count = int(os.environ["BENCH_SESSIONS"])
    # uvicorn imports this module inside its running event loop: fill on a loop of our own.
    worker = threading.Thread(target=asyncio.run, args=(fill(store, count, record),))
    worker.start()
    worker.join()
    return store


app = create_app(store=_filled_store())
