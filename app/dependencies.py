"""Small dependencies through which routes get what the lifespan built."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Header, Request

from app.auth import ApiKeys
from app.errors import ModelNotReady
from app.forecaster import Forecaster
from app.metrics import ServiceMetrics
from app.settings import Settings
from app.stores.base import SessionStore


def get_forecaster(request: Request) -> Forecaster:
    slot = request.state.model
    if slot.forecaster is None:
        raise ModelNotReady(f"no model is being served: {slot.problem}")
    forecaster: Forecaster = slot.forecaster
    return forecaster


def get_store(request: Request) -> SessionStore:
    store: SessionStore = request.state.store
    return store


def get_app_settings(request: Request) -> Settings:
    settings: Settings = request.state.settings
    return settings


def get_metrics(request: Request) -> ServiceMetrics:
    metrics: ServiceMetrics = request.state.metrics
    return metrics


def get_tenant(
    request: Request, authorization: Annotated[str | None, Header(include_in_schema=False)] = None
) -> str:
    """The caller's session namespace (401 when keys are configured and none valid is sent)."""
    api_keys: ApiKeys = request.state.api_keys
    return api_keys.tenant_for(authorization)


ForecasterDep = Annotated[Forecaster, Depends(get_forecaster)]
StoreDep = Annotated[SessionStore, Depends(get_store)]
SettingsDep = Annotated[Settings, Depends(get_app_settings)]
MetricsDep = Annotated[ServiceMetrics, Depends(get_metrics)]
TenantDep = Annotated[str, Depends(get_tenant)]
