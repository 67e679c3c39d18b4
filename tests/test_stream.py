"""The /stream WebSocket on real uvicorn servers, driven by the websockets client."""

from __future__ import annotations

import asyncio
import base64
import json
import signal
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.client import ClientProtocol
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.frames import Frame, Opcode
from websockets.protocol import State
from websockets.uri import parse_uri

from app.serve import WEBSOCKETS
from tests.helpers import Server, start_uvicorn, stop, uvicorn_server

pytestmark = pytest.mark.anyio

KEY = "stream-test-key"


def server_env(models: Path, data: Path, **extra: str) -> dict[str, str]:
    return {
        "FORECAST_MODEL_DIR": str(models),
        "FORECAST_STORE": "sqlite",
        "FORECAST_DATA_DIR": str(data),
        # As app.serve starts it.
        "UVICORN_WS": WEBSOCKETS,
        **extra,
    }


@pytest.fixture(scope="module")
def server(tutorial_models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    folder = tmp_path_factory.mktemp("stream")
    with uvicorn_server(server_env(tutorial_models_dir, folder), folder / "log") as running:
        yield running


def start_keyed(env: dict[str, str], log: Path, pause: float = 0.1) -> Server:
    """A server that needs ``KEY`` (on /ready too), once /ready answers 200 with the key; polled
    every ``pause`` seconds."""
    running = start_uvicorn(env, log)
    try:
        for _attempt in range(1200):
            try:
                ready = httpx.get(
                    running.base_url + "/ready", headers={"authorization": f"Bearer {KEY}"}
                )
                if ready.status_code == 200:
                    return running
            except httpx.TransportError:
                pass
            assert running.process.poll() is None, running.log_text()[-3000:]
            time.sleep(pause)
        raise AssertionError("the server never got ready")
    except BaseException:
        stop(running)
        raise


@pytest.fixture(scope="module")
def keyed_server(
    tutorial_models_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    folder = tmp_path_factory.mktemp("stream-keyed")
    env = server_env(tutorial_models_dir, folder, FORECAST_API_KEYS=KEY)
    running = start_keyed(env, folder / "log")
    try:
        yield running
    finally:
        stop(running)


def ws_url(server: Server) -> str:
    return server.base_url.replace("http://", "ws://") + "/stream"


def message(session: str, value: float, step: int | None = None) -> str:
    body: dict[str, Any] = {"session_id": session, "value": value}
    if step is not None:
        body["step"] = step
    return json.dumps(body)


async def ask(ws: ClientConnection, text: str) -> dict[str, Any]:
    await ws.send(text)
    answer: dict[str, Any] = json.loads(await ws.recv())
    return answer


async def session_step(server: Server, session: str, headers: dict[str, str] | None = None) -> int:
    async with httpx.AsyncClient(base_url=server.base_url, headers=headers) as client:
        response = await client.get(f"/sessions/{session}")
    if response.status_code == 404:
        return 0
    step: int = response.json()["step"]
    return step


async def reference_predictions(server: Server, session: str, values: list[float]) -> list[float]:
    async with httpx.AsyncClient(base_url=server.base_url) as client:
        response = await client.post(
            "/predict/batch", json={"session_id": session, "values": values}
        )
    predictions: list[float] = response.json()["predictions"]
    return predictions


async def test_answers_equal_predict_and_come_in_order(server: Server) -> None:
    sends = [("a", 0.0), ("b", 0.5), ("a", 0.1), ("b", 0.6), ("a", 0.2)]
    async with connect(ws_url(server)) as ws:
        for session, value in sends:
            await ws.send(message(f"order-{session}", value))
        answers = [json.loads(await ws.recv()) for _ in sends]
    async with httpx.AsyncClient(base_url=server.base_url) as client:
        expected = [
            (await client.post("/predict", json={"session_id": f"twin-{s}", "value": v})).json()
            for s, v in sends
        ]
    assert answers == [
        {**answer, "session_id": f"order-{s}"}
        for answer, (s, _) in zip(expected, sends, strict=True)
    ]


async def test_sockets_feeding_one_session_at_once_apply_each_message_once(
    server: Server,
) -> None:
    sockets, each = 8, 25

    async def feed_one_socket(index: int) -> list[int]:
        async with connect(ws_url(server)) as ws:
            return [
                (await ask(ws, message("shared", 0.01 * (index * each + n))))["step"]
                for n in range(each)
            ]

    steps = await asyncio.gather(*(feed_one_socket(index) for index in range(sockets)))
    assert sorted(step for socket_steps in steps for step in socket_steps) == list(
        range(1, sockets * each + 1)
    )
    assert all(socket_steps == sorted(socket_steps) for socket_steps in steps)
    assert await session_step(server, "shared") == sockets * each


async def test_a_resent_message_replays_and_advances_nothing(server: Server) -> None:
    async with connect(ws_url(server)) as ws:
        await ask(ws, message("replay", 0.0, 0))
        first = await ask(ws, message("replay", 0.1, 1))
        again = await ask(ws, message("replay", 0.1, 1))
    assert again == {**first, "replayed": True}
    assert await session_step(server, "replay") == 2


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("not json", "not valid JSON"),
        ('{"session_id": "m"}', "value: field required"),
        ('{"session_id": "a/b", "value": 1}', "session_id: must be"),
        ('{"session_id": "m", "value": NaN}', "value"),
        ('{"session_id": "m", "value": 1, "colour": "red"}', "colour: unknown field"),
        ("[1, 2]", "JSON object"),
    ],
    ids=["not-json", "no-value", "bad-id", "nan", "unknown-field", "not-an-object"],
)
async def test_a_malformed_message_gets_an_error_and_the_socket_stays_open(
    server: Server, text: str, problem: str
) -> None:
    async with connect(ws_url(server)) as ws:
        refused = await ask(ws, text)
        after = await ask(ws, message("malformed-after", 0.0))
    assert refused["error"]["code"] == "invalid_request"
    assert problem in refused["error"]["message"]
    assert after["step"] >= 1


