"""What the routes work with: the served model, the session store, metrics and the clock.

The app's routes are bound, when the app is built, to one :class:`ServicesHolder`; its lifespan
fills it once the model is loaded and checked and the store is open (or tests hand it services
they built). A request reads one attribute, not a per-request dependency resolution.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from app.errors import ModelNotReady
from app.forecaster import Forecaster
from app.intervals import IntervalPolicy
from app.metrics import ServiceMetrics
from app.settings import Settings
from app.stores.base import SessionStore


@dataclass(frozen=True)
class ModelSlot:
    """The loaded, checked model, or why there is none (then the service is not ready)."""

    forecaster: Forecaster | None
    problem: str | None = None

    def require(self) -> Forecaster:
        """The served model; ModelNotReady (503) while none is loaded."""
        if self.forecaster is None:
            raise ModelNotReady(self.problem)
        return self.forecaster


@dataclass(frozen=True)
class Services:
    """Everything a route may need, built once per app run."""

    settings: Settings
    model: ModelSlot
    store: SessionStore
    metrics: ServiceMetrics
    clock: Callable[[], float]
    intervals: IntervalPolicy

    @classmethod
    def build(
        cls,
        settings: Settings,
        model: ModelSlot,
        store: SessionStore,
        metrics: ServiceMetrics,
        clock: Callable[[], float],
    ) -> Services:
        """The services of one app run; the interval policy follows the model and settings."""
        calibration = model.forecaster.calibration if model.forecaster is not None else None
        intervals = IntervalPolicy.for_settings(calibration, settings)
        return cls(settings, model, store, metrics, clock, intervals)


class ServicesHolder:
    """The services of a running app; empty before the lifespan starts and after it ends."""

    def __init__(self) -> None:
        self._services: Services | None = None

    @property
    def services(self) -> Services:
        services = self._services
        if services is None:
            raise ModelNotReady("the service is starting or stopping")
        return services

    def fill(self, services: Services | None) -> None:
        self._services = services
