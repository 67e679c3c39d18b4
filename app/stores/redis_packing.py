"""Redis commands packed by hiredis, in C.

redis-py's synchronous client packs commands with hiredis when it is installed; its asyncio
client always packs them in Python, argument by argument, which was the largest single cost of a
pipelined compare-and-set per session (README, "Many sessions per request"). The packer here is
redis-py's own hiredis serializer, so the bytes sent are the same (checked in
tests/test_redis_batch.py); only who builds them changes. Used by the single-node store; the
Redis Cluster store's client builds its node connections itself and packs in Python.

Long bytes arguments (a record, a whole ring) are joined in by Python instead: hiredis packs an
argument of over 512 bytes at about a nanosecond and a half a byte (README, "Many sessions per
request"), ten times what copying it costs.
"""

from __future__ import annotations

from typing import Any

import hiredis  # redis[hiredis], a dependency; older versions lack pack_command (_hiredis_packs)
from redis.asyncio import Redis
from redis.asyncio.connection import AbstractConnection
from redis.connection import HiredisRespSerializer
from redis.typing import EncodableT
from redis.utils import HIREDIS_AVAILABLE

# Bytes arguments longer than this are joined in by Python, not packed by hiredis: up to it
# hiredis is the quicker, past it (from 520 bytes on, measured) the slower.
JOINED_ABOVE = 512


class HiredisPacking:
    """Mixed in before a redis-py asyncio connection class: its ``pack_command`` (which its
    ``pack_commands``, used by pipelines, calls per command) by hiredis, the runs of arguments
    between long bytes ones each packed by one call."""

    _packer = HiredisRespSerializer()

    def pack_command(self, *args: EncodableT) -> list[bytes]:
        first = args[0]
        if not (isinstance(first, str) and first.isalpha()):  # a name redis-py may split
            return self._pack(args)
        try:
            return _packed_in_runs(args)
        except TypeError:  # an argument hiredis does not take: redis-py's packer says which
            return self._pack(args)

    def _pack(self, args: tuple[EncodableT, ...]) -> list[bytes]:
        # redis-py annotates each argument of ``pack`` as a list; it takes the same arguments
        # as ``pack_command`` (redis/connection.py).
        packed: list[bytes] = self._packer.pack(*args)  # type: ignore[arg-type]
        return packed


def _packed_in_runs(args: tuple[EncodableT, ...]) -> list[bytes]:
    """``args`` packed: the runs between long bytes arguments by hiredis, those joined in;
    TypeError for an argument hiredis does not take (a bytearray, a memoryview, None)."""
    pieces = [b"*%d\r\n" % len(args)]
    start = 0
    for index, arg in enumerate(args):
        if type(arg) is bytes and len(arg) > JOINED_ABOVE:
            if start < index:
                pieces.append(_packed_without_count(args[start:index]))
            pieces += (b"$%d\r\n" % len(arg), arg, b"\r\n")
            start = index + 1
    if start == 0:
        return [_packed(args)]
    if start < len(args):
        pieces.append(_packed_without_count(args[start:]))
    return pieces


def _packed(args: tuple[EncodableT, ...]) -> bytes:
    # hiredis's stub types the tuple as of one item.
    packed: bytes = hiredis.pack_command(args)  # type: ignore[arg-type]
    return packed


def _packed_without_count(args: tuple[EncodableT, ...]) -> bytes:
    """``args`` packed, without the leading argument count (``*N\\r\\n``): a run of a longer
    command's arguments."""
    packed = _packed(args)
    return packed[packed.index(b"\n") + 1 :]


def _hiredis_packs() -> bool:
    """Whether hiredis is installed in a version with ``pack_command`` (older ones, which
    redis 5.0's extra accepts, parse replies only)."""
    if not HIREDIS_AVAILABLE:
        return False
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
