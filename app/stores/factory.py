"""Build the session store that the settings name."""

from __future__ import annotations

from collections.abc import Callable

from app.settings import Settings
from app.stores.base import Quotas, SessionStore, no_quotas
from app.stores.memory import MemoryStore


async def open_store(
    settings: Settings, clock: Callable[[], float], quotas: Quotas = no_quotas
) -> SessionStore:
    """Open (and for durable stores, prepare) the configured store; ``clock`` tells the time,
    ``quotas`` each key's session quota."""
    if settings.store == "memory":
        return MemoryStore(
            ttl_s=settings.session_ttl_s,
            max_sessions=settings.max_sessions,
            attempts=settings.store_retry_attempts,
            clock=clock,
            quotas=quotas,
        )
    if settings.store == "sqlite":
        from app.stores.sqlite import SqliteStore

        sqlite_store: SessionStore = await SqliteStore.open(
            settings.data_dir / "sessions.sqlite3",
            ttl_s=settings.session_ttl_s,
            max_sessions=settings.max_sessions,
            clock=clock,
            quotas=quotas,
            history=settings.session_history,
        )
        return sqlite_store
    from app.stores.redis_mode import open_redis_store

    return await open_redis_store(settings, clock, quotas)