async def test_a_step_conflict_answers_its_message_only(server: Server) -> None:
    async with connect(ws_url(server)) as ws:
        conflict = await ask(ws, message("conflict", 0.0, 5))
        applied = await ask(ws, message("conflict", 0.0, 0))
    assert conflict["error"]["code"] == "step_conflict"
    assert conflict["error"]["details"] == {"expected_step": 0}
    assert applied["step"] == 1


async def test_a_lost_connection_loses_and_duplicates_nothing(server: Server) -> None:
    values = [round(0.01 * i, 2) for i in range(60)]
    async with connect(ws_url(server)) as ws:
        for step, value in enumerate(values):
            await ws.send(message("lost", value, step))
        for _ in range(10):
            await ws.recv()
        ws.transport.abort()  # the network drops: no close frame, answers unread
    # The client resumes from the count the service reports, with steps, on a new socket.
    resume = await session_step(server, "lost")
    assert 10 <= resume <= len(values)
    async with connect(ws_url(server)) as ws:
        replayed = await ask(ws, message("lost", values[resume - 1], resume - 1))
        answers = [await ask(ws, message("lost", values[s], s)) for s in range(resume, len(values))]
    assert replayed["replayed"] is True
    assert [a["step"] for a in answers] == list(range(resume + 1, len(values) + 1))
    reference = await reference_predictions(server, "lost-reference", values)
    assert [a["prediction"] for a in answers] == reference[resume:]


class RawClient:
    """A WebSocket client on a blocking socket that reads only when told to (the websockets
    asyncio client reads ahead into its own memory, which would hide a slow reader)."""

    def __init__(self, server: Server) -> None:
        host, port = server.base_url.removeprefix("http://").split(":")
        self.sock = socket.create_connection((host, int(port)))
        self.protocol = ClientProtocol(parse_uri(ws_url(server)))
        self.protocol.send_request(self.protocol.connect())
        self._flush()
        while self.protocol.state is State.CONNECTING:
            self.protocol.receive_data(self.sock.recv(65536))
        self.answers: list[dict[str, Any]] = []

    def _flush(self) -> None:
        self.sock.sendall(b"".join(self.protocol.data_to_send()))

    def send(self, text: str) -> None:
        self.protocol.send_text(text.encode())
        self._flush()  # blocks while the server is not reading

    def read(self, count: int) -> list[dict[str, Any]]:
        while len(self.answers) < count:
            self.protocol.receive_data(self.sock.recv(65536))
            for event in self.protocol.events_received():
                if isinstance(event, Frame) and event.opcode is Opcode.TEXT:
                    self.answers.append(json.loads(bytes(event.data)))
        return self.answers[:count]


async def test_a_slow_reader_is_slowed_not_buffered(server: Server) -> None:
    # The kernel's buffers alone hold tens of megabytes on loopback (autotuned up to
    # net.ipv4.tcp_rmem's maximum): send more than that.
    total = 40_000
    sent = 0
    # Large messages (padded with JSON whitespace) fill the kernel's buffers soon.
    text = message("slow", 0.5) + " " * 4000
    client = RawClient(server)

    def send_all() -> None:
        nonlocal sent
        for _ in range(total):
            client.send(text)
            sent += 1

    sender = threading.Thread(target=send_all, daemon=True)
    sender.start()
    # Nobody reads: the server must stop applying, and the sender stop sending, long before
    # the end (each waits for the other's buffers to empty).
    last, still = -1, 0
    while still < 5 and sender.is_alive():
        await asyncio.sleep(0.2)
        still = still + 1 if sent == last else 0
        last = sent
    stalled_at = sent
    applied_while_stalled = await session_step(server, "slow")
    answers = await asyncio.to_thread(client.read, total)
    sender.join()
    client.sock.close()
    assert stalled_at < total
    assert applied_while_stalled < stalled_at
    assert [a["step"] for a in answers] == list(range(1, total + 1))


def bearer_subprotocol(key: str) -> str:
    return "base64url.bearer." + base64.urlsafe_b64encode(key.encode()).decode().rstrip("=")


