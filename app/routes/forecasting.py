"""Feeding values to sessions and forecasting from them."""

from __future__ import annotations

import time
from collections.abc import Sequence

import anyio.to_thread
from fastapi import APIRouter, Depends

from app.auth import session_key
from app.dependencies import (
    ForecasterDep,
    MetricsDep,
    SettingsDep,
    StoreDep,
    TenantDep,
    get_tenant,
)
from app.errors import ServiceError, SessionNotFound
from app.forecaster import Forecaster
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
from app.stores.base import SessionStore

# Above this many LSTM steps in one request, compute in a worker thread: ~12 µs a step inline
# is fine, milliseconds on the event loop are not.
INLINE_STEPS = 64

_ERRORS: dict[int | str, dict[str, object]] = {
    status: {"model": ErrorResponse} for status in (401, 409, 413, 422, 503)
}

router = APIRouter(tags=["forecasting"], dependencies=[Depends(get_tenant)], responses=_ERRORS)


class TooManyValues(ServiceError):
    status_code = 422
    code = "too_many_values"


async def _feed(
    store: SessionStore,
    forecaster: Forecaster,
    key: str,
    values: Sequence[float],
    step: int | None,
) -> FeedOutcome:
    def compute(record: SessionRecord | None) -> tuple[SessionRecord | None, FeedOutcome]:
        return feed(record, forecaster, values, step, time.time())

    return await store.apply(key, compute, offload=len(values) > INLINE_STEPS)


@router.post("/predict")
async def predict(
    body: PredictRequest,
    forecaster: ForecasterDep,
    store: StoreDep,
    tenant: TenantDep,
    metrics: MetricsDep,
) -> PredictResponse:
    """Feed one value to a session; get the forecast of its next value."""
    key = session_key(tenant, body.session_id)
    outcome = await _feed(store, forecaster, key, (body.value,), body.step)
    if not outcome.replayed:
        metrics.steps.inc()
    return PredictResponse(
        session_id=body.session_id,
        prediction=outcome.predictions[-1],
        step=outcome.step,
        model_version=outcome.model_version,
        replayed=outcome.replayed,
        previous_model_version=outcome.previous_model_version,
    )


@router.post("/predict/batch")
async def predict_batch(
    body: PredictBatchRequest,
    forecaster: ForecasterDep,
    store: StoreDep,
    tenant: TenantDep,
    metrics: MetricsDep,
    settings: SettingsDep,
) -> PredictBatchResponse:
    """Feed several values in order (warm-up, backfill); one forecast per value."""
    if len(body.values) > settings.max_values_per_request:
        raise TooManyValues(
            f"values has {len(body.values)} items; send at most "
            f"{settings.max_values_per_request} per request",
            max_values_per_request=settings.max_values_per_request,
        )
    key = session_key(tenant, body.session_id)
    outcome = await _feed(store, forecaster, key, body.values, body.step)
    if not outcome.replayed:
        metrics.steps.inc(len(body.values))
    return PredictBatchResponse(
        session_id=body.session_id,
        predictions=outcome.predictions,
        step=outcome.step,
        model_version=outcome.model_version,
        replayed=outcome.replayed,
        previous_model_version=outcome.previous_model_version,
    )


class NothingToForecastFrom(ServiceError):
    status_code = 409
    code = "no_values_yet"


@router.post("/forecast", responses={404: {"model": ErrorResponse}})
async def forecast(
    body: ForecastRequest,
    forecaster: ForecasterDep,
    store: StoreDep,
    tenant: TenantDep,
    settings: SettingsDep,
) -> ForecastResponse:
    """Forecast ``horizon`` values ahead from a session's state, without changing it."""
    if body.horizon > settings.max_horizon:
        raise TooManyValues(
            f"horizon {body.horizon} is above the limit of {settings.max_horizon}",
            max_horizon=settings.max_horizon,
        )
    record = await store.get(session_key(tenant, body.session_id))
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
