"""The chat in a real browser (Debian's Chromium driven by playwright) against app.py serving the default model.

One app runs for the module with sign-in for two users, a temporary database and a
models folder holding the default model and a tiny second one. The steps run in
order, as a person would use the page; each saves a screenshot under
test-artifacts/browser/ (git-ignored).
"""
from __future__ import annotations

import re
import shutil
import sys
import time
from pathlib import Path

import pytest

from api_helpers import free_port
from browser_helpers import USERS, NEEDS_CHROMIUM, browser, served_app, sign_in  # noqa: F401 (browser: a fixture)
from tiny_models import build_tiny_llama

SMOL = "SmolLM2-135M-Instruct"
TINY = "tiny-llama"
STATS = re.compile(r"[\d.]+ tokens/s · (\d+) tokens · context (\d+)/(\d+)")

pytestmark = [pytest.mark.slow, NEEDS_CHROMIUM]  # a second app process and a real browser: minutes on two cores


@pytest.fixture(scope="module")
def artifacts(repo_root: Path) -> Path:
    folder = repo_root / "test-artifacts" / "browser"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    return folder


@pytest.fixture(scope="module")
def app_url(default_model_dir: Path, repo_root: Path, tmp_path_factory):
    """app.py on a free port: the default model and a tiny one, a fresh database, short greedy replies."""
    root = tmp_path_factory.mktemp("browser-app")
    models = root / "models"
    models.mkdir()
    (models / SMOL).symlink_to(default_model_dir, target_is_directory=True)
    build_tiny_llama(models / TINY)
    settings = root / "settings.yaml"
    settings.write_text("max_new_tokens: 32\ndo_sample: false\n")
    port = free_port()
    command = [sys.executable, str(repo_root / "app.py"), "--model", SMOL, "--models-dir", str(models),
               "--user-data-dir", str(root / "user_data"), "--settings", str(settings), "--listen-port", str(port)]
    for user, password in USERS.items():
        command += ["--gradio-auth", f"{user}:{password}"]
    with served_app(command, repo_root, root / "app.log", f"http://127.0.0.1:{port}") as url:
        yield url


def signed_in_page(browser, url: str, user: str):
    page = sign_in(browser, url, user)
    page.wait_for_selector("#signed-in-as", state="visible")
    return page


@pytest.fixture(scope="module")
def alice(browser, app_url):
    page = signed_in_page(browser, app_url, "alice")
    yield page
    page.context.close()


class Shots:
    """Numbered screenshots, one per step."""

    def __init__(self, folder: Path) -> None:
        self.folder, self.count = folder, 0

    def __call__(self, page, name: str) -> None:
        self.count += 1
        page.screenshot(path=str(self.folder / f"{self.count:02d}-{name}.png"))


@pytest.fixture(scope="module")
def shot(artifacts: Path) -> Shots:
    return Shots(artifacts)


# --- helpers -------------------------------------------------------------------------------------

def texts(page, who: str) -> list[str]:
    return [t.strip() for t in page.locator(f"#chat [data-testid={who}]").all_inner_texts()]


def stats(page) -> str:
    return page.locator("#reply-stats").inner_text().strip()


WATCH_JS = """() => {
  const node = document.querySelector('#reply-stats');
  window.__stats = [];
  if (window.__statsObserver) window.__statsObserver.disconnect();
  window.__statsObserver = new MutationObserver(() => window.__stats.push(node.innerText.trim()));
  window.__statsObserver.observe(node, {subtree: true, childList: true, characterData: true});
}"""

# Every text the last bot message shows, recorded by the page itself as the DOM changes: no state
# of a streaming reply is missed, however busy the machine (a poll from here could miss them all).
WATCH_BOT_JS = """() => {
  const chat = document.querySelector('#chat');
  window.__bot = [];
  const record = () => {
    const bots = chat.querySelectorAll('[data-testid=bot]');
    const text = bots.length ? bots[bots.length - 1].innerText.trim() : '';
    if (text && text !== window.__bot[window.__bot.length - 1]) window.__bot.push(text);
  };
  if (window.__botObserver) window.__botObserver.disconnect();
  window.__botObserver = new MutationObserver(record);
  window.__botObserver.observe(chat, {subtree: true, childList: true, characterData: true});
}"""

# True once the stats line has shown "writing" and then a finished reply's line (the one shown now);
# the text "failed: ..." if the reply failed.
REPLY_DONE_JS = """() => {
  const now = document.querySelector('#reply-stats').innerText.trim();
  if (now.includes('⚠️')) return 'failed: ' + now;
  const seen = window.__stats || [];
  const start = seen.findIndex(line => line.startsWith('writing'));
  if (start < 0) return false;
  const done = seen.slice(start).filter(line => /[\\d.]+ tokens\\/s · \\d+ tokens · context \\d+\\/\\d+/.test(line)
                                                 && !line.startsWith('writing'));
  return done.length > 0 && now === done[done.length - 1];
}"""


