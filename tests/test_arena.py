"""The arena's core: battles and votes in the store, rating math, the judge's verdicts, the question set,
and battles between two tiny models that each get their own prompt format."""
from __future__ import annotations

import csv
import io
import json
import math
import threading
from pathlib import Path

import pytest

from api_helpers import watch_generations
from arena_helpers import ALPACA, KOALA, arena_context

from modules.core.arena.battle import Arena, pick_pair, side_history
from modules.core.arena.judge import agreement, combine, judge_battle, judge_prompt, parse_verdict
from modules.core.arena.ratings import (Outcome, bootstrap_intervals, bradley_terry, elo, leaderboard,
                                        vote_counts, win_rates)
from modules.core.arena.report import boards, export_csv, export_json
from modules.core.arena.runner import QUESTIONS_FILE, load_questions, run_all
from modules.core.errors import CorralError
from modules.core.sampling import SamplerParams
from modules.core.store import NotFoundError, Store

GREEDY = SamplerParams(do_sample=False, max_new_tokens=6)


# --- rating math against hand-computed values ------------------------------------------------------

def games(a: str, b: str, verdict: str, n: int = 1) -> list[Outcome]:
    return [Outcome(a, b, verdict)] * n


def test_bradley_terry_two_models_three_wins_to_one():
    # P(A beats B) = 3/4 at the maximum: strength ratio 3, i.e. 400*log10(3) = 190.85 Elo points apart.
    ratings = bradley_terry(games("A", "B", "a", 3) + games("A", "B", "b"))
    assert ratings["A"] - ratings["B"] == pytest.approx(400 * math.log10(3), abs=1e-6)
    assert (ratings["A"] + ratings["B"]) / 2 == pytest.approx(1000.0)


def test_bradley_terry_counts_ties_as_half_wins_and_side_does_not_matter():
    # A beats B twice, one tie: A scores 2.5 of 3, so p = 5/6 and the gap is 400*log10(5).
    ratings = bradley_terry(games("A", "B", "a", 2) + games("B", "A", "tie"))
    assert ratings["A"] - ratings["B"] == pytest.approx(400 * math.log10(5), abs=1e-6)
    swapped = bradley_terry(games("B", "A", "b", 2) + games("A", "B", "both_bad"))
    assert swapped == pytest.approx(ratings)


def test_bradley_terry_three_models_cycle_is_a_draw_and_chain_is_ordered():
    cycle = games("A", "B", "a") + games("B", "C", "a") + games("C", "A", "a")
    assert bradley_terry(cycle) == pytest.approx({"A": 1000.0, "B": 1000.0, "C": 1000.0})
    # A beats B 2:1 and B beats C 2:1, never A against C: gaps of 400*log10(2) each, by the score equations.
    chain = games("A", "B", "a", 2) + games("A", "B", "b") + games("B", "C", "a", 2) + games("B", "C", "b")
    ratings = bradley_terry(chain)
    gap = 400 * math.log10(2)
    assert ratings["A"] - ratings["B"] == pytest.approx(gap, abs=1e-6)
    assert ratings["B"] - ratings["C"] == pytest.approx(gap, abs=1e-6)


def test_bradley_terry_prior_keeps_an_unbeaten_model_finite():
    unbeaten = bradley_terry(games("A", "B", "a"), prior=0.01)
    # The penalised score equation: 1 - sigmoid(2t) = 0.01 t  (t = A's log-strength, B's is -t).
    t = (unbeaten["A"] - 1000.0) * math.log(10) / 400
    assert 1 - 1 / (1 + math.exp(-2 * t)) == pytest.approx(0.01 * t, abs=1e-9)
    assert bradley_terry([]) == {}


def test_elo_updates_by_hand():
    # Game 1: equal ratings, expected 0.5: A +16, B -16. Game 2: B wins at 984 vs 1016:
    # expected for B = 1/(1+10^(32/400)) = 0.454059; B gains 32*(1-0.454059) = 17.470.
    ratings = elo(games("A", "B", "a") + games("A", "B", "b"))
    assert ratings["A"] == pytest.approx(1016 - 17.470, abs=1e-3)
    assert ratings["B"] == pytest.approx(984 + 17.470, abs=1e-3)
    assert elo(games("A", "B", "tie")) == {"A": 1000.0, "B": 1000.0}


