"""A DNS server for tests: answers A queries for the names it is given, as Docker's DNS does for
a compose service (one address per replica), and can change its answers while it runs."""

from __future__ import annotations

import socket
import struct
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

_TYPE_A, _CLASS_IN = 1, 1
# Answers are not to be cached for long: the tests change them.
_TTL_S = 1


class FakeDns:
    """``addresses[name]`` is what a query for ``name`` gets; anything else gets NXDOMAIN."""

    def __init__(self, addresses: dict[str, Sequence[str]]) -> None:
        self.addresses = {name: list(found) for name, found in addresses.items()}
        self.queries = 0
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._socket.bind(("127.0.0.1", 0))
        self._socket.settimeout(0.2)
        self.port: int = self._socket.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def answer(self, name: str, addresses: Sequence[str]) -> None:
        """From now on, ``name`` resolves to ``addresses``."""
        self.addresses[name] = list(addresses)

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                query, client = self._socket.recvfrom(512)
            except TimeoutError:
                continue
            self.queries += 1
            self._socket.sendto(self._reply(query), client)

    def _reply(self, query: bytes) -> bytes:
        (ident,) = struct.unpack("!H", query[:2])
        labels, offset = [], 12
        while query[offset]:
            length = query[offset]
            labels.append(query[offset + 1 : offset + 1 + length].decode().lower())
            offset += 1 + length
        question = query[12 : offset + 5]
        qtype, _qclass = struct.unpack("!HH", query[offset + 1 : offset + 5])
        found = self.addresses.get(".".join(labels))
        answers = found if found is not None and qtype == _TYPE_A else []
        rcode = 3 if found is None else 0  # NXDOMAIN for unknown names
        header = struct.pack("!HHHHHH", ident, 0x8180 | rcode, 1, len(answers), 0, 0)
        records = b"".join(
            # A pointer to the question's name (offset 12), then type, class, TTL, address.
            struct.pack("!HHHIH", 0xC00C, _TYPE_A, _CLASS_IN, _TTL_S, 4) + socket.inet_aton(a)
            for a in answers
        )
        return header + question + records

    @contextmanager
    def running(self) -> Iterator[FakeDns]:
        """Serve queries in a thread until the block ends."""
        self._thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            self._thread.join()
            self._socket.close()
