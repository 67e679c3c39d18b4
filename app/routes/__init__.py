"""Routers by concern, collected in one place."""

from fastapi import APIRouter
from starlette.routing import BaseRoute

from app.routes.forecasting import forecasting_router
from app.routes.operations import operations_router
from app.routes.sessions import sessions_router
from app.schemas import RequestBodies
from app.services import ServicesHolder


def all_routers(holder: ServicesHolder, bodies: RequestBodies) -> list[APIRouter]:
    """Every router, bound to the app's services and request limits."""
    return [
        forecasting_router(holder, bodies),
        sessions_router(holder),
        operations_router(holder),
    ]


def all_routes(holder: ServicesHolder, bodies: RequestBodies) -> list[BaseRoute]:
    """Every route of every router, for the app's own route table.

    The routers' tags and error responses are already in each route. ``include_router`` would
    keep each router as a nested branch that FastAPI re-enters on every request; the app serves
    the same routes from one flat table instead (README, "Benchmarks", has the cost).
    """
    return [route for router in all_routers(holder, bodies) for route in router.routes]
