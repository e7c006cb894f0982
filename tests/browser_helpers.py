"""What the real-browser tests share: Chromium, a served app.py, and signing in as a user."""
from __future__ import annotations

import re
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pytest

from processes import child_env

playwright_api = pytest.importorskip("playwright.sync_api")

CHROMIUM = Path("/usr/bin/chromium")
BROWSER_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--no-first-run"]
USERS = {"alice": "wonderland", "bob": "builder"}
NEEDS_CHROMIUM = pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium (apt-get install -y chromium)")


@contextmanager
def served_app(command: list[str], repo_root: Path, log_path: Path, url: str) -> Iterator[str]:
    """``command`` (an app.py command line) running until the block ends; yields ``url`` once it answers."""
    log = log_path.open("w")
    process = subprocess.Popen(command, cwd=repo_root, stdout=log, stderr=subprocess.STDOUT,
                               env=child_env(GRADIO_ANALYTICS_ENABLED="False", HF_HUB_OFFLINE="1"))
    try:
        wait_for_server(url, process, log_path)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()


def wait_for_server(url: str, process: subprocess.Popen, log: Path, timeout: float = 240.0) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"app.py exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except OSError:
            time.sleep(1)
    raise RuntimeError(f"app.py did not answer within {timeout:.0f} s:\n{log.read_text()[-3000:]}")


@pytest.fixture(scope="module")
def browser():
    with playwright_api.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=str(CHROMIUM), args=BROWSER_ARGS)
        yield chromium
        chromium.close()


def sign_in(browser, url: str, user: str, height: int = 860, timeout_ms: int = 60_000):
    """A new browser context signed in as ``user`` (one of USERS), on the chat page."""
    page = browser.new_context(viewport={"width": 1280, "height": height}).new_page()
    page.set_default_timeout(timeout_ms)
    page.goto(url)
    page.locator("input[type=text], input:not([type])").first.fill(user)
    page.locator("input[type=password]").fill(USERS[user])
    page.get_by_role("button", name=re.compile("log ?in", re.I)).click()
    page.wait_for_selector("#message textarea")
    return page