def test_win_rates_counts_and_bootstrap():
    outcomes = games("A", "B", "a", 3) + games("B", "A", "tie") + games("C", "A", "a")
    names, matrix = win_rates(outcomes)
    assert names == ["A", "B", "C"]
    assert matrix[0][1] == pytest.approx(3.5 / 4) and matrix[1][0] == pytest.approx(0.5 / 4)
    assert matrix[0][2] == 0.0 and matrix[2][0] == 1.0 and matrix[1][2] is None and matrix[0][0] is None
    counts = vote_counts(outcomes)
    assert counts["A"] == {"games": 5, "wins": 3, "losses": 1, "ties": 1}
    assert counts["B"] == {"games": 4, "wins": 0, "losses": 3, "ties": 1}
    intervals = bootstrap_intervals(outcomes, rounds=50, seed=1)
    again = bootstrap_intervals(outcomes, rounds=50, seed=1)
    assert intervals == again  # seeded: the same intervals each time
    ratings = bradley_terry(outcomes, prior=0.01)
    for name, (low, high) in intervals.items():
        assert low <= high and low - 1e-6 <= ratings[name] + 300 and high + 300 >= ratings[name]
    rows = leaderboard(outcomes, rounds=20)
    assert [r["model"] for r in rows][0] == "C" and rows[-1]["model"] == "B"
    assert all(r["ci_low"] <= r["ci_high"] for r in rows)


# --- the judge's verdicts ---------------------------------------------------------------------------

@pytest.mark.parametrize("text, verdict", [
    ("A is more accurate.\n[[A]]", "a"),
    ("Both fine, B clearer. Verdict: [[B]]", "b"),
    ("They are equal. [[C]]", "tie"),
    ("[[ tie ]]", "tie"),
    ("[[b]]", "b"),
    # the instructions echoed first, the real verdict last
    ("Output [[A]], [[B]] or [[C]]. Having compared them: [[B]]", "b"),
    ("My final verdict: Assistant A", "a"),
    ("**Verdict:** B", "b"),
    ("", "unparsed"),
    ("I think both are good.", "unparsed"),
    ("[[D]] [A] [[]] A B", "unparsed"),
    ("\x00\ufffd[[", "unparsed"),
    (None, "unparsed"),
])
def test_parse_verdict_on_good_and_malformed_outputs(text, verdict):
    assert parse_verdict(text) == verdict


def test_both_orders_combine_to_cancel_position_bias():
    assert combine("a", "a") == "a"
    assert combine("a", "b") == "tie"  # the judge just preferred whichever came first
    assert combine("tie", "b") == "tie"
    assert combine("unparsed", "a") == "unparsed" and combine("b", "unparsed") == "unparsed"


def test_judge_prompt_shows_each_turn_in_the_asked_order():
    turns = [{"prompt": "Q1", "answer_a": "alpha", "answer_b": "beta"}]
    first, swapped = judge_prompt(turns, "a", "b"), judge_prompt(turns, "b", "a")
    assert first.index("alpha") < first.index("beta") and swapped.index("beta") < swapped.index("alpha")
    assert "[[A]]" in first and "Assistant A, answer 1" in first


def test_agreement_between_judge_and_humans():
    rows = [{"battle_id": 1, "judge": None, "verdict": "a"}, {"battle_id": 1, "judge": "J", "verdict": "a"},
            {"battle_id": 2, "judge": None, "verdict": "both_bad"}, {"battle_id": 2, "judge": "J", "verdict": "tie"},
            {"battle_id": 3, "judge": None, "verdict": "b"}, {"battle_id": 3, "judge": "J", "verdict": "a"},
            {"battle_id": 4, "judge": "J", "verdict": "a"},  # no human vote: not counted
            {"battle_id": 5, "judge": None, "verdict": "a"}, {"battle_id": 5, "judge": "J", "verdict": "unparsed"}]
    assert agreement(rows) == {"J": {"battles": 3, "agree": 2, "rate": pytest.approx(2 / 3)}}


# --- the store --------------------------------------------------------------------------------------

@pytest.fixture
def store(tmp_path: Path):
    with Store(tmp_path / "corral.db") as s:
        yield s


def test_battle_names_hidden_until_the_vote_then_one_vote_only(store: Store):
    battle = store.create_battle("alice", "m1", "m2")
    with pytest.raises(CorralError, match="no answers yet"):
        store.vote_battle("alice", battle, "a")
    store.add_battle_turn("alice", battle, "hi", "hello from a", "hello from b")
    store.add_battle_turn("alice", battle, "more", "a2", "b2")
    shown = store.get_battle("alice", battle)
    assert shown["model_a"] is None and shown["model_b"] is None and shown["vote"] is None
    assert [t["answer_b"] for t in shown["turns"]] == ["hello from b", "b2"]
    with pytest.raises(CorralError, match="Unknown vote"):
        store.vote_battle("alice", battle, "unparsed")
    voted = store.vote_battle("alice", battle, "b")
    assert (voted["model_a"], voted["model_b"], voted["vote"]) == ("m1", "m2", "b")
    with pytest.raises(CorralError, match="already been voted"):
        store.vote_battle("alice", battle, "a")
    with pytest.raises(CorralError, match="voted on"):
        store.add_battle_turn("alice", battle, "again", "x", "y")
    with pytest.raises(CorralError, match="two different models"):
        store.create_battle("alice", "m1", "m1")


