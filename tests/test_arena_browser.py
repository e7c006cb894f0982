"""The Arena tab in a real browser (Debian's Chromium driven by playwright) against app.py on two tiny models.

Alice asks one prompt, both anonymous sides answer, she votes, the names are revealed and the
leaderboard counts the vote; Bob, signed in separately, sees none of her votes among his own.
Screenshots go to test-artifacts/arena-browser/ (git-ignored).
"""
from __future__ import annotations

import re
import shutil
import sys
from pathlib import Path

import pytest

from arena_helpers import ALPACA, KOALA
from api_helpers import free_port
from browser_helpers import USERS, NEEDS_CHROMIUM, browser, served_app, sign_in  # noqa: F401 (browser: a fixture)

pytestmark = [pytest.mark.slow, NEEDS_CHROMIUM]  # an app process and a real browser


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
    with served_app(command, repo_root, root / "app.log", f"http://127.0.0.1:{port}") as url:
        yield url


def arena_page(browser, url: str, user: str):
    page = sign_in(browser, url, user, height=1000, timeout_ms=120_000)
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
