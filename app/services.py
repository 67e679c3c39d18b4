"""What the routes work with: the served models, the session store, metrics and the clock.

The app's routes are bound, when the app is built, to one :class:`ServicesHolder`; its lifespan
fills it once the models are loaded and checked and the store is open (or tests hand it services
they built). A request reads one attribute, not a per-request dependency resolution, and takes
its model from the registry once, at its start.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from app.errors import ModelNotReady
from app.metrics import ServiceMetrics
from app.model_registry import ModelRegistry, ModelSlot, ServedModel
from app.settings import Settings
from app.stores.base import FeedsInPlace, SessionStore

__all__ = ["ModelSlot", "Services", "ServicesHolder"]


@dataclass(frozen=True)
class Services:
    """Everything a route may need, built once per app run."""

    settings: Settings
    models: ModelRegistry
    store: SessionStore
    metrics: ServiceMetrics
    clock: Callable[[], float]
    # The store, when it can step many sessions in place (/predict/many's fast path).
    in_place: FeedsInPlace | None = field(init=False)

    def __post_init__(self) -> None:
        in_place = self.store if isinstance(self.store, FeedsInPlace) else None
        object.__setattr__(self, "in_place", in_place)

    def model(self, name: str | None = None) -> ServedModel:
        """The model ``name`` (None: the default) as it is now: take it once per request."""
        return self.models.get(name)


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
