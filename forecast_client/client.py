"""``ForecastClient`` and ``AsyncForecastClient``: the service's API over httpx, with retries that
apply each value exactly once.

Every feed carries the session's step, which the client tracks itself. On a timeout, a broken
connection or a 503, it sends the very same request again (after a short pause that doubles each
time); if the first one was applied and only its answer was lost, the service answers the resend
with the same answer, ``"replayed": true``, without applying the value again.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from types import TracebackType
from typing import Any, Self, TypeVar
from urllib.parse import quote

import anyio
import httpx

from forecast_client import operations
from forecast_client.answers import (
    BatchPrediction,
    Deleted,
    Forecast,
    History,
    Models,
    Prediction,
    Reset,
    SessionInfo,
)
from forecast_client.errors import (
    ForecastError,
    ServiceRefused,
    ServiceUnavailable,
    ServiceUnreachable,
    refusal,
)
from forecast_client.operations import Operation, Request, StepBook
from forecast_client.stream import ForecastStream, stream_url

T = TypeVar("T")

DEFAULT_TIMEOUT_S = 10.0
DEFAULT_ATTEMPTS = 4
DEFAULT_BACKOFF_S = 0.1


class _Policy:
    """What the two clients share: the base URL and key, the retry rule, reading answers."""

    def __init__(
        self,
        base_url: str,
        api_key: str | None,
        attempts: int,
        backoff_s: float,
        model: str | None = None,
    ) -> None:
        if attempts < 1:
            raise ValueError(f"attempts must be at least 1, not {attempts}")
        self.base_url = base_url.rstrip("/")
        self.headers = {"authorization": f"Bearer {api_key}"} if api_key else {}
        self.attempts = attempts
        self.backoff_s = backoff_s
        self.steps = StepBook()
        self.model = model

    def for_model(self, request: Request) -> Request:
        """``request`` for this client's model: the ``model`` field of a body (of each item of
        /predict/many's), or the query of a session's path (none for the default model)."""
        if self.model is None or request.path.startswith("/models"):
            return request
        if request.body is not None and "items" in request.body:  # /predict/many: per item
            items = [{**item, "model": self.model} for item in request.body["items"]]
            return Request(request.method, request.path, {**request.body, "items": items})
        if request.body is not None:
            return Request(request.method, request.path, {**request.body, "model": self.model})
        return Request(request.method, f"{request.path}?model={quote(self.model, safe='')}")

    def pause_before(self, attempt: int) -> float:
        """Seconds to wait before attempt number ``attempt`` (2, 3, ...)."""
        return float(self.backoff_s * 2 ** (attempt - 2))

    @staticmethod
    def read(response: httpx.Response) -> Any:
        """The JSON answer, or the service's error as an exception."""
        try:
            body = response.json()
        except ValueError:
            body = response.text
        if response.is_success:
            return body
        raise refusal(response.status_code, body)

    def unreachable(self, error: Exception) -> ServiceUnreachable:
        return ServiceUnreachable.after(self.base_url, self.attempts, error)


class ForecastClient:
    """The forecast service, synchronously. Use it as a context manager, or call ``close()``.

    ``transport``: an httpx transport to send through instead of the network's (tests).
    """

    def __init__(
        self,
        base_url: str = "http://127.0.0.1:8000",
        *,
        api_key: str | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        attempts: int = DEFAULT_ATTEMPTS,
        backoff_s: float = DEFAULT_BACKOFF_S,
        transport: httpx.BaseTransport | None = None,
        model: str | None = None,
    ) -> None:
        self._policy = _Policy(base_url, api_key, attempts, backoff_s, model)
        self._http = httpx.Client(
            base_url=self._policy.base_url,
            headers=self._policy.headers,
            timeout=timeout_s,
            transport=transport,
        )

    def predict(
        self, session_id: str, value: float, *, levels: Sequence[float] | None = None
    ) -> Prediction:
        """Feed one value to a session (created on first use); the forecast of its next value."""
        return self._run(operations.predict(self._policy.steps, session_id, value, levels))

    def predict_batch(
        self, session_id: str, values: Sequence[float], *, levels: Sequence[float] | None = None
    ) -> BatchPrediction:
        """Feed several values to one session in order; one forecast after each."""
        return self._run(operations.predict_batch(self._policy.steps, session_id, values, levels))

    def predict_many(
        self, items: Sequence[tuple[str, float]], *, levels: Sequence[float] | None = None
    ) -> list[Prediction | ServiceRefused]:
        """Feed ``(session_id, value)`` items of any sessions in one request, in order (items of
        one session in their order); per item, its answer or, when only that item was refused,
        the error (not raised: the other items were applied)."""
        return self._run(operations.predict_many(self._policy.steps, items, levels))

    def forecast(
        self, session_id: str, horizon: int, *, levels: Sequence[float] | None = None
    ) -> Forecast:
        """``horizon`` values ahead, each forecast fed back; the session is unchanged."""
        return self._run(operations.forecast(session_id, horizon, levels))

    def reset(self, session_id: str) -> Reset:
        """Start a session again from a fresh state."""
        return self._run(operations.reset(self._policy.steps, session_id))

    def session(self, session_id: str) -> SessionInfo:
        """A session's step, times, model version and skill."""
        return self._run(operations.session(self._policy.steps, session_id))

    def delete(self, session_id: str) -> Deleted:
        """Delete a session; deleting one that is not there is fine."""
        return self._run(operations.delete(self._policy.steps, session_id))

    def history(self, session_id: str) -> History:
        """A session's history window: values, the forecast served for each, intervals."""
        return self._run(operations.history(session_id))

    def models(self) -> Models:
        """The served models and their versions."""
        return self._run(operations.models())

    def close(self) -> None:
        """Close the connections."""
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def _run(self, operation: Operation[T]) -> T:
        try:
            request = next(operation)
            while True:
                try:
                    answer = self._send(request)
                except ForecastError as error:
                    request = operation.throw(error)
                else:
                    request = operation.send(answer)
        except StopIteration as done:
            result: T = done.value
            return result

    def _send(self, request: Request) -> Any:
        policy = self._policy
        request = policy.for_model(request)
        for attempt in range(1, policy.attempts + 1):
            if attempt > 1:
                time.sleep(policy.pause_before(attempt))
            try:
                response = self._http.request(request.method, request.path, json=request.body)
                return policy.read(response)
            except httpx.TransportError as error:
                if attempt == policy.attempts:
                    raise policy.unreachable(error) from error
            except ServiceUnavailable:
                if attempt == policy.attempts:
                    raise
        raise AssertionError("unreachable")  # the loop returns or raises


