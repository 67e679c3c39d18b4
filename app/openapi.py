"""The OpenAPI document: FastAPI's own, plus the bearer scheme when API keys are configured."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

BEARER_SCHEME = "bearerAuth"


def declare_bearer_security(app: FastAPI) -> None:
    """Declare ``Authorization: Bearer <key>`` for every operation (FastAPI's documented way to
    extend the generated document); operations marked ``security: []`` stay open. The docs page
    then shows an Authorize button that sends the key."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title,
                version=app.version,
                summary=app.summary,
                description=app.description,
                routes=app.routes,
            )
            schema.setdefault("components", {})["securitySchemes"] = {
                BEARER_SCHEME: {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "one of the keys in FORECAST_API_KEYS",
                }
            }
            schema["security"] = [{BEARER_SCHEME: []}]
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
