"""Headless Chromium driven by selenium, for the web view's tests. Debian's `chromium` and
`chromium-driver` are used (never a downloaded browser); the set-up installs them when root."""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from selenium import webdriver
from selenium.webdriver.chrome.service import Service

from tests.apt import apt_install

PACKAGES = {"chromium": "chromium", "chromedriver": "chromium-driver"}
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--no-first-run", "--disable-sync", "--window-size=1400,900")


def _binaries() -> dict[str, str]:
    missing = [pkg for name, pkg in PACKAGES.items() if shutil.which(name) is None]
    if missing and os.geteuid() == 0:
        apt_install(*missing, recommends=False)
    found = {name: shutil.which(name) for name in PACKAGES}
    absent = [PACKAGES[name] for name, path in found.items() if path is None]
    if absent:
        raise AssertionError(f"the web view test needs Debian's {' and '.join(absent)}: "
                             f"`apt-get install {' '.join(absent)}` (the test installs them when run as root)")
    return {name: path for name, path in found.items() if path is not None}


@contextlib.contextmanager
def chromium(profile: Path) -> Iterator[webdriver.Chrome]:
    """A fresh headless browser with its own profile directory; quit after."""
    paths = _binaries()
    options = webdriver.ChromeOptions()
    options.binary_location = paths["chromium"]
    for flag in (*FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(executable_path=paths["chromedriver"]))
    try:
        yield driver
    finally:
        driver.quit()
