"""Headless Chromium for the tests that drive the web pages (Debian's chromium and chromium-driver: `make test`
installs them). Where they are missing the test is skipped, except under CI, where it fails."""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path

import pytest


def chromedriver() -> str:
    found = shutil.which("chromedriver") or next(
        (p for p in ("/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver") if os.path.exists(p)), None
    )
    if found is None:
        message = "no chromedriver: apt-get install chromium chromium-driver (make test does)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return found


@contextlib.contextmanager
def chrome(width: int = 1400, height: int = 1000):
    """A headless Chromium driven by selenium; at the end, no errors in its console (a page script that failed,
    a resource refused by the page's content security policy)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", f"--window-size={width},{height}"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(chromedriver()), options=options)
    try:
        yield driver
        errors = [entry["message"] for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]
        assert not errors, errors
    finally:
        driver.quit()


def wait_for(driver, condition, timeout: float = 30):
    """Wait until condition(driver) is truthy; return it."""
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout, poll_frequency=0.05).until(condition)


def screenshot(driver, name: str) -> None:
    """Keep a screenshot of the page in $TUNEFORGE_SCREENSHOTS, when set (the README's come from there)."""
    if folder := os.environ.get("TUNEFORGE_SCREENSHOTS"):
        Path(folder).mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(Path(folder) / name))
