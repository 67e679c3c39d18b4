"""``/stream``'s batcher: messages of many sockets applied together, each as it would be alone.

In process, with the real model and a memory store that records each ``apply_many`` call; the
sockets' side is in tests/test_stream.py, against a real server.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from asgi_lifespan import LifespanManager

from app.auth import session_key
from app.errors import ServiceError, StoreUnavailable
from app.main import create_app
from app.routes.stream_batch import StreamBatcher
from app.schemas import PredictRequest
from app.services import ModelSlot
from app.session_rows import Stepped
from app.settings import Settings
from app.stores.base import Compute, T
from app.stores.memory import MemoryStore

pytestmark = pytest.mark.anyio


class RecordingStore(MemoryStore):
    """A memory store that notes the sessions of each ``apply_many`` call; it can be made to
    fail its next calls (a bug, or the store down), or to wait until let go. It steps no
    session in place, so that every batch is one ``apply_many`` call (tests/test_session_rows
    covers the in-place path)."""

    async def feed_in_place(self, keys: Sequence[str], *_args: Any) -> Stepped:
        return Stepped.nothing()

    def __init__(self) -> None:
        super().__init__(ttl_s=3600, max_sessions=1000)
        self.calls: list[list[str]] = []
        self.failures = 0
        self.outages = 0
        self.gate: asyncio.Event | None = None

    async def apply_many(
        self, items: Sequence[tuple[str, Compute[T]]], *, offload: bool = False
    ) -> list[T | ServiceError]:
        self.calls.append([key for key, _ in items])
        failing = self.failures > 0  # the next calls made fail, in the order they were made
        self.failures -= failing
        if self.gate is not None:
            await self.gate.wait()
        if failing:
            raise RuntimeError("the store broke")
        if self.outages:
            self.outages -= 1
            raise StoreUnavailable("the test store", "switched off")
        return await super().apply_many(items, offload=offload)


@pytest.fixture
def store() -> RecordingStore:
    return RecordingStore()


@pytest.fixture
async def batcher(
    store: RecordingStore, tutorial_models_dir: Path, tutorial_model: ModelSlot, tmp_path: Path
) -> AsyncIterator[StreamBatcher]:
    settings = Settings.model_validate(
        {"model_dir": tutorial_models_dir, "data_dir": tmp_path, "max_items_per_request": 4}
    )
    app = create_app(settings, model=tutorial_model, store=store)
    async with LifespanManager(app, startup_timeout=120):
        yield app.state.stream_batcher


def send(batcher: StreamBatcher, session: str, value: float, **fields: Any) -> Any:
    body = PredictRequest(session_id=session, value=value, **fields)
    return batcher.answer(session_key("", session, None), body)


async def test_messages_waiting_together_are_applied_in_one_store_call(
    batcher: StreamBatcher, store: RecordingStore
) -> None:
    answers = await asyncio.gather(*(send(batcher, f"s{i}", 0.1 * i) for i in range(4)))
    assert [answer["session_id"] for answer in answers] == [f"s{i}" for i in range(4)]
    assert [len(keys) for keys in store.calls] == [4]


async def test_a_batch_takes_at_most_the_items_of_one_predict_many_request(
    batcher: StreamBatcher, store: RecordingStore
) -> None:
    answers = await asyncio.gather(*(send(batcher, f"s{i}", 0.1 * i) for i in range(10)))
    assert [answer["step"] for answer in answers] == [1] * 10
    assert [len(keys) for keys in store.calls] == [4, 4, 2]


async def test_a_session_gets_one_message_a_batch_in_the_order_sent(
    batcher: StreamBatcher, store: RecordingStore
) -> None:
    answers = await asyncio.gather(
        send(batcher, "a", 0.1), send(batcher, "b", 0.2), send(batcher, "a", 0.3),
        send(batcher, "a", 0.4),
    )  # fmt: skip
    assert [answer["step"] for answer in answers] == [1, 1, 2, 3]
    assert [len(keys) for keys in store.calls] == [2, 1, 1]


async def test_a_resend_in_the_next_batch_is_replayed(batcher: StreamBatcher) -> None:
    first, again = await asyncio.gather(
        send(batcher, "a", 0.5, step=0), send(batcher, "a", 0.5, step=0)
    )
    assert (first["replayed"], again["replayed"]) == (False, True)
    assert again["prediction"] == first["prediction"]


async def test_a_refused_message_leaves_the_others_of_its_batch_applied(
    batcher: StreamBatcher, store: RecordingStore
) -> None:
    answers = await asyncio.gather(
        send(batcher, "a", 0.1), send(batcher, "b", 0.2, step=7), send(batcher, "c", 0.3)
    )
    assert answers[1]["error"]["code"] == "step_conflict"
    assert [answers[0]["step"], answers[2]["step"]] == [1, 1]
    assert [len(keys) for keys in store.calls] == [3]


async def test_a_failed_batch_fails_its_messages_and_the_next_batch_is_applied(
    batcher: StreamBatcher, store: RecordingStore
) -> None:
    store.failures = 1
    failed = await asyncio.gather(
        send(batcher, "a", 0.1), send(batcher, "b", 0.2), return_exceptions=True
    )
    assert [str(outcome) for outcome in failed] == ["the store broke"] * 2
    answer = await send(batcher, "a", 0.1)
    assert answer["step"] == 1


async def test_a_store_that_is_down_answers_each_message_with_the_error(
    batcher: StreamBatcher, store: RecordingStore
) -> None:
    store.outages = 1
    answers = await asyncio.gather(send(batcher, "a", 0.1), send(batcher, "b", 0.2))
    assert [answer["error"]["code"] for answer in answers] == ["store_unavailable"] * 2
    answer = await send(batcher, "a", 0.1)
    assert answer["step"] == 1


async def test_stopping_waits_for_the_batch_being_applied(
    batcher: StreamBatcher, store: RecordingStore
) -> None:
    store.gate = asyncio.Event()
    waiting = asyncio.ensure_future(send(batcher, "a", 0.1))
    while not store.calls:  # the batch is in the store, held there
        await asyncio.sleep(0)
    stopping = asyncio.ensure_future(batcher.stop(timeout_s=60))
    await asyncio.sleep(0)
    assert not stopping.done()
    store.gate.set()
    await stopping
    assert waiting.done() and waiting.result()["step"] == 1


async def test_a_message_whose_socket_went_away_is_not_applied(
    batcher: StreamBatcher, store: RecordingStore
) -> None:
    waiting = [asyncio.ensure_future(send(batcher, "a", 0.1)) for _ in range(3)]
    await asyncio.sleep(0)  # all three wait; the first batch takes the first
    waiting[1].cancel()
    first, gone, third = await asyncio.gather(*waiting, return_exceptions=True)
    assert isinstance(gone, asyncio.CancelledError)
    assert not isinstance(first, BaseException) and not isinstance(third, BaseException)
    assert [first["step"], third["step"]] == [1, 2]
    assert [len(keys) for keys in store.calls] == [1, 1]


async def test_a_failed_store_call_leaves_the_messages_waiting_behind_it_applied(
    batcher: StreamBatcher, store: RecordingStore
) -> None:
    store.gate, store.failures = asyncio.Event(), 1
    first = asyncio.ensure_future(send(batcher, "a", 0.1))
    while not store.calls:  # the first message's call is in the store, held there
        await asyncio.sleep(0)
    beside = asyncio.ensure_future(send(batcher, "b", 0.2))
    while len(store.calls) < 2:  # applied beside it, held there too
        await asyncio.sleep(0)
    behind = asyncio.ensure_future(send(batcher, "a", 0.3))  # waits for "a"'s batch
    await asyncio.sleep(0)
    assert len(store.calls) == 2
    store.gate.set()
    outcomes: tuple[Any, Any, Any] = await asyncio.gather(
        first, beside, behind, return_exceptions=True
    )
    assert str(outcomes[0]) == "the store broke"
    assert [outcomes[1]["step"], outcomes[2]["step"]] == [1, 1]
    assert store.calls == [["/a"], ["/b"], ["/a"]]


async def test_two_batches_of_other_sessions_are_applied_at_once(
    batcher: StreamBatcher, store: RecordingStore
) -> None:
    store.gate = asyncio.Event()
    first = asyncio.ensure_future(send(batcher, "a", 0.1))
    while not store.calls:
        await asyncio.sleep(0)
    second = asyncio.ensure_future(send(batcher, "b", 0.2))
    third = asyncio.ensure_future(send(batcher, "c", 0.3))
    for _ in range(5):
        await asyncio.sleep(0)
    assert len(store.calls) == 2  # "a" and then "b" in the store, "c" waiting for either
    store.gate.set()
    answers = await asyncio.gather(first, second, third)
    assert [answer["step"] for answer in answers] == [1, 1, 1]


async def test_a_message_sent_as_both_batches_end_is_applied(
    batcher: StreamBatcher, store: RecordingStore
) -> None:
    """Both batches end in one turn of the event loop; a socket answered there sends its next
    message at once, before the loop has run the ended tasks' callbacks."""

    async def pipelining_socket() -> list[Any]:
        first = await send(batcher, "a", 0.1)
        return [first, await send(batcher, "a", 0.2)]

    store.gate = asyncio.Event()
    socket = asyncio.ensure_future(pipelining_socket())
    while not store.calls:
        await asyncio.sleep(0)
    beside = asyncio.ensure_future(send(batcher, "b", 0.3))
    while len(store.calls) < 2:
        await asyncio.sleep(0)
    store.gate.set()
    await beside
    for _ in range(20):  # turns of the loop, not time: the second message is applied or never
        await asyncio.sleep(0)
    assert socket.done()
    assert [answer["step"] for answer in socket.result()] == [1, 2]
