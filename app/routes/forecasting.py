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
from app.model_registry import ServedModel
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
from app.session_history import window_values
from app.session_rules import (
    INLINE_STEPS,
    FeedOutcome,
    ReplayOffEventLoop,
    SessionRecord,
    feed,
    replay_window,
)


async def _feed(
    services: Services, served: ServedModel, key: str, values: Sequence[float], step: int | None
) -> tuple[FeedOutcome, list[list[str]]]:
    """Apply values to a session of the model ``served`` (taken once, at the request's start);
    the outcome and each value's flags (counted in metrics)."""
    forecaster = served.require()
    policy = served.intervals
    now = services.clock()
    history = services.settings.session_history
    store = services.store
    offload = len(values) > INLINE_STEPS
    # Whether compute runs on the event loop: a long replay after a model change must not.
    inline = not offload and not store.computes_off_event_loop

    def compute(record: SessionRecord | None) -> tuple[SessionRecord | None, FeedOutcome]:
        return feed(record, forecaster, policy, values, step, now, history=history, inline=inline)

    try:
        outcome = await store.apply(key, compute, offload=offload)
    except ReplayOffEventLoop:
        inline = False
        outcome = await store.apply(key, compute, offload=True)
    if len(values) == 1:  # /predict: no loop
        flags = [policy.flags(values[0], outcome.misses[0])]
    else:
        flags = [
            policy.flags(value, missed)
            for value, missed in zip(values, outcome.misses, strict=True)
        ]
    if not outcome.replayed:
        _observe(services, served, outcome, flags)
    return outcome, flags


def _observe(
    services: Services, served: ServedModel, outcome: FeedOutcome, flags: list[list[str]]
) -> None:
    metrics, policy = services.metrics, served.intervals
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
            status: {"model": ErrorResponse} for status in (400, 401, 404, 409, 413, 422, 429, 503)
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
        served = services.models.get(body.model)
        key = store_key(request.scope, body.session_id, body.model)
        outcome, flags = await _feed(services, served, key, (body.value,), body.step)
        prediction = outcome.predictions[-1]
        answer: PredictResponse = {
            "session_id": body.session_id,
            "model": served.name,
            "prediction": prediction,
            "step": outcome.step,
            "model_version": outcome.model_version,
            "replayed": outcome.replayed,
            "previous_model_version": outcome.previous_model_version,
            "warmup_values": outcome.warmup_values,
            "intervals": served.intervals.intervals(prediction, outcome.offsets, body.levels),
            "flags": flags[0],
        }
        return JsonBytesResponse(answer)

    @router.post("/predict/batch")
    async def predict_batch(body: PredictBatchBody, request: Request) -> PredictBatchResponse:
        """Feed several values in order (warm-up, backfill); one forecast per value."""
        # Each value is an LSTM step: the key's rate limit counts values, not requests.
        charge_more(request.scope, len(body.values) - 1)
        services = holder.services
        served = services.models.get(body.model)
        key = store_key(request.scope, body.session_id, body.model)
        outcome, flags = await _feed(services, served, key, body.values, body.step)
        policy = served.intervals
        adapted = policy.layout.levels
        intervals = [
            policy.intervals(prediction, _per_value(outcome.offsets, adapted, index), body.levels)
            for index, prediction in enumerate(outcome.predictions)
        ]
        return PredictBatchResponse(
            session_id=body.session_id,
            model=served.name,
            predictions=outcome.predictions,
            step=outcome.step,
            model_version=outcome.model_version,
            replayed=outcome.replayed,
            previous_model_version=outcome.previous_model_version,
            warmup_values=outcome.warmup_values,
            intervals=intervals,
            flags=flags,
        )

    @router.post("/forecast")
    async def forecast(body: ForecastBody, request: Request) -> ForecastResponse:
        """Forecast ``horizon`` values ahead from a session's state, without changing it."""
        services = holder.services
        served = services.models.get(body.model)
        forecaster = served.require()
        policy = served.intervals
        key = store_key(request.scope, body.session_id, body.model)
        record = await services.store.get(key)
        if record is None:
            raise SessionNotFound(body.session_id)
        if record.step == 0 or not record.last_predictions:
            raise NoValuesYet(body.session_id)
        state, tracking, warmup = record.state, record.tracking, None
        last = record.last_predictions[-1]
        if record.model_version != forecaster.version:
            # Under another version of its model: forecast from the history window replayed
            # through this one (the session itself changes with its next value).
            window = window_values(record.history)[-services.settings.session_history :]
            if not services.settings.session_history or len(window) == 0:
                raise SessionUnderOtherModel(
                    body.session_id, record.model_version, forecaster.version
                )
            if len(window) > INLINE_STEPS:
                state, forecasts, tracking = await anyio.to_thread.run_sync(
                    replay_window, forecaster, policy, window
                )
            else:
                state, forecasts, tracking = replay_window(forecaster, policy, window)
            last, warmup = forecasts[-1], len(window)
        if body.horizon > INLINE_STEPS:
            forecasts = await anyio.to_thread.run_sync(
                forecaster.forecast_ahead, state, last, body.horizon
            )
        else:
            forecasts = forecaster.forecast_ahead(state, last, body.horizon)
        offsets = policy.current_offsets(tracking)
        return ForecastResponse(
            session_id=body.session_id,
            model=served.name,
            step=record.step,
            forecasts=forecasts,
            model_version=forecaster.version,
            warmup_values=warmup,
            intervals=policy.forecast_intervals(forecasts, offsets, body.levels),
        )

    return router
