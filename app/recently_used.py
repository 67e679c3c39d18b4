"""Values by key kept up to a limit, the least recently used dropped first: the one policy of the
stores' caches (records a Redis replica served, records the SQLite writer decoded, sessions the
SQLite writer keeps as rows). Not thread-safe: each cache is one thread's, or under a lock."""

from __future__ import annotations

from collections import OrderedDict
from typing import Generic, TypeVar

V = TypeVar("V")


class RecentlyUsed(Generic[V]):
    """At most ``limit`` values by key, in the order they were last kept or used."""

    def __init__(self, limit: int) -> None:
        self._entries: OrderedDict[str, V] = OrderedDict()
        self._limit = limit

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def full(self) -> bool:
        """Whether keeping another key would drop the least recently used one."""
        return len(self._entries) >= self._limit

    def get(self, key: str) -> V | None:
        """The value under ``key``, its place in the order unchanged; None if none."""
        return self._entries.get(key)

    def use(self, key: str) -> V | None:
        """The value under ``key``, now the most recently used; None if none."""
        value = self._entries.get(key)
        if value is not None:
            self._entries.move_to_end(key)
        return value

    def keep(self, key: str, value: V) -> V | None:
        """Keep ``value`` under ``key`` as the most recently used; the value dropped to stay
        within the limit, if one was."""
        entries = self._entries
        entries[key] = value
        entries.move_to_end(key)
        if len(entries) > self._limit:
            return entries.popitem(last=False)[1]
        return None

    def oldest(self) -> str | None:
        """The key least recently kept or used; None when empty."""
        return next(iter(self._entries), None)

    def pop(self, key: str) -> V | None:
        """Forget ``key``; its value, if it had one."""
        return self._entries.pop(key, None)

    def clear(self) -> None:
        self._entries.clear()
