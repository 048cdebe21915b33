"""``inboxlab dash`` in headless Chromium: every page renders plotly charts and no exception.

Needs Debian's ``chromium`` and ``chromium-driver`` (``bash scripts/install-browser``); when
they are missing this test FAILS with that instruction. Screenshots go to test-artifacts/.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.unit.dashdata import REPO, build_home

PAGES = ("status", "warmup", "latency", "deferrals", "reputation", "dead-letters", "sim",
         "sim-vs-live", "policy")
CHROMEDRIVER = "/usr/bin/chromedriver"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    home = build_home(tmp_path_factory.mktemp("browser") / "home")
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "inboxlab", "dash", "--home", str(home), "--port", str(port),
         "--no-browser"], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        start_new_session=True)
    try:
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            assert proc.poll() is None, proc.stdout.read().decode() if proc.stdout else ""
            time.sleep(0.2)
        else:
            pytest.fail("inboxlab dash did not listen within 40 s")
        yield f"http://127.0.0.1:{port}"
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.fixture(scope="module")
def driver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    if not (shutil.which("chromium") and Path(CHROMEDRIVER).exists()):
        pytest.fail("chromium / chromedriver missing: run `bash scripts/install-browser`")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    for arg in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--no-first-run", "--window-size=1400,1000",
                f"--user-data-dir={tmp_path_factory.mktemp('chrome')}"):
        opts.add_argument(arg)
    opts.binary_location = shutil.which("chromium") or "chromium"
    drv = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    try:
        yield drv
    finally:
        drv.quit()


@pytest.mark.parametrize("page", PAGES)
def test_page_renders_charts(server: str, driver: object, page: str) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    drv = driver  # selenium WebDriver
    drv.get(f"{server}/?page={page}")  # type: ignore[attr-defined]
    WebDriverWait(drv, 30).until(
        lambda b: b.find_elements(By.CSS_SELECTOR, ".js-plotly-plot")
        or b.find_elements(By.CSS_SELECTOR, '[data-testid="stException"]'))
    time.sleep(0.5)
    artifacts = REPO / "test-artifacts"
    artifacts.mkdir(exist_ok=True)
    drv.save_screenshot(str(artifacts / f"dash-{page}.png"))  # type: ignore[attr-defined]
    errors = drv.find_elements(By.CSS_SELECTOR, '[data-testid="stException"]')  # type: ignore[attr-defined]
    assert not errors, errors[0].text
    body = drv.find_element(By.TAG_NAME, "body").text  # type: ignore[attr-defined]
    assert "Traceback" not in body
    assert drv.find_elements(By.CSS_SELECTOR, ".js-plotly-plot")  # type: ignore[attr-defined]