def test_votes_are_isolated_between_users(store: Store):
    mine = store.create_battle("alice", "m1", "m2")
    store.add_battle_turn("alice", mine, "q", "x", "y")
    theirs = store.create_battle("bob", "m1", "m2")
    store.add_battle_turn("bob", theirs, "q", "x", "y")
    store.vote_battle("bob", theirs, "a")
    for action in (lambda: store.get_battle("bob", mine), lambda: store.vote_battle("bob", mine, "b"),
                   lambda: store.add_battle_turn("bob", mine, "q2", "x", "y"),
                   lambda: store.save_judgement("bob", mine, "J", "a", {})):
        with pytest.raises(NotFoundError):
            action()
    assert store.get_battle("alice", mine)["vote"] is None
    assert [b["id"] for b in store.list_battles("alice")] == [mine]
    assert store.arena_outcomes("alice") == []
    assert [r["battle_id"] for r in store.arena_outcomes("bob")] == [theirs]
    assert len(store.arena_outcomes(None)) == 1  # everyone's verdicts, for a shared board
    assert [b["id"] for b in store.export_battles("bob")] == [theirs]


def test_judge_verdicts_are_kept_apart_and_exported(store: Store):
    battle = store.create_battle("alice", "m1", "m2", question_id="math-01", category="math")
    store.add_battle_turn("alice", battle, "2+2?", "4", "5")
    store.save_judgement("alice", battle, "judge-x", "unparsed", {"first_order": {"output": "???"}})
    store.save_judgement("alice", battle, "judge-x", "a", {"first_order": {"output": "[[A]]"}})  # replaces
    store.vote_battle("alice", battle, "a")
    result = boards(store, "alice", rounds=10)
    assert [r["model"] for r in result["humans"].rows] == ["m1", "m2"] and result["humans"].verdicts == 1
    assert list(result["judges"]) == ["judge-x"] and result["judges"]["judge-x"].verdicts == 1
    assert result["agreement"]["judge-x"]["rate"] == 1.0
    rows = list(csv.DictReader(io.StringIO(export_csv(store, "alice"))))
    assert rows[0]["model_a"] == "m1" and rows[0]["vote"] == "a" and json.loads(rows[0]["judges"]) == {"judge-x": "a"}
    data = json.loads(export_json(store, "alice"))
    assert data["battles"][0]["votes"][0]["detail"]["first_order"]["output"] == "[[A]]"
    assert data["battles"][0]["category"] == "math"


def test_pick_pair_random_and_chosen():
    import random

    rng = random.Random(3)
    for _ in range(20):
        a, b = pick_pair(["x", "y", "z"], None, None, rng)
        assert a != b and {a, b} <= {"x", "y", "z"}
    assert pick_pair(["x", "y"], "y", None, rng) == ("y", "x")
    assert pick_pair(["x", "y"], None, "x", rng) == ("y", "x")
    with pytest.raises(CorralError, match="at least two"):
        pick_pair(["x"], None, None, rng)
    assert side_history([{"prompt": "p", "answer_a": "1", "answer_b": "2"}], "b") == [
        {"role": "user", "content": "p"}, {"role": "assistant", "content": "2"}]


def test_bundled_questions_cover_eight_categories():
    questions = load_questions()
    assert len(questions) >= 40 and len({q.id for q in questions}) == len(questions)
    categories = {q.category for q in questions}
    assert {"writing", "roleplay", "reasoning", "math", "coding", "extraction", "knowledge", "generic"} <= categories
    assert all(q.turns and all(t.strip() for t in q.turns) for q in questions)
    assert any(len(q.turns) > 1 for q in questions)
    assert QUESTIONS_FILE.name == "questions.yaml"


# --- battles between two tiny models ----------------------------------------------------------------

@pytest.fixture(scope="module")
def arena_ctx(arena_models_dir, tmp_path_factory):
    yield from arena_context(arena_models_dir, tmp_path_factory.mktemp("arena-data"))


def test_a_battle_gives_each_side_its_own_format_and_continues_both(arena_ctx):
    arena = Arena(arena_ctx, arena_ctx.store)
    battle = arena.start("alice", [ALPACA, KOALA], model_a=ALPACA, model_b=KOALA)
    with watch_generations(arena_ctx.engine) as watch:
        updates = list(arena.play_turn("alice", battle, "Name a colour.", GREEDY))
        second = list(arena.play_turn("alice", battle, "And another?", GREEDY))
    assert updates[-1].side is None and updates[-1].position == 0 and second[-1].position == 1
    assert {u.side for u in updates[:-1]} == {"a", "b"}
    prompts = watch.started_prompts
    assert len(prompts) == 4
    assert "### Instruction:" in prompts[0] and "### Instruction:" not in prompts[1]  # Alpaca, then Koala
    assert prompts[1].startswith("BEGINNING OF CONVERSATION: USER: Name a colour.")  # Koala
    # the second turn carries each side's own first answer
    stored = arena_ctx.store.get_battle("alice", battle)
    assert stored["model_a"] is None
    assert stored["turns"][0]["answer_a"].strip()[:8] in prompts[2] and "Name a colour." in prompts[3]
    assert stored["turns"][0]["answer_b"].strip()[:8] in prompts[3]
    voted = arena.vote("alice", battle, "tie")
    assert (voted["model_a"], voted["model_b"]) == (ALPACA, KOALA)
    with pytest.raises(CorralError, match="voted on"):
        list(arena.play_turn("alice", battle, "more", GREEDY))


