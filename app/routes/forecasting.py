"""Feeding values to sessions and forecasting from them."""

from __future__ import annotations

import time
from collections.abc import Sequence

import anyio.to_thread
from fastapi import APIRouter, Request

from app.dependencies import Caller, caller_of
from app.errors import NothingToForecastFrom, SessionNotFound, TooManyValues
from app.responses import ModelResponse
from app.schemas import (
    ErrorResponse,
    ForecastRequest,
    ForecastResponse,
    PredictBatchRequest,
    PredictBatchResponse,
    PredictRequest,
    PredictResponse,
)
from app.sessions import FeedOutcome, SessionRecord, feed

# Above this many LSTM steps in one request, compute in a worker thread: ~2 µs a step inline
# is fine, milliseconds on the event loop are not.
INLINE_STEPS = 64

router = APIRouter(
    tags=["forecasting"],
    responses={status: {"model": ErrorResponse} for status in (400, 401, 409, 413, 422, 503)},
)


async def _feed(
    caller: Caller, session_id: str, values: Sequence[float], step: int | None
) -> FeedOutcome:
    forecaster = caller.forecaster

    def compute(record: SessionRecord | None) -> tuple[SessionRecord | None, FeedOutcome]:
        return feed(record, forecaster, values, step, time.time())

    outcome = await caller.services.store.apply(
        caller.session_key(session_id), compute, offload=len(values) > INLINE_STEPS
    )
    if not outcome.replayed:
        caller.services.metrics.count_steps(len(values))
    return outcome


@router.post("/predict", response_model=PredictResponse)
async def predict(body: PredictRequest, request: Request) -> ModelResponse:
    """Feed one value to a session; get the forecast of its next value."""
    caller = caller_of(request)
    outcome = await _feed(caller, body.session_id, (body.value,), body.step)
    return ModelResponse(
        PredictResponse(
            session_id=body.session_id,
            prediction=outcome.predictions[-1],
            step=outcome.step,
            model_version=outcome.model_version,
            replayed=outcome.replayed,
            previous_model_version=outcome.previous_model_version,
        )
    )


@router.post("/predict/batch")
async def predict_batch(body: PredictBatchRequest, request: Request) -> PredictBatchResponse:
    """Feed several values in order (warm-up, backfill); one forecast per value."""
    caller = caller_of(request)
    limit = caller.services.settings.max_values_per_request
    if len(body.values) > limit:
        raise TooManyValues(
            f"values has {len(body.values)} items; send at most {limit} per request",
            max_values_per_request=limit,
        )
    outcome = await _feed(caller, body.session_id, body.values, body.step)
    return PredictBatchResponse(
        session_id=body.session_id,
        predictions=outcome.predictions,
        step=outcome.step,
        model_version=outcome.model_version,
        replayed=outcome.replayed,
        previous_model_version=outcome.previous_model_version,
    )


@router.post("/forecast", responses={404: {"model": ErrorResponse}})
async def forecast(body: ForecastRequest, request: Request) -> ForecastResponse:
    """Forecast ``horizon`` values ahead from a session's state, without changing it."""
    caller = caller_of(request)
    limit = caller.services.settings.max_horizon
    if body.horizon > limit:
        raise TooManyValues(
            f"horizon {body.horizon} is above the limit of {limit}", max_horizon=limit
        )
    forecaster = caller.forecaster
    record = await caller.services.store.get(caller.session_key(body.session_id))
    if record is None:
        raise SessionNotFound(f"no session {body.session_id!r}; feed it a value with /predict")
    if record.step == 0 or not record.last_predictions:
        raise NothingToForecastFrom(
            f"session {body.session_id!r} has consumed no values since its reset; feed one first"
        )
    if record.model_version != forecaster.version:
        raise NothingToForecastFrom(
            f"session {body.session_id!r} holds state of model {record.model_version}, not the "
            f"served {forecaster.version}; feed it a value to restart it under the served model"
        )
    last = record.last_predictions[-1]
    if body.horizon > INLINE_STEPS:
        forecasts = await anyio.to_thread.run_sync(
            forecaster.forecast_ahead, record.state, last, body.horizon
        )
    else:
        forecasts = forecaster.forecast_ahead(record.state, last, body.horizon)
    return ForecastResponse(
        session_id=body.session_id,
        step=record.step,
        forecasts=forecasts,
        model_version=forecaster.version,
    )
