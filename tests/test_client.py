"""The Python client against a real server: steps tracked, lost answers retried without applying
a value twice, the service's errors as typed exceptions."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from bench.local import free_port, wait_for_200
from forecast_client.client import AsyncForecastClient, ForecastClient
from forecast_client.errors import (
    InvalidRequest,
    ServiceUnreachable,
    SessionConflict,
    SessionNotFound,
    StepConflict,
    Unauthorized,
)
from tests.helpers import REPO, Server, start_uvicorn, stop

KEY = "client-test-key-0123456789"


@pytest.fixture(scope="module")
def server(tutorial_models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One uvicorn serving the tutorial model, with an API key, for the whole module."""
    env = {
        "FORECAST_MODEL_DIR": str(tutorial_models_dir),
        "FORECAST_STORE": "memory",
        "FORECAST_API_KEYS": KEY,
    }
    running = start_uvicorn(env, tmp_path_factory.mktemp("client") / "server.log")
    try:
        # /ready wants the key; the lifespan has loaded the model once anything answers.
        wait_for_200(f"{running.base_url}/health", running.process)
        yield running
    finally:
        stop(running)


@pytest.fixture
def client(server: Server) -> Iterator[ForecastClient]:
    with ForecastClient(server.base_url, api_key=KEY, backoff_s=0) as opened:
        yield opened


class LoseFirstAnswer(httpx.BaseTransport):
    """Sends every request to the server, but drops the answer to the first one on ``path``
    (read, then lost: the server applied the request) and reports a read timeout instead."""

    def __init__(self, path: str) -> None:
        self.inner = httpx.HTTPTransport()
        self.path = path
        self.sent_on_path = 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self.inner.handle_request(request)
        if request.url.path == self.path:
            self.sent_on_path += 1
            if self.sent_on_path == 1:
                response.read()
                response.close()
                raise httpx.ReadTimeout("answer lost on purpose", request=request)
        return response

    def close(self) -> None:
        self.inner.close()


class AsyncLoseFirstAnswer(httpx.AsyncBaseTransport):
    """``LoseFirstAnswer`` for the async client."""

    def __init__(self, path: str) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.path = path
        self.sent_on_path = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.inner.handle_async_request(request)
        if request.url.path == self.path:
            self.sent_on_path += 1
            if self.sent_on_path == 1:
                await response.aread()
                await response.aclose()
                raise httpx.ReadTimeout("answer lost on purpose", request=request)
        return response

    async def aclose(self) -> None:
        await self.inner.aclose()


def test_predict_tracks_the_step_itself(client: ForecastClient) -> None:
    answers = [client.predict("tracked", value) for value in (0.0, 0.1, 0.2)]
    assert [a["step"] for a in answers] == [1, 2, 3]
    assert [round(a["prediction"], 1) for a in answers] == [0.1, 0.2, 0.3]
    assert not any(a["replayed"] for a in answers)


def test_a_lost_answer_is_retried_and_the_value_applied_once(
    server: Server, client: ForecastClient
) -> None:
    transport = LoseFirstAnswer("/predict")
    with ForecastClient(server.base_url, api_key=KEY, backoff_s=0, transport=transport) as lossy:
        first = lossy.predict("lossy", 0.0)
        second = lossy.predict("lossy", 0.1)
    assert transport.sent_on_path == 3  # the lost one, its resend, the next value
    assert (first["step"], first["replayed"]) == (1, True)
    assert (second["step"], second["replayed"]) == (2, False)
    assert client.session("lossy")["step"] == 2
    # The same values fed without loss give the same forecasts: 0.0 was applied exactly once.
    reference = [client.predict("no-loss", value)["prediction"] for value in (0.0, 0.1)]
    assert [first["prediction"], second["prediction"]] == reference


@pytest.mark.anyio
async def test_the_async_client_retries_a_lost_batch_answer_once(server: Server) -> None:
    transport = AsyncLoseFirstAnswer("/predict/batch")
    async with AsyncForecastClient(
        server.base_url, api_key=KEY, backoff_s=0, transport=transport
    ) as lossy:
        answer = await lossy.predict_batch("lossy-batch", [0.0, 0.1, 0.2])
        info = await lossy.session("lossy-batch")
    assert transport.sent_on_path == 2
    assert (answer["step"], answer["replayed"]) == (3, True)
    assert info["step"] == 3


def test_a_new_client_continues_a_session_where_it_is(
    server: Server, client: ForecastClient
) -> None:
    client.predict_batch("continued", [0.0, 0.1])
    with ForecastClient(server.base_url, api_key=KEY) as later:
        assert later.predict("continued", 0.2)["step"] == 3


def test_a_stale_step_is_a_step_conflict_with_the_servers_message(
    server: Server, client: ForecastClient
) -> None:
    client.predict("shared", 0.0)
    with ForecastClient(server.base_url, api_key=KEY) as other:
        other.predict("shared", 0.1)
    with pytest.raises(StepConflict) as refused:
        client.predict("shared", 0.2)
    assert refused.value.expected_step == 2
    assert refused.value.message.startswith("step 1 does not match this session")
    # The client forgot the stale step: the next call reads the session's and appends.
    assert client.predict("shared", 0.2)["step"] == 3