def test_run_all_is_resumable_and_the_judge_grades_in_both_orders(arena_ctx):
    arena = Arena(arena_ctx, arena_ctx.store)
    questions = load_questions()[:3]
    seen: list[tuple[float, str]] = []
    first = run_all(arena, "carol", (ALPACA, KOALA), questions[:2], GREEDY, progress=lambda f, t: seen.append((f, t)))
    assert (first.answered, first.skipped, first.judged) == (2, 0, 0)
    assert seen[-1][0] == 1.0 and all(0 <= f <= 1 for f, _ in seen)
    with watch_generations(arena_ctx.engine) as watch:
        second = run_all(arena, "carol", (KOALA, ALPACA), questions, GREEDY, judge=ALPACA)
    assert (second.answered, second.skipped, second.judged) == (1, 2, 3)
    # 1 new question (its turns, both sides), then 3 battles judged twice each (both orders)
    assert len(watch.last) == 2 * len(questions[2].turns) + 6
    battles = arena_ctx.store.list_battles("carol")
    assert sorted(b["question_id"] for b in battles) == sorted(q.id for q in questions)
    assert all(set(b["judges"]) == {ALPACA} for b in battles)
    judged = arena_ctx.store.get_battle("carol", battles[0]["id"], reveal=True)["votes"][0]
    assert set(judged["detail"]) == {"first_order", "swapped_order"}
    assert judged["verdict"] in ("a", "b", "tie", "unparsed")  # a random tiny model: usually unparsed
    assert run_all(arena, "carol", (ALPACA, KOALA), questions, GREEDY, judge=ALPACA).judged == 0
    assert run_all(arena, "dave", (ALPACA, KOALA), questions[:1], GREEDY).answered == 1  # per user


def test_run_all_stops_when_cancelled(arena_ctx):
    arena = Arena(arena_ctx, arena_ctx.store)
    cancel = threading.Event()
    cancel.set()
    report = run_all(arena, "erin", (ALPACA, KOALA), load_questions()[:2], GREEDY, cancel=cancel)
    assert report.cancelled and report.answered == 0 and arena_ctx.store.list_battles("erin") == []


def test_judge_battle_stores_unparsed_for_nonsense(arena_ctx):
    arena = Arena(arena_ctx, arena_ctx.store)
    battle = arena.start("frank", [ALPACA, KOALA])
    list(arena.play_turn("frank", battle, "Hi", GREEDY))
    judgement = judge_battle(arena, "frank", battle, KOALA, SamplerParams(do_sample=False, max_new_tokens=4))
    assert judgement.verdict == combine(judgement.first_verdict, judgement.second_verdict)
    assert boards(arena_ctx.store, "frank", rounds=5)["judges"][KOALA].verdicts + \
        boards(arena_ctx.store, "frank", rounds=5)["judges"][KOALA].unparsed == 1


def test_the_arena_core_imports_no_ui_or_api():
    import ast

    folder = Path(__file__).resolve().parents[1] / "modules" / "core"
    for path in [*sorted((folder / "arena").glob("*.py")), folder / "store" / "arena.py"]:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            for name in names:
                assert not name.startswith(("gradio", "fastapi", "modules.ui", "modules.api")), f"{path.name}: {name}"


def test_an_answer_may_be_read_from_a_different_thread_at_each_step(arena_ctx):
    """Gradio advances a streaming event's generator in whichever worker thread is free."""
    arena = Arena(arena_ctx, arena_ctx.store)
    answer = arena.answer(ALPACA, [], "Hi", GREEDY)
    steps: list[object] = []

    def step() -> None:
        try:
            steps.append(next(answer, None))
        except Exception as err:  # noqa: BLE001 - checked below
            steps.append(err)

    while not steps or isinstance(steps[-1], str):
        worker = threading.Thread(target=step)  # a new thread for every step
        worker.start()
        worker.join(120)
    assert steps[-1] is None and len(steps) >= 2, steps[-1]
    assert isinstance(arena.complete(KOALA, [], "Hi", GREEDY), str)  # the lock was released
