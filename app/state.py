"""What the lifespan builds once and every request sees as ``request.state``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypedDict

from app.auth import ApiKeys
from app.forecaster import Forecaster
from app.metrics import ServiceMetrics
from app.settings import Settings
from app.stores.base import SessionStore


@dataclass
class ModelSlot:
    """The loaded, checked model, or why there is none (then the service is not ready)."""

    forecaster: Forecaster | None
    problem: str | None


@dataclass(frozen=True)
class Services:
    """Everything a route may need, built once per app by the lifespan."""

    settings: Settings
    model: ModelSlot
    store: SessionStore
    metrics: ServiceMetrics
    api_keys: ApiKeys


class AppState(TypedDict):
    services: Services