class AsyncForecastClient:
    """The forecast service, for asyncio or trio. Use it as an async context manager."""

    def __init__(
        self,
        base_url: str = "http://127.0.0.1:8000",
        *,
        api_key: str | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        attempts: int = DEFAULT_ATTEMPTS,
        backoff_s: float = DEFAULT_BACKOFF_S,
        transport: httpx.AsyncBaseTransport | None = None,
        model: str | None = None,
    ) -> None:
        self._policy = _Policy(base_url, api_key, attempts, backoff_s, model)
        self._timeout_s = timeout_s
        self._http = httpx.AsyncClient(
            base_url=self._policy.base_url,
            headers=self._policy.headers,
            timeout=timeout_s,
            transport=transport,
        )

    async def predict(
        self, session_id: str, value: float, *, levels: Sequence[float] | None = None
    ) -> Prediction:
        """Feed one value to a session (created on first use); the forecast of its next value."""
        return await self._run(operations.predict(self._policy.steps, session_id, value, levels))

    async def predict_batch(
        self, session_id: str, values: Sequence[float], *, levels: Sequence[float] | None = None
    ) -> BatchPrediction:
        """Feed several values to one session in order; one forecast after each."""
        steps = self._policy.steps
        return await self._run(operations.predict_batch(steps, session_id, values, levels))

    async def predict_many(
        self, items: Sequence[tuple[str, float]], *, levels: Sequence[float] | None = None
    ) -> list[Prediction | ServiceRefused]:
        """Feed ``(session_id, value)`` items of any sessions in one request, in order (items of
        one session in their order); per item, its answer or, when only that item was refused,
        the error (not raised: the other items were applied)."""
        return await self._run(operations.predict_many(self._policy.steps, items, levels))

    def stream(self) -> ForecastStream:
        """A ``/stream`` WebSocket (``async with client.stream() as stream:``): values of any
        sessions sent ahead of their answers, answers in order, the steps kept as by this
        client (it shares them), a failed socket opened again (``forecast_client.stream``)."""
        policy = self._policy

        async def read_step(session_id: str) -> int:
            return await self._run(operations.current_step(policy.steps, session_id))

        return ForecastStream(
            stream_url(policy.base_url),
            policy.headers,
            policy.steps,
            read_step,
            attempts=policy.attempts,
            pause_before=policy.pause_before,
            timeout_s=self._timeout_s,
            model=policy.model,
        )

    async def forecast(
        self, session_id: str, horizon: int, *, levels: Sequence[float] | None = None
    ) -> Forecast:
        """``horizon`` values ahead, each forecast fed back; the session is unchanged."""
        return await self._run(operations.forecast(session_id, horizon, levels))

    async def reset(self, session_id: str) -> Reset:
        """Start a session again from a fresh state."""
        return await self._run(operations.reset(self._policy.steps, session_id))

    async def session(self, session_id: str) -> SessionInfo:
        """A session's step, times, model version and skill."""
        return await self._run(operations.session(self._policy.steps, session_id))

    async def delete(self, session_id: str) -> Deleted:
        """Delete a session; deleting one that is not there is fine."""
        return await self._run(operations.delete(self._policy.steps, session_id))

    async def history(self, session_id: str) -> History:
        """A session's history window: values, the forecast served for each, intervals."""
        return await self._run(operations.history(session_id))

    async def models(self) -> Models:
        """The served models and their versions."""
        return await self._run(operations.models())

    async def aclose(self) -> None:
        """Close the connections."""
        await self._http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def _run(self, operation: Operation[T]) -> T:
        try:
            request = next(operation)
            while True:
                try:
                    answer = await self._send(request)
                except ForecastError as error:
                    request = operation.throw(error)
                else:
                    request = operation.send(answer)
        except StopIteration as done:
            result: T = done.value
            return result

    async def _send(self, request: Request) -> Any:
        policy = self._policy
        request = policy.for_model(request)
        for attempt in range(1, policy.attempts + 1):
            if attempt > 1:
                await anyio.sleep(policy.pause_before(attempt))
            try:
                response = await self._http.request(request.method, request.path, json=request.body)
                return policy.read(response)
            except httpx.TransportError as error:
                if attempt == policy.attempts:
                    raise policy.unreachable(error) from error
            except ServiceUnavailable:
                if attempt == policy.attempts:
                    raise
        raise AssertionError("unreachable")  # the loop returns or raises
