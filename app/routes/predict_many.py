"""``POST /predict/many``: values of many sessions in one request, applied by the store at once."""

# No ``from __future__ import annotations`` here: FastAPI reads the body type of this route,
# built from the settings when the app is built, from its annotation at definition time.

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, TypeAlias

from fastapi import APIRouter, Request
from fastapi.routing import APIRoute

from app.auth import caller_namespace, session_key
from app.error_handlers import service_error_body
from app.errors import ServiceError, StepConflict
from app.responses import JsonBytesResponse, JsonLineResponse
from app.routes.forecasting import prediction_answer, settle
from app.schemas import (
    ErrorAnswer,
    ErrorResponse,
    PredictManyItem,
    PredictManyRequest,
    PredictManyResponse,
    PredictResponse,
    RequestBodies,
)
from app.services import Services, ServicesHolder
from app.session_rules import FeedOutcome, SessionRecord, feed_items

# Above this many items, the LSTM steps run in a worker thread: about 4 µs an item (README,
# "Benchmarks"), so a request of this size holds the event loop well under a millisecond.
INLINE_ITEMS = 128
# The request's status when some item was refused: each result says which and why.
SOME_ITEMS_REFUSED = 207

Answer: TypeAlias = PredictResponse | ErrorAnswer


def _group(namespace: str, items: Sequence[PredictManyItem]) -> dict[str, list[int]]:
    """Item positions by session store key, in request order."""
    groups: dict[str, list[int]] = {}
    for index, item in enumerate(items):
        key = session_key(namespace, item.session_id)
        positions = groups.get(key)
        if positions is None:
            groups[key] = [index]
        else:
            positions.append(index)
    return groups


async def predict_many(
    services: Services,
    namespace: str,
    items: Sequence[PredictManyItem],
    levels: Sequence[float] | None,
) -> list[Answer]:
    """Each item's answer, in order; items of one session applied as one feed, in order."""
    forecaster = services.model.require()
    policy = services.intervals
    now = services.clock()
    groups = _group(namespace, items)
    work = []
    for key, positions in groups.items():
        if len(positions) == 1:  # the common case: no lists to build
            item = items[positions[0]]
            values: Sequence[float] = (item.value,)
            steps: Sequence[int | None] = (item.step,)
        else:
            values = [items[index].value for index in positions]
            steps = [items[index].step for index in positions]

        def compute(
            record: SessionRecord | None,
            values: Sequence[float] = values,
            steps: Sequence[int | None] = steps,
        ) -> tuple[SessionRecord | None, tuple[FeedOutcome, int]]:
            return feed_items(record, forecaster, policy, values, steps, now)

        work.append((key, compute))
    outcomes = await services.store.apply_many(work, offload=len(items) > INLINE_ITEMS)
    answers: list[Any] = [None] * len(items)
    adapted = policy.layout.levels
    for positions, result in zip(groups.values(), outcomes, strict=True):
        if isinstance(result, ServiceError):
            _refuse(items, positions, answers, result)
            continue
        outcome, applied = result
        if applied == 1:  # the common case: the whole outcome is this item's
            index = positions[0]
            item = items[index]
            flags = settle(services, (item.value,), outcome)
            answers[index] = prediction_answer(
                services, item.session_id, outcome, 0, outcome.offsets, flags[0], levels
            )
        else:
            values = [items[index].value for index in positions[:applied]]
            flags = settle(services, values, outcome)
            for position in range(applied):
                index = positions[position]
                offsets = outcome.offsets[position * adapted : (position + 1) * adapted]
                answers[index] = prediction_answer(
                    services, items[index].session_id, outcome, position, offsets,
                    flags[position], levels,
                )  # fmt: skip
        if applied < len(positions):
            stopped = positions[applied]
            sent = items[stopped].step
            assert sent is not None  # a feed stops only at an item that sent a step
            answers[stopped] = service_error_body(StepConflict(sent, outcome.step))
            _behind(positions[applied + 1 :], answers, outcome.step)
    return answers


def _refuse(
    items: Sequence[PredictManyItem], positions: list[int], answers: list[Any], error: ServiceError
) -> None:
    """A session's items when its feed was refused: the first gets the refusal; after a step
    conflict, the others say they were not applied and where the session is."""
    answers[positions[0]] = service_error_body(error)
    if isinstance(error, StepConflict):
        _behind(positions[1:], answers, error.details["expected_step"])
    else:
        for index in positions[1:]:
            answers[index] = answers[positions[0]]


def _behind(positions: Sequence[int], answers: list[Any], session_step: int) -> None:
    for index in positions:
        answers[index] = service_error_body(StepConflict.behind_refused(session_step))


def predict_many_router(
    holder: ServicesHolder, bodies: RequestBodies, route_class: type[APIRoute]
) -> APIRouter:
    """``POST /predict/many``, bound to the app's services and its item limit."""
    router = APIRouter(
        default_response_class=JsonLineResponse,
        route_class=route_class,
        tags=["forecasting"],
        responses={status: {"model": ErrorResponse} for status in (400, 401, 413, 422, 503)},
    )
    if TYPE_CHECKING:
        PredictManyBody: TypeAlias = PredictManyRequest
    else:
        PredictManyBody = bodies.predict_many

    @router.post(
        "/predict/many",
        response_model=PredictManyResponse,
        responses={
            SOME_ITEMS_REFUSED: {
                "model": PredictManyResponse,
                "description": "some items were refused: their results are errors",
            }
        },
    )
    async def predict_many_route(body: PredictManyBody, request: Request) -> JsonBytesResponse:
        """Feed values of many sessions in one request; one result per item, in order.

        200 when every item was applied (or replayed), 207 when some item was refused (its
        result is the error, in the one shape); the other items are applied all the same.
        """
        answers = await predict_many(
            holder.services, caller_namespace(request.scope), body.items, body.levels
        )
        refused = any("error" in answer for answer in answers)
        response: PredictManyResponse = {"results": answers}
        return JsonBytesResponse(response, status_code=SOME_ITEMS_REFUSED if refused else 200)

    return router