def act(page, action) -> str:
    """Do ``action`` (which starts a reply) and wait until that reply has finished; returns the stats line.

    A watcher records every text the stats line shows, so a reply that starts and ends between two
    looks is not missed, and the previous reply's line is not taken for this one's.
    """
    page.evaluate(WATCH_JS)
    action()
    return wait_reply_done(page)


def wait_reply_done(page, timeout: float = 240.0) -> str:
    """Wait (in the page, on its recorded stats lines) until the reply started by the last action has finished."""
    try:
        outcome = page.wait_for_function(REPLY_DONE_JS, timeout=timeout * 1000).json_value()
    except playwright_api.TimeoutError:
        raise AssertionError(f"no finished reply after {timeout:.0f} s; stats: {stats(page)!r}") from None
    if outcome is not True:
        raise AssertionError(f"the reply {outcome}")
    return stats(page)


def send(page, text: str) -> None:
    box = page.locator("#message textarea")
    box.fill(text)
    box.press("Enter")


def chat_titles(page) -> list[str]:
    return [t.strip() for t in page.locator("#chat-list label").all_inner_texts()]


def open_chat(page, title: str, first_question: str) -> None:
    """Click a chat in the list and wait until its messages are shown."""
    page.locator("#chat-list").get_by_text(title, exact=True).click()
    page.wait_for_function("q => { const u = document.querySelector('#chat [data-testid=user]');"
                           " return u && u.innerText.trim() === q; }", arg=first_question)


# --- the steps -----------------------------------------------------------------------------------

def test_send_a_message_and_watch_the_reply_stream(alice, shot):
    box = alice.locator("#message textarea")
    box.fill("first line")
    box.press("Shift+Enter")
    box.type("second line")
    assert box.input_value() == "first line\nsecond line"  # Shift+Enter: a new line, nothing sent
    assert texts(alice, "user") == []
    alice.evaluate(WATCH_JS)
    alice.evaluate(WATCH_BOT_JS)
    send(alice, "What is the capital of France?")
    alice.wait_for_function(f"() => window.__bot.length >= 2 || ({REPLY_DONE_JS})() !== false", timeout=240_000)
    shot(alice, "reply-streaming")
    wait_reply_done(alice)
    shot(alice, "reply-done")
    seen = alice.evaluate("() => window.__bot")
    assert seen[-1] == texts(alice, "bot")[-1]
    assert len(seen) >= 2, f"the reply did not stream: {seen}"
    assert all(seen[-1].startswith(part) for part in seen[:-1])
    assert "Paris" in seen[-1] and texts(alice, "user") == ["What is the capital of France?"]
    generated, used, length = map(int, STATS.search(stats(alice)).groups())
    assert 0 < generated <= 32 and used > generated and length == 8192
    assert SMOL in stats(alice)
    assert chat_titles(alice) == ["What is the capital of France?"]


def test_regenerate_and_page_between_versions(alice, shot):
    first = texts(alice, "bot")[-1]
    alice.get_by_text("Chat options").click()
    alice.locator("#start-reply-with textarea").fill("Certainly! Here is the answer:")
    act(alice, alice.locator("#regenerate").click)
    second = texts(alice, "bot")[-1]
    assert second.startswith("Certainly! Here is the answer:") and len(texts(alice, "bot")) == 1
    label = alice.locator("#version-label")
    assert label.inner_text().strip() == "version 2/2"
    shot(alice, "regenerated")
    alice.locator("#version-prev").click()
    alice.wait_for_function("() => document.querySelector('#version-label').innerText.trim() === 'version 1/2'")
    assert texts(alice, "bot")[-1] == first
    shot(alice, "version-1-of-2")
    alice.locator("#version-next").click()
    alice.wait_for_function("() => document.querySelector('#version-label').innerText.trim() === 'version 2/2'")
    assert texts(alice, "bot")[-1] == second
    alice.locator("#start-reply-with textarea").fill("")


def test_pick_a_message_and_branch_from_it(alice, shot):
    label = alice.locator("#version-label")
    alice.locator("#chat [data-testid=user]").first.click()  # one version: no pager
    label.wait_for(state="hidden")
    alice.locator("#chat [data-testid=bot]").first.click()
    label.wait_for(state="visible")
    assert label.inner_text().strip() == "version 2/2"
    alice.locator("#chat [data-testid=user]").first.click()
    label.wait_for(state="hidden")
    alice.locator("#branch").click()
    alice.wait_for_function("() => document.querySelectorAll('#chat-list label').length === 2")
    alice.wait_for_function("() => document.querySelectorAll('#chat [data-testid=bot]').length === 0")
    assert texts(alice, "user") == ["What is the capital of France?"]
    assert "What is the capital of France? (branch)" in chat_titles(alice)
    shot(alice, "branched")
    open_chat(alice, "What is the capital of France?", "What is the capital of France?")
    alice.wait_for_function("() => document.querySelectorAll('#chat [data-testid=bot]').length === 1")


