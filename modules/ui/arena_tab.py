"""The Arena tab: two anonymous models answer the same prompt side by side; you vote, then see who was who.

Layout here; the events are in arena_events.py. Both sides use the Parameters tab's sampling
settings and each its own model's prompt format. A leaderboard (ratings with intervals, a
win-rate matrix), a model as judge and "Run all questions" sit below.
"""
from __future__ import annotations

import gradio as gr

from modules.core.arena.runner import questions_for
from modules.core.errors import CorralError
from modules.ui import arena_events

VOTES = (("a", "👈 A is better", "arena-vote-a"), ("b", "👉 B is better", "arena-vote-b"),
         ("tie", "🤝 Tie", "arena-vote-tie"), ("both_bad", "👎 Both are bad", "arena-vote-both-bad"))
BOARD_HEADERS = ["Model", "Rating", "95% low", "95% high", "Elo", "Votes", "Wins", "Losses", "Ties"]


def build(ui) -> None:
    names = ui.ctx.registry.names()
    c = ui.components
    gr.Markdown("Two models answer your prompt without their names. Vote for the better answer; the names show "
                "after your vote. Each side answers in its own prompt format with the Parameters tab's sampling "
                "settings. While models are swapped rather than kept loaded side by side, the arena loads each "
                "side's model in turn, so the model loaded for the other tabs changes too.")
    with gr.Accordion("Models in the arena", open=False):
        c["arena_enabled"] = gr.CheckboxGroup(names, value=names, label="Enabled models (pairs are drawn from these)",
                                              elem_id="arena-enabled")
        with gr.Row():
            c["arena_pick_a"] = gr.Dropdown(["(random)", *names], value="(random)", label="Model A",
                                            elem_id="arena-pick-a")
            c["arena_pick_b"] = gr.Dropdown(["(random)", *names], value="(random)", label="Model B",
                                            elem_id="arena-pick-b")
            c["arena_refresh"] = gr.Button("🔄 Refresh the list", size="sm", elem_id="arena-refresh")
    c["arena_battle"] = gr.State(None)
    with gr.Row():
        c["arena_chat_a"] = gr.Chatbot(label="Model A", elem_id="arena-chat-a", height=360)
        c["arena_chat_b"] = gr.Chatbot(label="Model B", elem_id="arena-chat-b", height=360)
    with gr.Row():
        c["arena_prompt"] = gr.Textbox(label="Your prompt", placeholder="Ask both models the same thing.", lines=2,
                                       scale=6, elem_id="arena-prompt")
        c["arena_send"] = gr.Button("Send", variant="primary", scale=1, elem_id="arena-send")
    with gr.Row():
        for verdict, label, elem_id in VOTES:
            c[f"arena_vote_{verdict}"] = gr.Button(label, elem_id=elem_id)
        c["arena_new"] = gr.Button("🆕 New battle", elem_id="arena-new")
        c["arena_stop"] = gr.Button("Stop", variant="stop", elem_id="arena-stop")
    c["arena_status"] = gr.Markdown(elem_id="arena-status")
    _build_board(c)
    _build_tools(c, names, _categories(ui))


def _categories(ui) -> list[str]:
    try:
        return sorted({q.category for q in questions_for(ui.ctx.config.user_data_dir)})
    except CorralError:  # a broken question file of the user's: Run all says so when pressed
        return []


def _build_board(c: dict) -> None:
    with gr.Accordion("Leaderboard", open=True):
        with gr.Row():
            c["arena_scope"] = gr.Radio([("My votes", "mine"), ("Everyone's votes", "all")], value="mine",
                                        label="Votes counted", elem_id="arena-scope")
            c["arena_board_refresh"] = gr.Button("🔄 Update", size="sm", elem_id="arena-board-refresh")
        c["arena_board"] = gr.Dataframe(headers=BOARD_HEADERS, interactive=False, elem_id="arena-board",
                                        label="Bradley–Terry ratings (Elo scale) from human votes")
        with gr.Row():
            c["arena_plot"] = gr.HTML(elem_id="arena-plot-box", label="Ratings with 95% bootstrap intervals")
            c["arena_win_rates"] = gr.HTML(elem_id="arena-win-rates-box")
        c["arena_judges"] = gr.Markdown(elem_id="arena-judges")


def _build_tools(c: dict, names: list[str], categories: list[str]) -> None:
    with gr.Accordion("Judge and run all questions", open=False):
        c["arena_judge"] = gr.Dropdown(names, label="Judge model (a local model, or a remote one from the list)",
                                       elem_id="arena-judge")
        with gr.Row():
            c["arena_judge_battle"] = gr.Button("Judge this battle", elem_id="arena-judge-battle")
            c["arena_use_judge"] = gr.Checkbox(label="Judge each question after Run all", value=False,
                                               elem_id="arena-use-judge")
            c["arena_run_all"] = gr.Button("▶ Run all questions (Model A vs Model B above)", variant="primary",
                                           elem_id="arena-run-all")
        c["arena_categories"] = gr.CheckboxGroup(categories, value=categories, elem_id="arena-categories",
                                                 label="Question categories to run (none ticked: all)")
        c["arena_run_status"] = gr.Markdown(elem_id="arena-run-status")
    with gr.Accordion("Export votes", open=False):
        with gr.Row():
            c["arena_export_csv"] = gr.Button("Export CSV", elem_id="arena-export-csv")
            c["arena_export_json"] = gr.Button("Export JSON", elem_id="arena-export-json")
        c["arena_export_file"] = gr.File(label="Exported battles", interactive=False, elem_id="arena-export-file")


def wire(ui) -> None:
    arena_events.wire(ui)
