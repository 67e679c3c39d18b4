"""Routers by concern, collected in one place."""

from collections.abc import Callable

from fastapi import APIRouter
from fastapi.routing import APIRoute
from starlette.routing import BaseRoute

from app.audit import Audit
from app.keys import KeyTable
from app.routes.admin import admin_router
from app.routes.forecasting import forecasting_router
from app.routes.operations import operations_router
from app.routes.predict_many import predict_many_router
from app.routes.sessions import sessions_router
from app.routes.stream import stream_route
from app.routes.stream_batch import StreamBatcher
from app.schemas import RequestBodies
from app.services import ServicesHolder


def all_routers(
    holder: ServicesHolder,
    bodies: RequestBodies,
    route_class: type[APIRoute],
    keys: Callable[[], KeyTable],
    audit: Audit,
) -> list[APIRouter]:
    """Every router, bound to the app's services and request limits, its routes built by
    ``route_class`` (app.json_body_route's, or FastAPI's own when its telemetry is wanted)."""
    return [
        forecasting_router(holder, bodies, route_class),
        predict_many_router(holder, bodies, route_class, audit),
        sessions_router(holder, route_class),
        operations_router(holder, route_class),
        admin_router(holder, keys, route_class),
    ]


def all_routes(
    holder: ServicesHolder,
    bodies: RequestBodies,
    route_class: type[APIRoute],
    keys: Callable[[], KeyTable],
    audit: Audit,
    stream_batcher: StreamBatcher,
) -> list[BaseRoute]:
    """Every route of every router, for the app's own route table.

    The routers' tags and error responses are already in each route. ``include_router`` would
    keep each router as a nested branch that FastAPI re-enters on every request; the app serves
    the same routes from one flat table instead (README, "Benchmarks", has the cost).
    """
    routers = all_routers(holder, bodies, route_class, keys, audit)
    routes: list[BaseRoute] = [route for router in routers for route in router.routes]
    return [*routes, stream_route(holder, stream_batcher, audit)]
