"""The Arena tab's events: send (both sides stream), vote (names revealed), leaderboard, judge, run all, export.

Each event asks :func:`user_of` for the signed-in user, so votes stay per user. Anything
that generates may load another model, so it follows the Model tab's rule (admin_guard).
"""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import gradio as gr

from modules.core.arena.battle import arena_of
from modules.core.arena.judge import judge_battle
from modules.core.arena.report import boards, export_csv, export_json
from modules.core.arena.runner import questions_for, run_all
from modules.core.errors import CorralError
from modules.ui.admin_guard import admin_refusal
from modules.ui.arena_plots import ratings_svg, win_rate_html
from modules.ui.auth import user_of
from modules.ui.progress import run_reporting
from modules.ui.state import control_inputs, sampler_params, state_from_values

RANDOM = "(random)"
VERDICT_TEXT = {"a": "Model A is better", "b": "Model B is better", "tie": "a tie", "both_bad": "both are bad"}


def cancel_key(request: gr.Request) -> str:
    return f"{request.session_hash}:arena"


def side_messages(turns: list[dict], side: str, prompt: str | None = None, partial: str = "") -> list[dict]:
    """One side's conversation for its Chatbot; ``prompt`` and ``partial`` are the turn being written."""
    messages: list[dict] = []
    for turn in turns:
        messages += [{"role": "user", "content": turn["prompt"]},
                     {"role": "assistant", "content": turn[f"answer_{side}"]}]
    if prompt is not None:
        messages += [{"role": "user", "content": prompt}, {"role": "assistant", "content": partial}]
    return messages


def _pick(value: str | None) -> str | None:
    return None if not value or value == RANDOM else value


def board_values(store: Any, user: str | None) -> tuple:
    """(table rows, ratings plot, win-rate table, judges' text) for the Leaderboard."""
    result = boards(store, user)
    humans = result["humans"]
    rows = [[r["model"], r["rating"], r["ci_low"], r["ci_high"], r["elo"], r["games"], r["wins"], r["losses"], r["ties"]]
            for r in humans.rows]
    lines = [f"**Human votes: {humans.verdicts}.**"]
    for name, board in result["judges"].items():
        ranking = ", ".join(f"{r['model']} {r['rating']:.0f}" for r in board.rows) or "no parsed verdicts yet"
        agree = result["agreement"].get(name)
        together = (f"; agrees with your votes on {agree['agree']} of {agree['battles']} battles "
                    f"({agree['rate']:.0%})" if agree else "")
        lines.append(f"Judge **{name}** ({board.verdicts} verdicts, {board.unparsed} unparsed — kept out of the "
                     f"human ratings): {ranking}{together}.")
    return rows, ratings_svg(humans.rows), win_rate_html(humans.names, humans.matrix), "\n\n".join(lines)


class ArenaEvents:
    """The tab's event handlers over one UI context (bound methods, so ``wire`` only connects them)."""

    def __init__(self, ui: Any) -> None:
        self.ui, self.ctx = ui, ui.ctx

    @property
    def arena(self) -> Any:
        return arena_of(self.ctx)  # opened on first use

    def _refusal(self, request: gr.Request) -> str | None:
        return admin_refusal(self.ctx.config.server, request, "load models for the arena")

    def send(self, battle_id: int | None, prompt: str, enabled: list[str], pick_a: str | None, pick_b: str | None,
             request: gr.Request, *values: Any):
        """Both sides answer ``prompt`` (A, then B), streaming; a new battle once the last one was voted on."""
        refusal = self._refusal(request)
        if refusal:
            yield battle_id, gr.skip(), gr.skip(), refusal, gr.skip()
            return
        user, prompt = user_of(request), (prompt or "").strip()
        try:
            params = sampler_params(state_from_values(self.ui, values))
            if not prompt:
                raise CorralError("Write a prompt first: both models answer it.")
            if battle_id is None or self.arena.store.get_battle(user, battle_id)["vote"] is not None:
                battle_id = self.arena.start(user, enabled or [], _pick(pick_a), _pick(pick_b))
            turns = self.arena.store.get_battle(user, battle_id)["turns"]
            cancel = self.ui.cancels.fresh(cancel_key(request))
            for update in self.arena.play_turn(user, battle_id, prompt, params, cancel):
                writing = f"Model {update.side.upper()} is writing…" if update.side else \
                    "Both answered. Vote below, or ask a follow-up: both sides continue."
                yield (battle_id, gr.update(value=side_messages(turns, "a", prompt, update.answer_a), label="Model A"),
                       gr.update(value=side_messages(turns, "b", prompt, update.answer_b), label="Model B"), writing, "")
        except CorralError as err:
            yield battle_id, gr.skip(), gr.skip(), f"⚠️ {err}", gr.skip()

    def vote(self, battle_id: int | None, verdict: str, request: gr.Request) -> tuple:
        if battle_id is None:
            return "⚠️ There is no battle to vote on yet: send a prompt first.", gr.skip(), gr.skip()
        try:
            battle = self.arena.store.vote_battle(user_of(request), battle_id, verdict)
        except CorralError as err:
            return f"⚠️ {err}", gr.skip(), gr.skip()
        a, b = battle["model_a"], battle["model_b"]
        return (f"You voted: {VERDICT_TEXT[verdict]}. Model A was **{a}**, Model B was **{b}**. "
                "Send a new prompt for the next battle.",
                gr.update(label=f"Model A: {a}"), gr.update(label=f"Model B: {b}"))

    @staticmethod
    def new_battle() -> tuple:
        return None, gr.update(value=[], label="Model A"), gr.update(value=[], label="Model B"), ""

    def board(self, scope: str, request: gr.Request) -> tuple:
        return board_values(self.arena.store, None if scope == "all" else user_of(request))

    def judge_current(self, battle_id: int | None, judge: str | None, request: gr.Request,
                      progress=gr.Progress()) -> str:
        refusal = self._refusal(request)
        if refusal or battle_id is None or not judge:
            return refusal or "⚠️ Send a prompt and choose a judge model first."
        try:
            work = lambda report: judge_battle(self.arena, user_of(request), battle_id, judge)  # noqa: E731
            result = run_reporting(work, progress)
        except CorralError as err:
            return f"⚠️ {err}"
        return f"Judge {judge}: **{result.verdict}** (first order {result.first_verdict}, swapped {result.second_verdict})."

    def run_questions(self, pick_a: str | None, pick_b: str | None, judge: str | None, use_judge: bool,
                      categories: list[str], request: gr.Request, progress=gr.Progress(), *values: Any) -> str:
        refusal = self._refusal(request)
        if refusal:
            return refusal
        pair = (_pick(pick_a), _pick(pick_b))
        if not all(pair) or pair[0] == pair[1]:
            return "⚠️ Choose two different models as Model A and Model B (under “Models in the arena”) first."
        try:
            params = sampler_params(state_from_values(self.ui, values))
            cancel = self.ui.cancels.fresh(cancel_key(request))
            questions = questions_for(self.ctx.config.user_data_dir, categories or None)
            work = lambda report: run_all(self.arena, user_of(request), pair, questions, params,  # noqa: E731
                                          judge=judge if use_judge and judge else None, progress=report, cancel=cancel)
            return run_reporting(work, progress).text()
        except CorralError as err:
            return f"⚠️ {err}"

    def export(self, kind: str, request: gr.Request) -> str:
        path = Path(tempfile.mkdtemp(prefix="corral-arena-")) / f"arena-battles.{kind}"
        write = export_csv if kind == "csv" else export_json
        path.write_text(write(self.arena.store, user_of(request)), encoding="utf-8")
        return str(path)

    def stop(self, request: gr.Request) -> None:
        self.ui.cancels.cancel(cancel_key(request))

    def refresh_models(self) -> tuple:
        names = self.ctx.registry.names()
        picks = gr.update(choices=[RANDOM, *names])
        return gr.update(choices=names), picks, picks, gr.update(choices=names)


