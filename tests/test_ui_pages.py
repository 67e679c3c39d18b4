"""The pages under /ui/, in real headless Chromium against a real server."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from selenium.webdriver import Chrome as WebDriver
from selenium.webdriver.common.by import By

from tests.browser import console_errors, headless_chromium, wait_until
from tests.helpers import Server, uvicorn_server

KEY = "ui-test-key"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _serve(models_dir: Path, log: Path, keys: str = "") -> Iterator[Server]:
    env = {
        "FORECAST_MODEL_DIR": str(models_dir),
        "FORECAST_STORE": "memory",
        "FORECAST_API_KEYS": keys,
    }
    with uvicorn_server(env, log, api_key=keys or None) as server:
        yield server


@pytest.fixture(scope="module")
def open_server(
    tutorial_models_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    yield from _serve(tutorial_models_dir, tmp_path_factory.mktemp("ui-open") / "server.log")


@pytest.fixture(scope="module")
def keyed_server(
    tutorial_models_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    log = tmp_path_factory.mktemp("ui-keyed") / "server.log"
    yield from _serve(tutorial_models_dir, log, keys=KEY)


@pytest.fixture
def browser() -> Iterator[WebDriver]:
    with headless_chromium() as driver:
        yield driver


def _feed(server: Server, session_id: str, values: list[float], key: str | None = None) -> None:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    with httpx.Client(base_url=server.base_url, headers=headers, timeout=10) as client:
        for value in values:
            response = client.post("/predict", json={"session_id": session_id, "value": value})
            assert response.status_code == 200, response.text


def _kept_values(server: Server, session_id: str, key: str | None = None) -> int:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    response = httpx.get(f"{server.base_url}/sessions/{session_id}/history", headers=headers)
    assert response.status_code == 200, response.text
    return len(response.json()["values"])


def _points(driver: WebDriver) -> int:
    return int(driver.find_element(By.ID, "chart").get_attribute("data-points") or 0)


def _table_values(driver: WebDriver) -> list[str]:
    rows = driver.find_elements(By.CSS_SELECTOR, "#table tbody tr:not(.ahead)")
    return [row.find_elements(By.TAG_NAME, "td")[1].text for row in rows]


def test_session_page_gains_values_fed_through_the_api_without_a_reload(
    open_server: Server, browser: WebDriver, tmp_path: Path
) -> None:
    _feed(open_server, "ui-live", [0.1, 0.2, 0.3])
    browser.get(f"{open_server.base_url}/ui/session?id=ui-live")
    wait_until(browser, lambda d: _points(d) == _kept_values(open_server, "ui-live"), "3 values")
    browser.execute_script("window.notReloaded = true")

    _feed(open_server, "ui-live", [0.45, 0.55])

    kept = _kept_values(open_server, "ui-live")
    wait_until(browser, lambda d: _points(d) == kept, "the two new values on the chart")
    wait_until(browser, lambda d: _table_values(d)[-2:] == ["0.45", "0.55"], "them in the table")
    assert browser.execute_script("return window.notReloaded === true")
    screenshot = tmp_path / "session-page.png"
    assert browser.save_screenshot(str(screenshot))
    assert screenshot.read_bytes().startswith(PNG_SIGNATURE)
    assert console_errors(browser) == []


def test_session_page_shows_interval_bands_and_forecasts_ahead(
    open_server: Server, browser: WebDriver
) -> None:
    _feed(open_server, "ui-bands", [0.1, 0.2, 0.3, 0.4])
    browser.get(f"{open_server.base_url}/ui/session?id=ui-bands")
    ahead = wait_until(
        browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#table tbody tr.ahead"), "ahead rows"
    )
    headings = [th.text for th in browser.find_elements(By.CSS_SELECTOR, "#table thead th")]
    assert headings == ["step", "value", "forecast", "80 % interval", "95 % interval"]
    assert len(ahead) == 10
    assert console_errors(browser) == []


def test_model_page_shows_the_version_report_and_plot(
    open_server: Server, browser: WebDriver
) -> None:
    version = httpx.get(f"{open_server.base_url}/model").json()["version"]
    browser.get(f"{open_server.base_url}/ui/model")
    heading = wait_until(
        browser, lambda d: d.find_elements(By.CSS_SELECTOR, "section h2"), "a model"
    )
    assert heading[0].text == f"default: version {version}"
    image = wait_until(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "img.plot"), "the plot")
    wait_until(
        browser,
        lambda d: d.execute_script("return arguments[0].naturalWidth", image[0]),
        "it drawn",
    )
    assert console_errors(browser) == []


def test_sessions_page_lists_the_callers_sessions(open_server: Server, browser: WebDriver) -> None:
    _feed(open_server, "ui-listed", [0.5])
    browser.get(f"{open_server.base_url}/ui/")
    links = wait_until(
        browser,
        lambda d: [a.text for a in d.find_elements(By.CSS_SELECTOR, "#sessions tbody a")],
        "session links",
    )
    assert "ui-listed" in links
    assert console_errors(browser) == []


def test_page_asks_for_a_key_once_and_keeps_it_for_the_tab(
    keyed_server: Server, browser: WebDriver
) -> None:
    _feed(keyed_server, "ui-keyed", [0.1, 0.2], key=KEY)
    browser.get(f"{keyed_server.base_url}/ui/session?id=ui-keyed")
    form = wait_until(
        browser,
        lambda d: (
            d.find_element(By.ID, "key-form").is_displayed() and d.find_element(By.ID, "key-form")
        ),
        "the key prompt",
    )
    form.find_element(By.ID, "key-input").send_keys(KEY)
    form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    wait_until(browser, lambda d: _points(d) > 0, "the session once the key was given")

    browser.get(f"{keyed_server.base_url}/ui/model")  # another page, same tab: no prompt
    wait_until(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "section h2"), "a model")
    assert not browser.find_element(By.ID, "key-form").is_displayed()
    assert browser.execute_script("return document.cookie") == ""
    assert console_errors(browser) == []


def test_a_refused_key_is_said(keyed_server: Server, browser: WebDriver) -> None:
    browser.get(f"{keyed_server.base_url}/ui/")
    form = wait_until(
        browser,
        lambda d: (
            d.find_element(By.ID, "key-form").is_displayed() and d.find_element(By.ID, "key-form")
        ),
        "the key prompt",
    )
    form.find_element(By.ID, "key-input").send_keys("not-the-key")
    form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    message = wait_until(
        browser,
        lambda d: (
            "refused" in d.find_element(By.ID, "key-message").text
            and d.find_element(By.ID, "key-message").text
        ),
        "the refusal",
    )
    assert "The key was refused" in message
    # The refused call is the only error: Chromium logs the 401 itself.
    assert all("401" in error for error in console_errors(browser))


def test_home_sends_browsers_to_the_pages(open_server: Server) -> None:
    response = httpx.get(f"{open_server.base_url}/")
    assert response.status_code == 307
    assert response.headers["location"] == "/ui/"


def test_vendored_chart_library_is_cached_for_a_year(open_server: Server) -> None:
    page = httpx.get(f"{open_server.base_url}/ui/session").text
    assert "vendor/uplot-1.6.32/uPlot.iife.min.js" in page
    response = httpx.get(f"{open_server.base_url}/ui/vendor/uplot-1.6.32/uPlot.iife.min.js")
    assert response.status_code == 200
    assert response.headers["cache-control"] == "public, max-age=31536000, immutable"


def test_pages_load_nothing_from_elsewhere(open_server: Server) -> None:
    response = httpx.get(f"{open_server.base_url}/ui/")
    assert response.headers["content-security-policy"].startswith("default-src 'self'")
    assert "http" not in response.text.replace("http-equiv", "")


def test_own_assets_are_revalidated(open_server: Server) -> None:
    first = httpx.get(f"{open_server.base_url}/ui/assets/ui.js")
    assert first.headers["cache-control"] == "no-cache"
    again = httpx.get(
        f"{open_server.base_url}/ui/assets/ui.js", headers={"If-None-Match": first.headers["etag"]}
    )
    assert again.status_code == 304