def test_predict_many_feeds_sessions_in_order_and_tracks_their_steps(
    client: ForecastClient,
) -> None:
    first = client.predict_many([("many-a", 0.0), ("many-b", 0.5), ("many-a", 0.1)])
    second = client.predict_many([("many-a", 0.2), ("many-b", 0.4)])
    assert [(r["session_id"], r["step"]) for r in first] == [  # type: ignore[index]
        ("many-a", 1),
        ("many-b", 1),
        ("many-a", 2),
    ]
    assert [r["step"] for r in second] == [3, 2]  # type: ignore[index]
    reference = [client.predict("many-ref", v)["prediction"] for v in (0.0, 0.1, 0.2)]
    fed = [first[0], first[2], second[0]]
    assert [r["prediction"] for r in fed] == reference  # type: ignore[index]


def test_predict_many_continues_sessions_another_client_fed(
    server: Server, client: ForecastClient
) -> None:
    """Sent as new (step 0), a session that was not is told its step and sent again."""
    client.predict_batch("many-known", [0.0, 0.1])
    with ForecastClient(server.base_url, api_key=KEY) as later:
        results = later.predict_many([("many-known", 0.2), ("many-new", 0.3)])
    assert [r["step"] for r in results] == [3, 1]  # type: ignore[index]
    assert client.session("many-known")["step"] == 3


def test_predict_many_gives_a_refused_item_its_error_and_applies_the_others(
    server: Server, client: ForecastClient
) -> None:
    client.predict("many-stale", 0.0)
    with ForecastClient(server.base_url, api_key=KEY) as other:
        other.predict("many-stale", 0.1)
    stale, fresh = client.predict_many([("many-stale", 0.2), ("many-fresh", 0.3)])
    assert isinstance(stale, StepConflict) and stale.expected_step == 2
    assert not isinstance(fresh, Exception) and fresh["step"] == 1
    # The stale step was forgotten: the next request reads the session's and appends.
    assert client.predict_many([("many-stale", 0.2)])[0]["step"] == 3  # type: ignore[index]


@pytest.mark.anyio
async def test_the_async_client_retries_a_lost_many_answer_once(server: Server) -> None:
    transport = AsyncLoseFirstAnswer("/predict/many")
    async with AsyncForecastClient(
        server.base_url, api_key=KEY, backoff_s=0, transport=transport
    ) as lossy:
        results = await lossy.predict_many([("lossy-many", 0.0), ("lossy-many", 0.1)])
        info = await lossy.session("lossy-many")
    assert transport.sent_on_path == 2
    assert [(r["step"], r["replayed"]) for r in results] == [  # type: ignore[index]
        (1, True),
        (2, True),
    ]
    assert info["step"] == 2


def test_forecast_reset_and_delete(client: ForecastClient) -> None:
    client.predict_batch("lifecycle", [0.0, 0.1, 0.2])
    ahead = client.forecast("lifecycle", 2)
    assert (ahead["step"], len(ahead["forecasts"])) == (3, 2)
    assert client.reset("lifecycle") == {"session_id": "lifecycle", "step": 0}
    assert client.predict("lifecycle", 0.0)["step"] == 1
    assert client.delete("lifecycle") == {"session_id": "lifecycle", "deleted": True}
    with pytest.raises(SessionNotFound):
        client.session("lifecycle")


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (lambda c: c.forecast("never-fed", 1), SessionNotFound, "no session 'never-fed'"),
        (lambda c: c.predict("bad id!", 0.0), InvalidRequest, "session_id: must be"),
        (lambda c: c.forecast("fresh", 0), InvalidRequest, "horizon"),
        (
            lambda c: (c.predict("emptied", 0.0), c.reset("emptied"), c.forecast("emptied", 1)),
            SessionConflict,
            "no values",
        ),
    ],
    ids=["unknown-session", "bad-session-id", "zero-horizon", "no-values-yet"],
)
def test_service_errors_are_typed_with_the_servers_message(
    client: ForecastClient, call: Any, error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=re.escape(message)):
        call(client)


def test_a_wrong_key_is_unauthorized(server: Server) -> None:
    with ForecastClient(server.base_url, api_key="wrong-key-0123456789") as client:
        with pytest.raises(Unauthorized, match="unknown API key"):
            client.session("any")


def test_no_service_is_unreachable_after_every_attempt() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    with ForecastClient(url, attempts=2, backoff_s=0) as client:
        with pytest.raises(ServiceUnreachable, match=r"after 2 attempt\(s\): ConnectError"):
            client.predict("nobody", 0.0)


def _readme_python_example() -> tuple[str, str]:
    """README's first Python example and the output it shows."""
    readme = (REPO / "README.md").read_text()
    found = re.search(r"```python\n(.*?)```\n+Prints:\n+```\n(.*?)```", readme, re.DOTALL)
    assert found is not None, "README lost its client example"
    return found.group(1), found.group(2)


def test_readmes_client_example_prints_what_readme_shows(
    server: Server, capsys: pytest.CaptureFixture[str]
) -> None:
    code, shown = _readme_python_example()
    address = 'ForecastClient("http://127.0.0.1:8000")'
    assert address in code
    exec(code.replace(address, f"ForecastClient({server.base_url!r}, api_key={KEY!r})"), {})
    assert capsys.readouterr().out == shown
