"""Real headless Chromium for the page tests (Debian's ``chromium`` and ``chromium-driver``)."""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Callable, Iterator
from typing import Any

from selenium import webdriver
from selenium.common.exceptions import TimeoutException
from selenium.webdriver import Chrome as WebDriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.support.wait import WebDriverWait

# How long a page may take to show what it should: the pages poll every second and must show
# a new value within two; the rest is headroom for a loaded machine.
PAGE_WAIT_S = 10.0


def chromium_paths() -> tuple[str, str] | None:
    """(browser, driver), or None where they are not installed."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if browser is None or driver is None:
        return None
    return browser, driver


@contextlib.contextmanager
def headless_chromium() -> Iterator[WebDriver]:
    """A fresh headless Chromium that keeps its console messages for :func:`console_errors`."""
    paths = chromium_paths()
    if paths is None:
        raise RuntimeError(
            "chromium and chromedriver are needed (apt-get install chromium chromium-driver)"
        )
    browser, driver_path = paths
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                     "--window-size=1200,900", "--disable-gpu"):  # fmt: skip
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def console_errors(driver: WebDriver) -> list[str]:
    """Console errors since the last call (failed loads included: Chromium logs them there)."""
    entries: list[dict[str, Any]] = driver.get_log("browser")
    return [entry["message"] for entry in entries if entry["level"] == "SEVERE"]


def wait_until(driver: WebDriver, condition: Callable[[WebDriver], Any], what: str) -> Any:
    """The condition's first truthy value, polled until PAGE_WAIT_S; says what did not happen."""
    try:
        return WebDriverWait(driver, PAGE_WAIT_S, poll_frequency=0.1).until(condition)
    except TimeoutException:
        raise AssertionError(f"the page did not show {what} within {PAGE_WAIT_S} s") from None
