"""Feeding values to sessions and forecasting from them."""

# No ``from __future__ import annotations`` here: FastAPI reads the body types of these routes,
# built from the settings when the app is built, from their annotations at definition time.

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, TypeAlias

import anyio.to_thread
from fastapi import APIRouter, Request
from fastapi.routing import APIRoute

from app.auth import store_key
from app.errors import NoValuesYet, SessionNotFound, SessionUnderOtherModel
from app.rate_limit import charge_more
from app.responses import JsonBytesResponse, JsonLineResponse
from app.schemas import (
    ErrorResponse,
    ForecastRequest,
    ForecastResponse,
    PredictBatchRequest,
    PredictBatchResponse,
    PredictRequest,
    PredictResponse,
    RequestBodies,
)
from app.services import Services, ServicesHolder
from app.session_rules import FeedOutcome, SessionRecord, feed

# Above this many LSTM steps in one request, compute in a worker thread: a few steps inline are
# cheaper than a thread hop, but milliseconds on the event loop would stall every other request.
INLINE_STEPS = 64


async def _feed(
    services: Services, key: str, values: Sequence[float], step: int | None
) -> tuple[FeedOutcome, list[list[str]]]:
    """Apply values to a session; the outcome and each value's flags (counted in metrics)."""
    forecaster = services.model.require()
    policy = services.intervals
    now = services.clock()

    def compute(record: SessionRecord | None) -> tuple[SessionRecord | None, FeedOutcome]:
        return feed(record, forecaster, policy, values, step, now)

    outcome = await services.store.apply(key, compute, offload=len(values) > INLINE_STEPS)
    if len(values) == 1:  # /predict: no loop
        flags = [policy.flags(values[0], outcome.misses[0])]
    else:
        flags = [
            policy.flags(value, missed)
            for value, missed in zip(values, outcome.misses, strict=True)
        ]
    if not outcome.replayed:
        _observe(services, outcome, flags)
    return outcome, flags


def _observe(services: Services, outcome: FeedOutcome, flags: list[list[str]]) -> None:
    metrics, policy = services.metrics, services.intervals
    metrics.count_steps(len(outcome.predictions))
    if policy.calibration is None:
        return
    span, labels = policy.training_span, policy.level_labels
    for error, missed, value_flags in zip(outcome.errors, outcome.misses, flags, strict=True):
        if not math.isnan(error):  # NaN: no forecast before this value
            metrics.forecasts.observe(error / span, missed, labels, value_flags)


def _per_value(offsets: Sequence[float], adapted: int, index: int) -> Sequence[float]:
    return offsets[index * adapted : (index + 1) * adapted]


def forecasting_router(
    holder: ServicesHolder, bodies: RequestBodies, route_class: type[APIRoute]
) -> APIRouter:
    """The forecasting routes, bound to the app's services and its request limits."""
    router = APIRouter(
        default_response_class=JsonLineResponse,
        route_class=route_class,
        tags=["forecasting"],
        responses={
            status: {"model": ErrorResponse} for status in (400, 401, 409, 413, 422, 429, 503)
        },
    )
    # The request models that carry this app's limits; type checkers see their base classes.
    if TYPE_CHECKING:
        PredictBatchBody: TypeAlias = PredictBatchRequest
        ForecastBody: TypeAlias = ForecastRequest
    else:
        PredictBatchBody = bodies.predict_batch
        ForecastBody = bodies.forecast

    @router.post("/predict", response_model=PredictResponse)
    async def predict(body: PredictRequest, request: Request) -> JsonBytesResponse:
        """Feed one value to a session; get the forecast of its next value."""
        services = holder.services
        key = store_key(request.scope, body.session_id)
        outcome, flags = await _feed(services, key, (body.value,), body.step)
        prediction = outcome.predictions[-1]
        answer: PredictResponse = {
            "session_id": body.session_id,
            "prediction": prediction,
            "step": outcome.step,
            "model_version": outcome.model_version,
            "replayed": outcome.replayed,
            "previous_model_version": outcome.previous_model_version,
            "intervals": services.intervals.intervals(prediction, outcome.offsets, body.levels),
            "flags": flags[0],
        }
        return JsonBytesResponse(answer)

    @router.post("/predict/batch")
    async def predict_batch(body: PredictBatchBody, request: Request) -> PredictBatchResponse:
        """Feed several values in order (warm-up, backfill); one forecast per value."""
        # Each value is an LSTM step: the key's rate limit counts values, not requests.
        charge_more(request.scope, len(body.values) - 1)
        services = holder.services
        key = store_key(request.scope, body.session_id)
        outcome, flags = await _feed(services, key, body.values, body.step)
        policy = services.intervals
        adapted = policy.layout.levels
        intervals = [
            policy.intervals(prediction, _per_value(outcome.offsets, adapted, index), body.levels)
            for index, prediction in enumerate(outcome.predictions)
        ]
        return PredictBatchResponse(
            session_id=body.session_id,
            predictions=outcome.predictions,
            step=outcome.step,
            model_version=outcome.model_version,
            replayed=outcome.replayed,
            previous_model_version=outcome.previous_model_version,
            intervals=intervals,
            flags=flags,
        )

    @router.post("/forecast", responses={404: {"model": ErrorResponse}})
    async def forecast(body: ForecastBody, request: Request) -> ForecastResponse:
        """Forecast ``horizon`` values ahead from a session's state, without changing it."""
        services = holder.services
        forecaster = services.model.require()
        record = await services.store.get(store_key(request.scope, body.session_id))
        if record is None:
            raise SessionNotFound(body.session_id)
        if record.step == 0 or not record.last_predictions:
            raise NoValuesYet(body.session_id)
        if record.model_version != forecaster.version:
            raise SessionUnderOtherModel(body.session_id, record.model_version, forecaster.version)
        last = record.last_predictions[-1]
        if body.horizon > INLINE_STEPS:
            forecasts = await anyio.to_thread.run_sync(
                forecaster.forecast_ahead, record.state, last, body.horizon
            )
        else:
            forecasts = forecaster.forecast_ahead(record.state, last, body.horizon)
        policy = services.intervals
        offsets = policy.current_offsets(record.tracking)
        return ForecastResponse(
            session_id=body.session_id,
            step=record.step,
            forecasts=forecasts,
            model_version=forecaster.version,
            intervals=policy.forecast_intervals(forecasts, offsets, body.levels),
        )

    return router
