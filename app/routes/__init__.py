"""Routers by concern, collected in one place."""

from fastapi import APIRouter

from app.routes.forecasting import router as forecasting_router
from app.routes.operations import router as operations_router
from app.routes.sessions import router as sessions_router


def all_routers() -> list[APIRouter]:
    return [forecasting_router, sessions_router, operations_router]
