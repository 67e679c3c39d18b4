"""The keys file, re-read while the service runs: keys rotate without a restart.

Each replica reads the file every ``FORECAST_API_KEYS_RELOAD_S`` seconds in a worker thread
(never on the event loop) and swaps in the new keys when its bytes changed. A file that does not
parse keeps the last good keys, with one log line saying why; write the new file beside the old
one and rename it over, so a replica never reads half a file.
"""

from __future__ import annotations

import logging
from pathlib import Path

import anyio
import anyio.to_thread

from app.auth import ApiKeys
from app.keys import KeyDefaults, KeyTable, read_keys_file
from app.rate_limit import RateLimiter

logger = logging.getLogger("app.keys")


class KeysFileError(ValueError):
    """The keys file cannot be used at start-up; the message is the one line to print."""


def load_keys_file(path: Path, defaults: KeyDefaults) -> tuple[bytes, KeyTable]:
    """The file's bytes and keys at start-up; KeysFileError saying what to fix."""
    try:
        return read_keys_file(path, defaults)
    except ValueError as error:
        raise KeysFileError(f"FORECAST_API_KEYS_FILE={path}: {error}") from None


def describe(table: KeyTable, max_sessions: int) -> str:
    admins = sum(entry.admin for entry in table.by_digest.values())
    line = f"{len(table.by_digest)} API keys ({admins} admin)"
    if table.oversubscribed(max_sessions):
        line += (
            f"; their session quotas add up to more than FORECAST_MAX_SESSIONS={max_sessions}, "
            "so keys can crowd each other out through the service's cap"
        )
    return line


class KeysFileWatcher:
    """Re-reads the keys file when asked (:meth:`check`) or on an interval (:meth:`run`)."""

    def __init__(
        self,
        path: Path,
        defaults: KeyDefaults,
        api_keys: ApiKeys,
        limiter: RateLimiter,
        loaded: bytes,
    ) -> None:
        self._path = path
        self._defaults = defaults
        self._api_keys = api_keys
        self._limiter = limiter
        self._loaded = loaded

    async def check(self) -> bool:
        """Swap in the file's keys if it changed and parses; True if the keys changed."""
        try:
            raw = await anyio.to_thread.run_sync(self._path.read_bytes)
        except OSError as error:
            logger.error(
                "keys file %s unreadable (%s); keeping the last good keys",
                self._path,
                error.strerror or error,
            )
            return False
        if raw == self._loaded:
            return False
        try:
            _raw, table = await anyio.to_thread.run_sync(read_keys_file, self._path, self._defaults)
        except ValueError as error:
            logger.error("keys file %s refused (%s); keeping the last good keys", self._path, error)
            self._loaded = raw  # log once per bad version, not once per interval
            return False
        self._api_keys.table = table
        self._limiter.forget_others(set(table.by_namespace))
        self._loaded = raw
        logger.info(
            "keys file %s changed: %s", self._path, describe(table, self._defaults.max_sessions)
        )
        return True

    async def run(self, interval_s: float) -> None:
        """Check every ``interval_s`` seconds until cancelled."""
        while True:
            await anyio.sleep(interval_s)
            await self.check()
