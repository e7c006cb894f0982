"""The Arena tab in a real browser (Debian's Chromium driven by playwright) against app.py on two tiny models.

Alice asks one prompt, both anonymous sides answer, she votes, the names are revealed and the
leaderboard counts the vote; Bob, signed in separately, sees none of her votes among his own.
Screenshots go to test-artifacts/arena-browser/ (git-ignored).
"""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from arena_helpers import ALPACA, KOALA
from processes import child_env
from test_browser import BROWSER_ARGS, CHROMIUM, free_port, wait_for_server

playwright_api = pytest.importorskip("playwright.sync_api")

USERS = {"alice": "wonderland", "bob": "builder"}

pytestmark = [pytest.mark.slow,  # an app process and a real browser
              pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium (apt-get install -y chromium)")]


@pytest.fixture(scope="module")
def shots(repo_root: Path) -> Path:
    folder = repo_root / "test-artifacts" / "arena-browser"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    return folder


@pytest.fixture(scope="module")
def app_url(arena_models_dir: Path, repo_root: Path, tmp_path_factory):
    root = tmp_path_factory.mktemp("arena-app")
    models = arena_models_dir
    settings = root / "settings.yaml"
    settings.write_text("max_new_tokens: 12\ndo_sample: false\n")
    port = free_port()
    command = [sys.executable, str(repo_root / "app.py"), "--model", ALPACA, "--models-dir", str(models),
               "--user-data-dir", str(root / "user_data"), "--settings", str(settings), "--listen-port", str(port),
               "--cpu"]
    for user, password in USERS.items():
        command += ["--gradio-auth", f"{user}:{password}"]
    log = (root / "app.log").open("w")
    process = subprocess.Popen(command, cwd=repo_root, stdout=log, stderr=subprocess.STDOUT,
                               env=child_env(GRADIO_ANALYTICS_ENABLED="False", HF_HUB_OFFLINE="1"))
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_server(url, process, root / "app.log")
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()


@pytest.fixture(scope="module")
def browser():
    with playwright_api.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=str(CHROMIUM), args=BROWSER_ARGS)
        yield chromium
        chromium.close()


def arena_page(browser, url: str, user: str):
    page = browser.new_context(viewport={"width": 1280, "height": 1000}).new_page()
    page.set_default_timeout(120_000)
    page.goto(url)
    page.locator("input[type=text], input:not([type])").first.fill(user)
    page.locator("input[type=password]").fill(USERS[user])
    page.get_by_role("button", name=re.compile("log ?in", re.I)).click()
    page.wait_for_selector("#message textarea")
    page.get_by_role("tab", name="Arena").click()
    page.wait_for_selector("#arena-prompt textarea")
    return page


# Every text the status line shows, recorded by the page as the DOM changes (the answers stream: A writes, then B).
WATCH_STATUS_JS = """() => {
  const node = document.querySelector('#arena-status');
  window.__arenaStatus = [];
  new MutationObserver(() => {
    const text = node.innerText.trim();
    if (text && text !== window.__arenaStatus[window.__arenaStatus.length - 1]) window.__arenaStatus.push(text);
  }).observe(node, {subtree: true, childList: true, characterData: true});
}"""


def bot_texts(page, side: str) -> list[str]:
    return [t.strip() for t in page.locator(f"#arena-chat-{side} [data-testid=bot]").all_inner_texts()]


def board_text(page) -> str:
    return page.locator("#arena-board").inner_text()


def test_one_battle_one_vote_and_the_leaderboard_counts_it(browser, app_url, shots):
    alice = arena_page(browser, app_url, "alice")
    try:
        assert ALPACA not in board_text(alice) and KOALA not in board_text(alice)
        alice.locator("#arena-prompt textarea").fill("Name a colour.")
        alice.evaluate(WATCH_STATUS_JS)
        alice.locator("#arena-send").click()
        alice.wait_for_function("() => document.querySelector('#arena-status').innerText.includes('Both answered')"
                                " || document.querySelector('#arena-status').innerText.includes('⚠️')")
        status = alice.locator("#arena-status").inner_text()
        assert "Both answered" in status, status
        alice.screenshot(path=str(shots / "01-both-answered.png"))
        seen = alice.evaluate("() => window.__arenaStatus")
        writing = [line for line in seen if "is writing" in line]
        assert writing and writing[0].startswith("Model A") and writing[-1].startswith("Model B"), seen  # A, then B
        assert len(bot_texts(alice, "a")) == 1 and len(bot_texts(alice, "b")) == 1
        for side in ("a", "b"):
            assert [t.strip() for t in alice.locator(f"#arena-chat-{side} [data-testid=user]").all_inner_texts()] \
                == ["Name a colour."]
        before_vote = alice.locator("#arena-chat-a").inner_text() + alice.locator("#arena-chat-b").inner_text()
        assert ALPACA not in before_vote and KOALA not in before_vote  # blind until the vote
        alice.locator("#arena-vote-a").click()
        alice.wait_for_function("() => document.querySelector('#arena-status').innerText.includes('You voted')")
        revealed = alice.locator("#arena-status").inner_text()
        winner = re.search(r"Model A was ([\w.-]+)", revealed).group(1)
        assert winner in (ALPACA, KOALA) and (KOALA if winner == ALPACA else ALPACA) in revealed
        alice.wait_for_function("names => names.every(n => document.querySelector('#arena-board').innerText"
                                ".includes(n))", arg=[ALPACA, KOALA])
        board = board_text(alice)
        loser = KOALA if winner == ALPACA else ALPACA
        assert board.index(winner) < board.index(loser)  # the winner is rated first
        assert alice.locator("#arena-plot circle").count() == 2
        assert alice.locator("#arena-win-rates").inner_text().count("100%") == 1
        alice.screenshot(path=str(shots / "02-voted-leaderboard.png"), full_page=True)
    finally:
        alice.context.close()
    bob = arena_page(browser, app_url, "bob")
    try:
        bob.wait_for_function("() => document.querySelector('#arena-judges').innerText.includes('Human votes: 0.')")
        assert ALPACA not in board_text(bob)  # Alice's vote is hers
        bob.get_by_text("Everyone's votes").click()
        bob.wait_for_function("() => document.querySelector('#arena-judges').innerText.includes('Human votes: 1.')")
        bob.screenshot(path=str(shots / "03-bob-everyone.png"), full_page=True)
    finally:
        bob.context.close()
