"""The web view at /shoal/ui in headless Chromium against a real cluster: the right nodes and tasks,
live updates when a service scales, and the slider replaying an earlier moment. Takes a screenshot;
with SHOAL_UPDATE_SCREENSHOT=1 it replaces docs/ui.png (so a test run never dirties the checkout)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from selenium import webdriver
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from tests.browser import chromium
from tests.cluster import LocalCluster, local_cluster
from tests.e2e.cli import api_get, eventually

pytestmark = pytest.mark.integration

DOCS_SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "ui.png"
WEB = {"Name": "web", "TaskTemplate": {"ContainerSpec": {"Image": "busybox"}}, "Mode": {"Replicated": {"Replicas": 2}}}
PINNED = {"Name": "pinned", "Mode": {"Replicated": {"Replicas": 1}},
          "TaskTemplate": {"ContainerSpec": {"Image": "busybox"},
                           "Placement": {"Constraints": ["node.labels.zone==eu"]}}}


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[LocalCluster]:
    async with local_cluster(tmp_path / "cluster", agents=2, executor="sim") as c:
        yield c


async def _create(cluster: LocalCluster, spec: dict[str, Any]) -> None:
    async with aiohttp.ClientSession() as session, \
            session.post(f"{cluster.api_url}/v1.41/services/create", json=spec) as resp:
        assert resp.status == 201, await resp.text()


async def _scale(cluster: LocalCluster, name: str, replicas: int) -> None:
    service = await api_get(cluster.api_url, f"/services/{name}")
    spec = {**service["Spec"], "Mode": {"Replicated": {"Replicas": replicas}}}
    url = f"{cluster.api_url}/v1.41/services/{service['ID']}/update?version={service['Version']['Index']}"
    async with aiohttp.ClientSession() as session, session.post(url, json=spec) as resp:
        assert resp.status == 200, await resp.text()


async def _nodes(cluster: LocalCluster) -> list[str]:
    found: list[str] = []

    async def two() -> bool:
        found[:] = sorted(n["Description"]["Hostname"] for n in await api_get(cluster.api_url, "/nodes"))
        return len(found) == 2

    await eventually(two, 60, "two nodes")
    return found


async def _running(cluster: LocalCluster, n: int) -> None:
    async def check() -> bool:
        tasks: list[dict[str, Any]] = await api_get(cluster.api_url, "/tasks")
        return len([t for t in tasks if t["Status"]["State"] == "running"]) == n

    await eventually(check, 60, f"{n} running tasks")


async def until(driver: webdriver.Chrome, condition: Callable[[webdriver.Chrome], bool], what: str) -> None:
    """Wait (off the event loop: selenium blocks) until the page shows something."""
    try:
        await asyncio.to_thread(WebDriverWait(driver, 30, poll_frequency=0.2).until, condition)
    except TimeoutException:
        raise AssertionError(f"the page did not show {what}; it shows:\n"
                             f"{driver.find_element(By.TAG_NAME, 'body').text}") from None


def texts(driver: webdriver.Chrome, selector: str) -> list[str]:
    """Read in one script: the page redraws as the log moves, so element handles go stale."""
    found: list[str] = driver.execute_script(
        "return [...document.querySelectorAll(arguments[0])].map(e => e.textContent)", selector)
    return found


def boxes(driver: webdriver.Chrome) -> list[str]:
    return texts(driver, '.node .task[data-state="running"]')


def service_count(driver: webdriver.Chrome, name: str) -> str:
    return "".join(texts(driver, f'#services tr[data-service="{name}"] td.count'))


def body(driver: webdriver.Chrome, attribute: str) -> str:
    value: str = driver.execute_script("return document.body.dataset[arguments[0]] || ''", attribute)
    return value


async def test_web_view_shows_the_cluster_live_and_replays_the_past(cluster: LocalCluster, tmp_path: Path) -> None:
    nodes = await _nodes(cluster)
    await _create(cluster, WEB)
    await _create(cluster, PINNED)
    await _running(cluster, 2)
    with chromium(tmp_path / "profile") as driver:
        await asyncio.to_thread(driver.get, f"{cluster.api_url}/shoal/ui")
        await until(driver, lambda d: len(boxes(d)) == 2 and service_count(d, "web") == "2/2",
                    "web's two running tasks")
        assert texts(driver, ".node h3") == nodes
        assert sorted(boxes(driver)) == ["web.1", "web.2"]
        assert service_count(driver, "pinned") == "0/1"
        pending = "".join(texts(driver, "#pending li"))
        assert "pinned.1" in pending and "scheduling constraints not satisfied" in pending
        before = int(body(driver, "seq"))

        await _scale(cluster, "web", 4)
        await until(driver, lambda d: len(boxes(d)) == 4 and service_count(d, "web") == "4/4",
                    "web scaled to four running tasks, without a reload")
        assert sorted(boxes(driver)) == ["web.1", "web.2", "web.3", "web.4"]
        shot = DOCS_SCREENSHOT if os.environ.get("SHOAL_UPDATE_SCREENSHOT") == "1" else tmp_path / "ui.png"
        assert await asyncio.to_thread(driver.save_screenshot, str(shot)), "the browser took no screenshot"

        slider = driver.find_element(By.ID, "slider")
        driver.execute_script("arguments[0].value = arguments[1];"
                              "arguments[0].dispatchEvent(new Event('input'));", slider, before)
        await until(driver, lambda d: body(d, "seq") == str(before), f"the cluster as of entry {before}")
        assert body(driver, "mode") == "past"
        assert sorted(boxes(driver)) == ["web.1", "web.2"] and service_count(driver, "web") == "2/2"

        driver.find_element(By.ID, "live").click()
        await until(driver, lambda d: len(boxes(d)) == 4, "the live cluster again")
