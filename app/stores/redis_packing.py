"""Redis commands packed by hiredis, in C.

redis-py's synchronous client packs commands with hiredis when it is installed; its asyncio
client always packs them in Python, argument by argument, which was the largest single cost of a
pipelined compare-and-set per session (README, "Many sessions per request"). The packer here is
redis-py's own hiredis serializer, so the bytes sent are the same (checked in
tests/test_redis_batch.py); only who builds them changes. Used by the single-node store; the
Redis Cluster store's client builds its node connections itself and packs in Python.
"""

from __future__ import annotations

from typing import Any

from redis.asyncio import Redis
from redis.asyncio.connection import AbstractConnection
from redis.connection import HiredisRespSerializer
from redis.typing import EncodableT
from redis.utils import HIREDIS_AVAILABLE


class HiredisPacking:
    """Mixed in before a redis-py asyncio connection class: its ``pack_command`` (which its
    ``pack_commands``, used by pipelines, calls per command) by hiredis."""

    _packer = HiredisRespSerializer()

    def pack_command(self, *args: EncodableT) -> list[bytes]:
        # redis-py annotates each argument of ``pack`` as a list; it takes the same arguments
        # as ``pack_command`` (redis/connection.py).
        packed: list[bytes] = self._packer.pack(*args)  # type: ignore[arg-type]
        return packed


def _hiredis_packs() -> bool:
    """Whether hiredis is installed in a version with ``pack_command`` (older ones, which
    redis 5.0's extra accepts, parse replies only)."""
    if not HIREDIS_AVAILABLE:
        return False
    import hiredis

    return hasattr(hiredis, "pack_command")


def packing_in_c(connection_class: type[AbstractConnection]) -> type[AbstractConnection]:
    """``connection_class`` (TCP, TLS or Unix socket, as the URL chose) packing with hiredis."""
    name = f"HiredisPacking{connection_class.__name__}"
    packing: type[AbstractConnection] = type(name, (HiredisPacking, connection_class), {})
    return packing


def pack_in_c(client: Redis) -> Redis:
    """``client``, whose connections (none made yet) pack commands with hiredis when it is
    installed (the ``redis[hiredis]`` extra) in a version that packs; as they were otherwise."""
    pool: Any = client.connection_pool
    if _hiredis_packs():
        pool.connection_class = packing_in_c(pool.connection_class)
    return client
