"""The question set and "Run all questions": a whole comparison of two models, unattended.

Resumable: a question already answered by the pair (in either side order) is skipped,
and a battle that judge already graded is not graded again. Each model answers every
pending question in one go before the other starts, so a run loads each model once
(not once per question) while models are swapped rather than resident.
"""
from __future__ import annotations

import random
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from modules.core.arena.battle import Arena, side_history
from modules.core.arena.judge import JUDGE_PARAMS, judge_battle
from modules.core.errors import CorralError
from modules.core.sampling import SamplerParams

QUESTIONS_FILE = Path(__file__).with_name("questions.yaml")
USER_QUESTIONS = "arena_questions.yaml"  # the user's own questions, in the user data folder
Progress = Callable[[float, str], None]


@dataclass(frozen=True)
class Question:
    id: str
    category: str
    turns: tuple[str, ...]


@dataclass
class RunReport:
    answered: int = 0
    skipped: int = 0
    judged: int = 0
    cancelled: bool = False
    battle_ids: list[int] = field(default_factory=list)

    def text(self) -> str:
        done = "Stopped" if self.cancelled else "Done"
        return (f"{done}: {self.answered} questions answered, {self.skipped} skipped (answered before), "
                f"{self.judged} battles judged.")


def load_questions(path: Path = QUESTIONS_FILE, extra: Path | None = None) -> list[Question]:
    """The bundled questions, then those of ``extra`` (same shape) when that file exists."""
    questions = _read(path)
    if extra is not None and extra.is_file():
        questions += _read(extra)
    seen: set[str] = set()
    for q in questions:
        if q.id in seen:
            raise CorralError(f"Question id {q.id!r} is used twice; give each question its own id.")
        seen.add(q.id)
    return questions


def questions_for(user_data_dir: Path, categories: list[str] | None = None) -> list[Question]:
    """The bundled questions and the user's own (``user_data/arena_questions.yaml``), of ``categories`` if given."""
    questions = load_questions(QUESTIONS_FILE, Path(user_data_dir) / USER_QUESTIONS)
    return [q for q in questions if q.category in categories] if categories else questions


def _read(path: Path) -> list[Question]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        return [Question(str(q["id"]), str(q["category"]), tuple(str(t) for t in q["turns"]))
                for q in data.get("questions", [])]
    except (OSError, yaml.YAMLError, KeyError, TypeError, AttributeError) as err:
        raise CorralError(f"The question file {path} could not be read ({err}). Each question needs "
                          "an id, a category and a list of turns.") from None


def pending(arena: Arena, user: str, pair: tuple[str, str], questions: list[Question]) -> list[Question]:
    """The questions this pair has not answered yet for ``user``."""
    done = {row["question_id"] for row in arena.store.list_battles(user, pair) if row["turns"]}
    return [q for q in questions if q.id not in done]


def answer_all(arena: Arena, model: str, questions: list[Question], params: SamplerParams,
               cancel: threading.Event, report: Callable[[int], None]) -> dict[str, list[str]]:
    """``model``'s answers to every turn of every question (stops early when cancelled)."""
    answers: dict[str, list[str]] = {}
    for q in questions:
        if cancel.is_set():
            break
        replies: list[str] = []
        for prompt in q.turns:
            turns = [{"prompt": p, "answer_x": a} for p, a in zip(q.turns, replies)]
            replies.append(arena.complete(model, side_history(turns, "x"), prompt, params, cancel))
        if not cancel.is_set():
            answers[q.id] = replies
        report(1)
    return answers


def run_all(arena: Arena, user: str, pair: tuple[str, str], questions: list[Question], params: SamplerParams,
            judge: str | None = None, progress: Progress | None = None, cancel: threading.Event | None = None,
            seed: int = 0) -> RunReport:
    """Both models answer every pending question (sides drawn at random per question), then ``judge``
    (if any) grades every battle of the pair it has not graded yet."""
    cancel = cancel or threading.Event()
    progress = progress or (lambda _f, _t: None)
    todo = pending(arena, user, pair, questions)
    run = RunReport(skipped=len(questions) - len(todo))
    to_judge = _unjudged(arena, user, pair, judge) if judge else []
    total = max(2 * len(todo) + (len(to_judge) + len(todo) if judge else 0), 1)
    steps = [0]

    def step(n: int, text: str) -> None:
        steps[0] += n
        progress(min(steps[0] / total, 1.0), text)

    answers = {}
    for model in pair:
        answers[model] = answer_all(arena, model, todo, params, cancel, lambda n, m=model: step(n, f"{m} answering"))
    rng = random.Random(seed)
    for q in todo:
        if q.id not in answers[pair[0]] or q.id not in answers[pair[1]]:
            continue
        a, b = pair if rng.random() < 0.5 else pair[::-1]
        battle_id = arena.store.create_battle(user, a, b, q.id, q.category)
        for prompt, answer_a, answer_b in zip(q.turns, answers[a][q.id], answers[b][q.id]):
            arena.store.add_battle_turn(user, battle_id, prompt, answer_a, answer_b)
        run.answered += 1
        run.battle_ids.append(battle_id)
        to_judge.append(battle_id)
    if judge:
        for battle_id in to_judge:
            if cancel.is_set():
                break
            judge_battle(arena, user, battle_id, judge, JUDGE_PARAMS, cancel)
            run.judged += 1
            step(1, f"{judge} judging")
    run.cancelled = cancel.is_set()
    progress(1.0, run.text())
    return run


def _unjudged(arena: Arena, user: str, pair: tuple[str, str], judge: str) -> list[int]:
    return [row["id"] for row in arena.store.list_battles(user, pair) if row["turns"] and judge not in row["judges"]]