def wire(ui) -> None:
    c, ev = ui.components, ArenaEvents(ui)
    chats = [c["arena_chat_a"], c["arena_chat_b"]]
    board_in, board_out = [c["arena_scope"]], [c["arena_board"], c["arena_plot"], c["arena_win_rates"], c["arena_judges"]]
    c["arena_send"].click(ev.send, [c["arena_battle"], c["arena_prompt"], c["arena_enabled"], c["arena_pick_a"],
                                    c["arena_pick_b"], *control_inputs(ui)],
                          [c["arena_battle"], *chats, c["arena_status"], c["arena_prompt"]], api_name="arena_send")
    for verdict in ("a", "b", "tie", "both_bad"):
        c[f"arena_vote_{verdict}"].click(_voter(ev, verdict), c["arena_battle"], [c["arena_status"], *chats],
                                         api_name=f"arena_vote_{verdict}").then(
            ev.board, board_in, board_out, api_visibility="private")
    c["arena_new"].click(ev.new_battle, None, [c["arena_battle"], *chats, c["arena_status"]], api_name="arena_new")
    c["arena_stop"].click(ev.stop, None, None, queue=False, api_name="arena_stop")
    c["arena_board_refresh"].click(ev.board, board_in, board_out, api_name="arena_board")
    c["arena_scope"].change(ev.board, board_in, board_out, api_visibility="private")
    c["arena_judge_battle"].click(ev.judge_current, [c["arena_battle"], c["arena_judge"]], c["arena_status"],
                                  api_name="arena_judge")
    c["arena_run_all"].click(ev.run_questions, [c["arena_pick_a"], c["arena_pick_b"], c["arena_judge"],
                                                c["arena_use_judge"], c["arena_categories"], *control_inputs(ui)],
                             c["arena_run_status"], api_name="arena_run_all").then(
        ev.board, board_in, board_out, api_visibility="private")
    c["arena_export_csv"].click(_exporter(ev, "csv"), None, c["arena_export_file"], api_name="arena_export_csv")
    c["arena_export_json"].click(_exporter(ev, "json"), None, c["arena_export_file"], api_name="arena_export_json")
    c["arena_refresh"].click(ev.refresh_models, None, [c["arena_enabled"], c["arena_pick_a"], c["arena_pick_b"],
                                                       c["arena_judge"]], api_visibility="private")
    app = c.get("app")
    if app is not None:  # each page load shows the leaderboard as it is now
        app.load(ev.board, board_in, board_out, api_visibility="private")


def _voter(ev: ArenaEvents, verdict: str) -> Any:
    def cast(battle_id: int | None, request: gr.Request) -> tuple:
        return ev.vote(battle_id, verdict, request)
    return cast


def _exporter(ev: ArenaEvents, kind: str) -> Any:
    def run(request: gr.Request) -> str:
        return ev.export(kind, request)
    return run
