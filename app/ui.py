"""The pages under ``/ui/``: the caller's sessions, one session live, and the served models.

The pages are static files in ``app/ui_assets/`` that call the public API from the browser, so
they show exactly what API clients get (and need the same key: the page asks for it once and
keeps it for the tab, in ``sessionStorage``). The chart is uPlot, vendored with its licence
(``ui_assets/vendor/README.md``); nothing loads from anywhere but the service.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route

UI_PATH = "/ui"
ASSETS_DIR = Path(__file__).resolve().parent / "ui_assets"
# Part of the vendored files' URL: a new version is a new URL, so they can be cached for a year.
VENDOR_VERSION = "uplot-1.6.32"

# Page path -> file.
_PAGES = {
    f"{UI_PATH}/": "sessions.html",
    f"{UI_PATH}/session": "session.html",
    f"{UI_PATH}/model": "model.html",
}
# The pages' own scripts and styles: revalidated on every load, so a new release shows at once.
_OWN_ASSETS = {
    "ui.js": "text/javascript; charset=utf-8",
    "sessions.js": "text/javascript; charset=utf-8",
    "session.js": "text/javascript; charset=utf-8",
    "model.js": "text/javascript; charset=utf-8",
    "ui.css": "text/css; charset=utf-8",
}
_VENDOR_ASSETS = {
    "uPlot.iife.min.js": "text/javascript; charset=utf-8",
    "uPlot.min.css": "text/css; charset=utf-8",
}
_REVALIDATE = "no-cache"
_A_YEAR = "public, max-age=31536000, immutable"
# Everything from the service itself; images also from blob: URLs (the evaluation plot is
# fetched with the key and shown from a blob). Inline styles: uPlot sets them on its elements.
_PAGE_POLICY = (
    "default-src 'self'; img-src 'self' blob: data:; style-src 'self' 'unsafe-inline'; "
    "object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
)


def own_asset_path(name: str) -> str:
    return f"{UI_PATH}/assets/{name}"


def vendor_asset_path(name: str) -> str:
    return f"{UI_PATH}/vendor/{VENDOR_VERSION}/{name}"


def ui_paths() -> set[str]:
    """Every path the pages are served from (no session data there: open without a key)."""
    return {
        "/",
        *_PAGES,
        *(own_asset_path(name) for name in _OWN_ASSETS),
        *(vendor_asset_path(name) for name in _VENDOR_ASSETS),
    }


def ui_routes() -> list[BaseRoute]:
    """The pages, their files, and ``/`` sending browsers to the sessions page."""

    async def home(request: Request) -> Response:
        root = request.scope.get("root_path", "").rstrip("/")
        return RedirectResponse(f"{root}{UI_PATH}/", status_code=307)

    routes: list[BaseRoute] = [Route("/", home, methods=["GET"], include_in_schema=False)]
    for path, name in _PAGES.items():
        routes.append(Route(path, _page(name), methods=["GET"], include_in_schema=False))
    for name, media_type in _OWN_ASSETS.items():
        endpoint = _file(ASSETS_DIR / name, media_type, _REVALIDATE)
        routes.append(Route(own_asset_path(name), endpoint, include_in_schema=False))
    for name, media_type in _VENDOR_ASSETS.items():
        endpoint = _file(ASSETS_DIR / "vendor" / name, media_type, _A_YEAR)
        routes.append(Route(vendor_asset_path(name), endpoint, include_in_schema=False))
    return routes


def _page(name: str) -> Callable[[Request], Awaitable[Response]]:
    serve = _file(ASSETS_DIR / name, "text/html; charset=utf-8", _REVALIDATE)

    async def page(request: Request) -> Response:
        response = await serve(request)
        response.headers["Content-Security-Policy"] = _PAGE_POLICY
        return response

    return page


def _file(
    path: Path, media_type: str, cache_control: str
) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        headers = {"Cache-Control": cache_control}
        response = FileResponse(
            path, media_type=media_type, headers=headers, stat_result=path.stat()
        )
        etag = response.headers["etag"]
        if etag in request.headers.get("if-none-match", ""):
            return Response(status_code=304, headers={**headers, "ETag": etag})
        return response

    return endpoint