async def test_a_browser_sends_its_key_as_a_subprotocol(keyed_server: Server) -> None:
    protocols = ["forecast.v1", bearer_subprotocol(KEY)]
    async with connect(ws_url(keyed_server), subprotocols=protocols) as ws:  # type: ignore[arg-type]
        answer = await ask(ws, message("browser", 0.0))
        assert ws.subprotocol == "forecast.v1"
    assert answer["step"] == 1
    headers = {"authorization": f"Bearer {KEY}"}
    assert await session_step(keyed_server, "browser", headers) == 1


async def test_a_client_sends_its_key_as_a_header(keyed_server: Server) -> None:
    headers = {"authorization": f"Bearer {KEY}"}
    async with connect(ws_url(keyed_server), additional_headers=headers) as ws:
        answer = await ask(ws, message("header", 0.0))
    assert answer["step"] == 1


@pytest.mark.parametrize(
    "protocols",
    [["forecast.v1"], ["forecast.v1", bearer_subprotocol("wrong")], ["base64url.bearer.%%"]],
    ids=["no-key", "unknown-key", "undecodable-key"],
)
async def test_a_handshake_without_a_valid_key_is_refused(
    keyed_server: Server, protocols: list[str]
) -> None:
    with pytest.raises(InvalidStatus) as refused:
        async with connect(ws_url(keyed_server), subprotocols=protocols):  # type: ignore[arg-type]
            pass
    assert refused.value.response.status_code == 401
    assert json.loads(refused.value.response.body or b"")["error"]["code"] == "unauthorized"


async def test_metrics_count_messages_and_steps(server: Server) -> None:
    def counters(text: str) -> dict[str, float]:
        return {
            line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith(("forecast_steps_total", "forecast_stream_messages_total"))
        }

    async with httpx.AsyncClient(base_url=server.base_url) as client:
        before = counters((await client.get("/metrics")).text)
        async with connect(ws_url(server)) as ws:
            await ask(ws, message("metrics", 0.0))
            await ask(ws, "not json")
        after = counters((await client.get("/metrics")).text)
    assert after["forecast_steps_total"] == before["forecast_steps_total"] + 1
    answered = 'forecast_stream_messages_total{outcome="answered"}'
    refused = 'forecast_stream_messages_total{outcome="refused"}'
    assert after[answered] == before[answered] + 1
    assert after[refused] == before[refused] + 1


async def test_shutdown_closes_cleanly_and_applies_nothing_after(
    tutorial_models_dir: Path, tmp_path: Path
) -> None:
    env = server_env(tutorial_models_dir, tmp_path / "data")
    values = [round(0.001 * i, 3) for i in range(3000)]
    answered = 0
    with uvicorn_server(env, tmp_path / "log") as running:
        async with connect(ws_url(running)) as ws:

            async def send_all() -> None:
                for step, value in enumerate(values):
                    await ws.send(message("shutdown", value, step))

            sender = asyncio.create_task(send_all())
            with pytest.raises(ConnectionClosed) as closed:
                while True:
                    json.loads(await ws.recv())
                    answered += 1
                    if answered == 100:
                        running.process.send_signal(signal.SIGTERM)
            sender.cancel()
        running.process.wait(timeout=30)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1012
    with uvicorn_server(env, tmp_path / "log") as restarted:
        applied = await session_step(restarted, "shutdown")
    # Every answered message was applied; of those unanswered, at most the one in flight.
    assert answered <= applied <= answered + 1
    assert answered < len(values)


@pytest.fixture(scope="module")
def rate_limited_server(
    tutorial_models_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    """A server whose one key may send 2 requests a second, 4 at once."""
    folder = tmp_path_factory.mktemp("stream-rate")
    env = server_env(
        tutorial_models_dir, folder, FORECAST_API_KEYS=KEY, FORECAST_RATE_LIMIT="2/s burst 4"
    )
    # Polled slower than the rate: the waiting costs no more than it refills.
    running = start_keyed(env, folder / "log", pause=0.6)
    try:
        time.sleep(2.5)  # the bucket full again
        yield running
    finally:
        stop(running)


async def test_each_message_is_charged_to_the_keys_rate(rate_limited_server: Server) -> None:
    headers = {"authorization": f"Bearer {KEY}"}
    async with connect(ws_url(rate_limited_server), additional_headers=headers) as ws:
        # The handshake took one of the 4 tokens; each message takes one more.
        answers = [await ask(ws, message("rated", 0.1 * index)) for index in range(5)]
        assert all("prediction" in answer for answer in answers[:3])
        refused = [answer for answer in answers[3:] if "error" in answer]
        assert refused, answers
        assert refused[0]["error"]["code"] == "rate_limited"
        assert refused[0]["error"]["details"]["retry_after_s"] >= 1
        # The socket stays open: after the pause, the next message is answered.
        await asyncio.sleep(1.1)
        later = await ask(ws, message("rated", 0.9))
    applied = sum("prediction" in answer for answer in answers)
    assert later["step"] == applied + 1  # a refused message was not applied