def test_edit_a_message_and_regenerate_from_there(alice, shot):
    before = texts(alice, "bot")[-1]
    alice.locator("#chat .message-buttons-right button[aria-label=Edit]").first.click()
    editor = alice.locator("#chat textarea.edit-textarea")
    editor.fill("What is the capital of Germany?")
    shot(alice, "editing")
    act(alice, alice.locator("#chat button[aria-label=Submit]").click)
    shot(alice, "edited")
    assert texts(alice, "user") == ["What is the capital of Germany?"]
    bots = texts(alice, "bot")
    assert len(bots) == 1 and bots[0] != before and "Berlin" in bots[0]


def test_stop_keeps_the_reply_as_far_as_it_got(alice, shot, stopped: dict):
    alice.locator("#new-chat").click()
    alice.wait_for_function("() => document.querySelectorAll('#chat [data-testid=bot]').length === 0")
    send(alice, "Tell a long story about a knight.")
    alice.wait_for_function("() => { const b = document.querySelectorAll('#chat [data-testid=bot]');"
                            " return b.length && b[b.length - 1].innerText.trim().split(/\\s+/).length >= 3; }")
    alice.locator("#stop").click()
    alice.wait_for_function("() => document.querySelector('#reply-stats').innerText.includes('stopped')")
    generated = int(STATS.search(stats(alice)).group(1))
    assert generated < 32
    time.sleep(0.5)
    stopped["text"] = texts(alice, "bot")[-1]
    assert stopped["text"]
    shot(alice, "stopped")


@pytest.fixture(scope="module")
def stopped() -> dict:
    return {}


def test_switch_to_a_second_model_and_chat(alice, shot):
    alice.get_by_role("tab", name="Model").click()
    dropdown = alice.locator("#model-dropdown input")
    dropdown.click()
    alice.get_by_role("option", name=TINY, exact=True).click()
    alice.wait_for_function(f"() => document.querySelector('#model-status').innerText.includes('{TINY}')"
                            " && !document.querySelector('#model-status').innerText.includes('Loading')")
    shot(alice, "model-switched")
    alice.get_by_role("tab", name="Chat").click()
    alice.locator("#new-chat").click()
    alice.wait_for_function("() => document.querySelectorAll('#chat [data-testid=bot]').length === 0")
    line = act(alice, lambda: send(alice, "Hello there"))
    assert TINY in line and SMOL not in line
    assert texts(alice, "user") == ["Hello there"] and len(texts(alice, "bot")) == 1
    shot(alice, "tiny-model-reply")


def test_keyboard_shortcuts_continue_and_regenerate(alice, shot):
    before = texts(alice, "bot")[-1]
    box = alice.locator("#message textarea")
    act(alice, lambda: box.press("Alt+Enter"))  # continue
    continued = texts(alice, "bot")[-1]
    assert continued.startswith(before.rstrip()[:20]) and len(continued) > len(before)
    assert box.input_value() == "" and texts(alice, "user") == ["Hello there"]  # nothing was sent
    act(alice, lambda: box.press("Control+Enter"))  # regenerate
    assert alice.locator("#version-label").inner_text().strip() == "version 2/2"
    shot(alice, "shortcuts")


def test_reload_the_page_and_find_the_chats(alice, shot, stopped: dict):
    alice.reload()
    alice.wait_for_selector("#message textarea")
    alice.wait_for_function("() => document.querySelectorAll('#chat-list label').length === 4")
    titles = chat_titles(alice)
    assert titles[0] == "Hello there"  # newest first
    assert sorted(titles) == ["Hello there", "Tell a long story about a knight.", "What is the capital of France?",
                              "What is the capital of France? (branch)"]
    assert texts(alice, "user") == ["Hello there"]  # the most recent chat is open again
    open_chat(alice, "Tell a long story about a knight.", "Tell a long story about a knight.")
    assert texts(alice, "bot") == [stopped["text"]]
    open_chat(alice, "What is the capital of France?", "What is the capital of Germany?")
    assert len(texts(alice, "bot")) == 1
    shot(alice, "after-reload")


def test_two_users_see_separate_chats(browser, app_url, alice, shot):
    bob = signed_in_page(browser, app_url, "bob")
    try:
        assert bob.locator("#signed-in-as").inner_text().startswith("Signed in as bob")
        assert chat_titles(bob) == [] and texts(bob, "user") == []
        act(bob, lambda: send(bob, "Bob's own question"))
        assert chat_titles(bob) == ["Bob's own question"]
        shot(bob, "bob")
    finally:
        bob.context.close()
    alice.reload()
    alice.wait_for_function("() => document.querySelectorAll('#chat-list label').length === 4")
    assert "Bob's own question" not in chat_titles(alice)
    shot(alice, "alice-again")
