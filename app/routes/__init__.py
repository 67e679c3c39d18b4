"""Routers by concern, collected in one place."""

from fastapi import APIRouter
from starlette.routing import BaseRoute

from app.routes.forecasting import router as forecasting_router
from app.routes.operations import router as operations_router
from app.routes.sessions import router as sessions_router


def all_routers() -> list[APIRouter]:
    return [forecasting_router, sessions_router, operations_router]


def all_routes() -> list[BaseRoute]:
    """Every route of every router, for the app's own route table.

    The routers' tags and error responses are already in each route. ``include_router`` would
    keep each router as a nested branch that FastAPI re-enters on every request (~10 µs each,
    more than the LSTM step); the app serves the same routes from one flat table instead.
    """
    return [route for router in all_routers() for route in router.routes]
