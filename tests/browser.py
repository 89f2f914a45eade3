"""Headless Chromium driven by selenium, for the web view's tests. Debian's `chromium` and
`chromium-driver` are used (never a downloaded browser); the set-up installs them when root."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from selenium import webdriver
from selenium.webdriver.chrome.service import Service

from tests.apt import commands

PACKAGES = {"chromium": "chromium", "chromedriver": "chromium-driver"}
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--no-first-run", "--disable-sync", "--window-size=1400,900")


@contextlib.contextmanager
def chromium(profile: Path) -> Iterator[webdriver.Chrome]:
    """A fresh headless browser with its own profile directory; quit after."""
    paths = commands(PACKAGES, "the web view's tests")
    options = webdriver.ChromeOptions()
    options.binary_location = paths["chromium"]
    for flag in (*FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(executable_path=paths["chromedriver"]))
    try:
        yield driver
    finally:
        driver.quit()
