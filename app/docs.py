"""The docs page with Swagger UI served from the package, so /docs works without internet.

FastAPI's own /docs loads Swagger UI from a CDN: a blank page wherever the service cannot reach
it. The files in ``app/docs_assets/`` are swagger-ui-dist's (npm), vendored with its licence; its
version is the one in ``docs_assets/README.md``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

from fastapi.openapi.docs import get_swagger_ui_html
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, Response
from starlette.routing import BaseRoute, Route

DOCS_PATH = "/docs"
ASSETS_DIR = Path(__file__).resolve().parent / "docs_assets"
# Served name -> media type: what the page loads, and nothing else of the folder.
_ASSETS = {
    "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
    "swagger-ui.css": "text/css; charset=utf-8",
    "favicon-32x32.png": "image/png",
}


def asset_path(name: str) -> str:
    """The URL path of one of the page's files."""
    return f"{DOCS_PATH}/assets/{name}"


def docs_paths() -> set[str]:
    """Every path the docs page uses (they hold no session data: open without an API key)."""
    return {DOCS_PATH, *(asset_path(name) for name in _ASSETS)}


def docs_routes(title: str, openapi_url: str) -> list[BaseRoute]:
    """The /docs page and its files, as routes for the app's route table."""

    async def page(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "").rstrip("/")
        return get_swagger_ui_html(
            openapi_url=root + openapi_url,
            title=f"{title} - Swagger UI",
            swagger_js_url=root + asset_path("swagger-ui-bundle.js"),
            swagger_css_url=root + asset_path("swagger-ui.css"),
            swagger_favicon_url=root + asset_path("favicon-32x32.png"),
        )

    routes: list[BaseRoute] = [Route(DOCS_PATH, page, methods=["GET"], include_in_schema=False)]
    for name, media_type in _ASSETS.items():
        routes.append(
            Route(asset_path(name), _file_endpoint(name, media_type), include_in_schema=False)
        )
    return routes


def _file_endpoint(name: str, media_type: str) -> Callable[[Request], Awaitable[Response]]:
    path = ASSETS_DIR / name

    async def serve(_request: Request) -> Response:
        return FileResponse(path, media_type=media_type)

    return serve
