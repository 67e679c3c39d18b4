"""Each client operation defined once, without I/O: a generator that yields the requests it needs
and receives their answers (or has the error thrown in). ``client.py`` drives them over httpx,
synchronously or not, so both clients follow the same step protocol.
"""

from __future__ import annotations

from collections.abc import Generator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar, cast
from urllib.parse import quote

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
from forecast_client.errors import ServiceRefused, SessionNotFound, StepConflict, item_refusal

T = TypeVar("T")


@dataclass(frozen=True)
class Request:
    """One HTTP request; every request the client sends is safe to send again (see below)."""

    method: str
    path: str
    body: dict[str, Any] | None = None


# An operation: yields requests, receives each one's JSON answer, returns the result.
Operation = Generator[Request, Any, T]


class StepBook:
    """The number of values each session has consumed, as far as this client knows.

    A feed carries it as ``step``, which is what makes a resend safe: the service applies a
    request whose step is the session's count, and answers a resend of the last one (same step,
    same values) with the same answer, ``replayed``, without applying it again.
    """

    def __init__(self) -> None:
        self._steps: dict[str, int] = {}

    def get(self, session_id: str) -> int | None:
        return self._steps.get(session_id)

    def set(self, session_id: str, step: int) -> None:
        self._steps[session_id] = step

    def forget(self, session_id: str) -> None:
        self._steps.pop(session_id, None)


def _session_path(session_id: str) -> str:
    return f"/sessions/{quote(session_id, safe='')}"


def session(book: StepBook, session_id: str) -> Operation[SessionInfo]:
    """A session's state; its step becomes the one this client sends next."""
    info = cast(SessionInfo, (yield Request("GET", _session_path(session_id))))
    book.set(session_id, info["step"])
    return info


def current_step(book: StepBook, session_id: str) -> Operation[int]:
    """The session's step as this client knows it; at its first use by this client, as the
    service says (0 for a new session), so that the client continues it where it is."""
    step = book.get(session_id)
    if step is None:
        try:
            step = (yield from session(book, session_id))["step"]
        except SessionNotFound:
            step = 0
    return step


def _feed(
    book: StepBook,
    path: str,
    session_id: str,
    payload: dict[str, Any],
    levels: Sequence[float] | None,
) -> Operation[dict[str, Any]]:
    step = yield from current_step(book, session_id)
    body: dict[str, Any] = {"session_id": session_id, **payload, "step": step}
    if levels is not None:
        body["levels"] = list(levels)
    try:
        answer = cast(dict[str, Any], (yield Request("POST", path, body)))
    except StepConflict:
        # Someone else fed or reset the session: what this client knew is stale.
        book.forget(session_id)
        raise
    book.set(session_id, answer["step"])
    return answer


def predict(
    book: StepBook, session_id: str, value: float, levels: Sequence[float] | None
) -> Operation[Prediction]:
    """Feed one value; the forecast of the next."""
    answer = yield from _feed(book, "/predict", session_id, {"value": value}, levels)
    return cast(Prediction, answer)


def predict_batch(
    book: StepBook, session_id: str, values: Sequence[float], levels: Sequence[float] | None
) -> Operation[BatchPrediction]:
    """Feed several values in order; one forecast after each."""
    payload = {"values": list(values)}
    answer = yield from _feed(book, "/predict/batch", session_id, payload, levels)
    return cast(BatchPrediction, answer)


def _many_body(
    book: StepBook, items: Sequence[tuple[str, float]], levels: Sequence[float] | None
) -> dict[str, Any]:
    """/predict/many's body: each item with its session's next step (a session's items in
    order: step, step + 1, ...); 0 for a session this client has not fed yet."""
    steps: dict[str, int] = {}
    body_items = []
    for session_id, value in items:
        step = steps.get(session_id)
        if step is None:
            step = book.get(session_id) or 0
        steps[session_id] = step + 1
        body_items.append({"session_id": session_id, "value": value, "step": step})
    body: dict[str, Any] = {"items": body_items}
    if levels is not None:
        body["levels"] = list(levels)
    return body


def predict_many(
    book: StepBook, items: Sequence[tuple[str, float]], levels: Sequence[float] | None
) -> Operation[list[Prediction | ServiceRefused]]:
    """Feed values of many sessions in one request, in order; per item, its answer or its
    refusal. A session this client has not fed yet is sent as new (step 0): if it was not, the
    service says its step (409) and its items go again once, in a second request, with it."""
    results: list[Prediction | ServiceRefused | None] = [None] * len(items)
    unknown = {session_id for session_id, _ in items if book.get(session_id) is None}
    pending = list(range(len(items)))
    for attempt in range(2):
        batch = [items[index] for index in pending]
        answer = cast(
            dict[str, Any],
            (yield Request("POST", "/predict/many", _many_body(book, batch, levels))),
        )
        again: list[int] = []
        for index, result in zip(pending, answer["results"], strict=True):
            session_id = items[index][0]
            if "error" not in result:
                book.set(session_id, result["step"])
                results[index] = cast(Prediction, result)
                continue
            error = item_refusal(result)
            if isinstance(error, StepConflict) and attempt == 0 and session_id in unknown:
                book.set(session_id, error.expected_step)
                again.append(index)
                continue
            if isinstance(error, StepConflict):
                book.forget(session_id)  # someone else fed or reset it: what we knew is stale
            results[index] = error
        if not again:
            break
        pending = again
    return [result for result in results if result is not None]


def forecast(session_id: str, horizon: int, levels: Sequence[float] | None) -> Operation[Forecast]:
    """``horizon`` values ahead; the session is not changed."""
    body: dict[str, Any] = {"session_id": session_id, "horizon": horizon}
    if levels is not None:
        body["levels"] = list(levels)
    return cast(Forecast, (yield Request("POST", "/forecast", body)))


def reset(book: StepBook, session_id: str) -> Operation[Reset]:
    """Back to a fresh state (step 0); an unknown session is fine."""
    answer = cast(Reset, (yield Request("POST", "/reset", {"session_id": session_id})))
    book.set(session_id, answer["step"])
    return answer


def delete(book: StepBook, session_id: str) -> Operation[Deleted]:
    """Delete a session (safe to repeat)."""
    answer = cast(Deleted, (yield Request("DELETE", _session_path(session_id))))
    book.forget(session_id)
    return answer


def history(session_id: str) -> Operation[History]:
    """A session's history window (values, the forecast served for each, their intervals)."""
    return cast(History, (yield Request("GET", f"{_session_path(session_id)}/history")))


def models() -> Operation[Models]:
    """The served models by name, with their versions."""
    return cast(Models, (yield Request("GET", "/models")))
