"""/docs works without internet: the page loads Swagger UI from the service itself."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from app.services import ModelSlot
from app.settings import Settings
from tests.helpers import asgi_client

pytestmark = pytest.mark.anyio


def _settings(models: Path, **overrides: str) -> Settings:
    return Settings.model_validate({"model_dir": models, "store": "memory", **overrides})


async def test_docs_page_loads_nothing_from_another_host(
    tutorial_models_dir: Path, tutorial_model: ModelSlot
) -> None:
    async with asgi_client(_settings(tutorial_models_dir), tutorial_model) as client:
        page = await client.get("/docs")
    assert page.status_code == 200
    assert re.findall(r"(?:src|href)=\"(https?:)?//", page.text) == []
    assert '<script src="/docs/assets/swagger-ui-bundle.js">' in page.text


@pytest.mark.parametrize(
    ("name", "media_type"),
    [
        ("swagger-ui-bundle.js", "text/javascript; charset=utf-8"),
        ("swagger-ui.css", "text/css; charset=utf-8"),
        ("favicon-32x32.png", "image/png"),
    ],
)
async def test_docs_assets_are_served_without_a_key(
    tutorial_models_dir: Path, tutorial_model: ModelSlot, name: str, media_type: str
) -> None:
    settings = _settings(tutorial_models_dir, api_keys="some-key-0123456789")
    async with asgi_client(settings, tutorial_model) as client:
        response = await client.get(f"/docs/assets/{name}")
    assert response.status_code == 200
    assert response.headers["content-type"] == media_type
    assert response.content == (Path("app/docs_assets") / name).read_bytes()


def test_the_vendored_swagger_ui_reads_openapi_3_1() -> None:
    # FastAPI writes OpenAPI 3.1, which Swagger UI renders from version 5 on (4 shows an error).
    bundle = Path("app/docs_assets/swagger-ui-bundle.js").read_text()
    version = re.search(r'PACKAGE_VERSION:"(\d+)\.', bundle)
    assert version is not None and int(version.group(1)) >= 5
