"""The dashboard page in real headless Chromium (Debian ``chromium`` + ``chromium-driver``),
offline: every host but loopback is unresolvable, so a CDN dependency would break the page.

Saves a screenshot to ``tests/out/dashboard.png``.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from tests.support.procs import OUT, Proc

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
MASTER = "sk-test-master"  # the session gateway's master key (tests/conftest.py)
SCREENSHOT = OUT / "dashboard.png"
CHARTS = ("rps", "latency", "overhead", "rates", "variants", "providers", "tokens", "cost")


def _require(path: str, package: str) -> str:
    found = path if Path(path).exists() else shutil.which(Path(path).name)
    if not found:
        pytest.fail(
            f"{path} is missing: install the Debian packages 'chromium' and 'chromium-driver' "
            f"(apt-get install -y chromium chromium-driver; .ci/run installs them) [{package}]"
        )
    return found


@pytest.fixture(scope="module")
def driver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[webdriver.Chrome]:
    opts = webdriver.ChromeOptions()
    opts.binary_location = _require(CHROMIUM, "chromium")
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1440,2600",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
        f"--user-data-dir={tmp_path_factory.mktemp('chromium')}",
    ):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    d = webdriver.Chrome(service=Service(_require(CHROMEDRIVER, "chromium-driver")), options=opts)
    d.set_page_load_timeout(60)
    yield d
    d.quit()


def wait(d: webdriver.Chrome, script: str, what: str, timeout: float = 60) -> Any:
    """Poll a JS expression until it is truthy."""
    return WebDriverWait(d, timeout, poll_frequency=0.25).until(
        lambda drv: drv.execute_script("return " + script), message=f"waiting for {what}"
    )


def visible(d: webdriver.Chrome, element_id: str) -> bool:
    return bool(d.find_element(By.ID, element_id).is_displayed())


def send_traffic(gw: Proc) -> None:
    auth = {"Authorization": f"Bearer {MASTER}"}
    url = gw.url + "/v1/chat/completions"
    # 500 is transient: retried, then the next provider; it opens no circuit (unlike 503)
    fail_first = {"match": {"provider": "together"}, "status": 500, "message": "flaky"}
    bodies: list[dict[str, Any]] = [
        {"model": "auto", "messages": [{"role": "user", "content": f"dashboard {i}"}]}
        for i in range(6)
    ]
    bodies.append(
        {
            "model": "auto",
            "stream": True,
            "stream_options": {"include_usage": True},
            "messages": [{"role": "user", "content": "stream for the dashboard"}],
        }
    )
    bodies.append(
        {
            "model": "glm-4.7",
            "messages": [
                {"role": "user", "content": "<<sim:" + orjson.dumps(fail_first).decode() + ">>"}
            ],
        }
    )
    with httpx.Client(headers=auth, timeout=30) as c:
        for body in bodies:
            pinned = {"X-GLM-Providers": "together,deepinfra"} if body["model"] != "auto" else {}
            c.post(url, json=body, headers=pinned).raise_for_status()
        assert c.post(url, content=b"{broken").status_code == 400


def test_dashboard_fills_with_live_charts_offline(driver: webdriver.Chrome, gateway: Proc) -> None:
    driver.get(gateway.url + "/dashboard")
    wait(driver, "document.readyState === 'complete'", "the page to load")
    assert visible(driver, "login") and not visible(driver, "board")

    driver.find_element(By.ID, "key").send_keys(MASTER)
    driver.find_element(By.CSS_SELECTOR, "#login-form button[type=submit]").click()
    wait(driver, "document.body.dataset.updated", "the first data")
    assert visible(driver, "board") and not visible(driver, "login")
    assert driver.execute_script("return sessionStorage.length") == 1

    send_traffic(gateway)
    for name in CHARTS:
        wait(driver, f"Number(document.getElementById('c-{name}').dataset.max) > 0", name)
    painted = driver.execute_script(
        """const c = document.getElementById('c-rps');
        const px = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        let n = 0; for (let i = 3; i < px.length; i += 4) if (px[i]) n++; return n;"""
    )
    assert painted > 1000
    assert driver.find_element(By.ID, "k-total").text not in ("", "–", "0")
    rows = driver.find_elements(By.CSS_SELECTOR, "#t-circuits tbody tr")
    assert len(rows) > 10
    variants = driver.find_elements(By.CSS_SELECTOR, "#t-variant tbody tr")
    assert variants and variants[0].text.strip()
    legend = driver.find_element(By.ID, "l-variants").text
    assert legend.strip()

    OUT.mkdir(parents=True, exist_ok=True)
    assert driver.save_screenshot(str(SCREENSHOT))
    assert SCREENSHOT.stat().st_size > 20_000

    origins = driver.execute_script(
        "return performance.getEntriesByType('resource').map(e => new URL(e.name).origin)"
    )
    assert set(origins) <= {gateway.url}, origins
    errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    assert not errors, errors


def test_a_wrong_key_brings_the_login_back(driver: webdriver.Chrome, gateway: Proc) -> None:
    driver.get(gateway.url + "/dashboard")
    driver.execute_script("sessionStorage.clear()")
    driver.refresh()
    wait(driver, "document.readyState === 'complete'", "the page to load")
    driver.find_element(By.ID, "key").send_keys("not-the-master-key")
    driver.find_element(By.CSS_SELECTOR, "#login-form button[type=submit]").click()
    wait(driver, "document.getElementById('login-msg').textContent.includes('refused')", "refusal")
    assert visible(driver, "login") and not visible(driver, "board")
    assert driver.execute_script("return sessionStorage.length") == 0
