"""The Arena tab's events through gradio_client on an in-process app with two tiny models (the quick lane;
test_arena_browser.py drives the same tab in Chromium), and its pictures as plain functions."""
from __future__ import annotations

import csv
import os
import shutil
from pathlib import Path

import pytest

from arena_helpers import ALPACA, KOALA

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

from gradio_client import Client  # noqa: E402

from modules.core.config import AppConfig  # noqa: E402
from modules.core.context import build_context  # noqa: E402
from modules.ui.app_ui import build_ui  # noqa: E402
from modules.ui.arena_events import side_messages  # noqa: E402
from modules.ui.arena_plots import ratings_svg, win_rate_html  # noqa: E402
from test_ui_tabs import App, _free_port  # noqa: E402


@pytest.fixture(scope="module")
def app(arena_models_dir: Path, tmp_path_factory, repo_root: Path):
    root = tmp_path_factory.mktemp("arena-ui")
    models = arena_models_dir
    shutil.copytree(repo_root / "presets", root / "presets")
    config = AppConfig(models_dir=models, presets_dir=root / "presets", user_data_dir=root / "user_data",
                       settings_path=root / "settings.yaml", settings={"do_sample": False, "max_new_tokens": 6})
    ctx = build_context(config)
    demo = build_ui(ctx)
    port = _free_port()
    demo.queue(default_concurrency_limit=4).launch(server_name="127.0.0.1", server_port=port,
                                                   prevent_thread_lock=True, quiet=True, show_error=True)
    url = f"http://127.0.0.1:{port}"
    try:
        yield App(ctx, Client(url, verbose=False), root, url)
    finally:
        demo.close()
        ctx.models.unload()


def texts(chat: dict) -> list[str]:
    return ["".join(part["text"] for part in m["content"]) for m in chat["value"]]


def test_send_vote_and_leaderboard(app: App) -> None:
    chat_a, chat_b, status, prompt = app.call("/arena_send", **{"Your prompt": "Name a colour.", "Model A": ALPACA,
                                                                "Model B": KOALA})
    assert status.startswith("Both answered") and prompt == ""
    assert chat_a["label"] == "Model A" and chat_b["label"] == "Model B"  # no names before the vote
    assert [m["role"] for m in chat_a["value"]] == ["user", "assistant"]
    assert texts(chat_a)[0] == texts(chat_b)[0] == "Name a colour."
    chat_a, _b, status, _p = app.call("/arena_send", **{"Your prompt": "And another one?"})  # both sides continue
    assert len(chat_a["value"]) == 4 and texts(chat_a)[2] == "And another one?" and status.startswith("Both answered")
    revealed, label_a, label_b = app.call("/arena_vote_b")
    assert f"Model A was **{ALPACA}**, Model B was **{KOALA}**" in revealed
    assert (label_a["label"], label_b["label"]) == (f"Model A: {ALPACA}", f"Model B: {KOALA}")
    again, _a, _b = app.call("/arena_vote_a")
    assert again.startswith("⚠️") and "already been voted" in again
    table, plot, rates, judges = app.call("/arena_board", "mine")
    assert [row[0] for row in table["data"]] == [KOALA, ALPACA] and "Human votes: 1." in judges
    assert plot.count("<circle") == 2 and "100%" in rates
    exported = app.call("/arena_export_csv")
    rows = list(csv.DictReader(open(exported, encoding="utf-8")))
    assert [r["turn"] for r in rows] == ["0", "1"] and rows[0]["vote"] == "b" and rows[0]["model_b"] == KOALA
    battles = app.ctx.store.list_battles("local")
    assert len(battles) == 1 and battles[0]["vote"] == "b"


def test_run_all_one_category_then_resume(app: App) -> None:
    params = {"Model A": ALPACA, "Model B": KOALA, "Question categories to run": ["math"]}
    app.call("/arena_new")
    first = app.call("/arena_run_all", **params)
    assert first.startswith("Done: 6 questions answered, 0 skipped")
    again = app.call("/arena_run_all", **params)
    assert again.startswith("Done: 0 questions answered, 6 skipped")
    math = [b for b in app.ctx.store.list_battles("local") if b["category"] == "math"]
    assert len(math) == 6 and all(b["vote"] is None for b in math)


def test_run_all_asks_for_two_models(app: App) -> None:
    message = app.call("/arena_run_all")
    assert message.startswith("⚠️ Choose two different models")
    empty = app.call("/arena_send", **{"Your prompt": "  "})
    assert empty[2].startswith("⚠️ Write a prompt first")


def test_pictures_escape_names_and_mark_missing_pairs() -> None:
    rows = [{"model": "<b>x</b>", "rating": 1100.0, "ci_low": 1000.0, "ci_high": 1200.0, "games": 3},
            {"model": "y", "rating": 900.0, "ci_low": 800.0, "ci_high": 1000.0, "games": 3}]
    svg = ratings_svg(rows)
    assert "<b>x</b>" not in svg and "&lt;b&gt;x&lt;/b&gt;" in svg and svg.count("<line") == 2
    assert "No votes yet" in ratings_svg([])
    table = win_rate_html(["a", "b"], [[None, 0.75], [0.25, None]])
    assert "75%" in table and "25%" in table and table.count("–") == 2
    assert side_messages([{"prompt": "p", "answer_a": "1", "answer_b": "2"}], "b", "q", "part") == [
        {"role": "user", "content": "p"}, {"role": "assistant", "content": "2"},
        {"role": "user", "content": "q"}, {"role": "assistant", "content": "part"}]
