"""Battles: two anonymous models answer the same prompts, turn after turn, then a vote.

Every answer goes through :func:`answer`: make sure model X is the one generating,
then ``prepare_chat`` (so X gets its own prompt format, resolved as for any chat) and
the engine. Today that means loading X when another model is loaded (models/config.yaml
and the remote loader's catalogue work as on the Model tab); when the model manager
keeps several models resident, only :func:`ensure_model` changes.
"""
from __future__ import annotations

import random
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace

from modules.core.chat import ChatSettings, Turn
from modules.core.errors import CorralError
from modules.core.extensions.run import run_generation
from modules.core.generation import prepare_chat
from modules.core.sampling import SamplerParams

Progress = Callable[[float, str], None]


def _quiet(_fraction: float, _text: str) -> None:
    return None


@dataclass
class TurnUpdate:
    """Both sides' answers so far; ``side`` is the one writing ("a", "b"), None once the turn is stored."""

    answer_a: str = ""
    answer_b: str = ""
    side: str | None = "a"
    position: int | None = None  # the stored turn's position, once stored
    notes: list[str] = field(default_factory=list)


class Arena:
    """Battles for one context: holds the lock that keeps a side's model loaded while it answers."""

    def __init__(self, ctx: object, store: object) -> None:
        self.ctx, self.store = ctx, store
        # One side generating at a time: loading X must not swap Y out. A plain Lock, not an RLock: a
        # streaming answer is a generator that servers (Gradio, Starlette) may advance from a different
        # worker thread at each step, and only a Lock may be released by another thread.
        self._lock = threading.Lock()

    # -- models ---------------------------------------------------------------------------
    def ensure_model(self, name: str, progress: Progress = _quiet) -> None:
        """Make ``name`` the loaded model (a no-op when it is already)."""
        if self.ctx.models.loaded_name != name:
            progress(0.0, f"Loading {name}")
            self.ctx.models.load(name, progress=progress)

    def answer(self, model: str, history: list[dict], prompt: str, params: SamplerParams,
               cancel: threading.Event | None = None, progress: Progress = _quiet) -> Iterator[str]:
        """``model``'s reply to ``prompt`` after ``history`` (prompt-form turns), as cumulative text."""
        with self._lock:
            self.ensure_model(model, progress)
            prepared = prepare_chat(self.ctx, history, Turn(user_message=prompt), ChatSettings(mode="instruct"),
                                    params, interface="arena")
            if cancel is not None:
                prepared.request.cancel = cancel
            generation = run_generation(self.ctx, prepared)
            for _delta in generation:
                yield generation.reply
            if self.ctx.models.loaded_name != model:
                raise CorralError(f"The model was changed while {model} was answering; start the battle again.")
            yield generation.shown

    def complete(self, model: str, history: list[dict], prompt: str, params: SamplerParams,
                 cancel: threading.Event | None = None) -> str:
        text = ""
        for text in self.answer(model, history, prompt, params, cancel):
            pass
        return text

    # -- battles --------------------------------------------------------------------------
    def start(self, user: str, enabled: list[str], model_a: str | None = None, model_b: str | None = None,
              question_id: str | None = None, category: str | None = None, rng: random.Random | None = None) -> int:
        """A new battle between ``model_a`` and ``model_b``, or two picked at random from ``enabled``."""
        model_a, model_b = pick_pair(enabled, model_a, model_b, rng or random.Random())
        return self.store.create_battle(user, model_a, model_b, question_id, category)

    def play_turn(self, user: str, battle_id: int, prompt: str, params: SamplerParams,
                  cancel: threading.Event | None = None, progress: Progress = _quiet) -> Iterator[TurnUpdate]:
        """Side A then side B answer ``prompt`` (each after its own earlier turns); the turn is stored at the end."""
        if not (prompt or "").strip():
            raise CorralError("The prompt is empty: write a question for both models.")
        battle = self.store.get_battle(user, battle_id, reveal=True)
        if battle["vote"] is not None:
            raise CorralError(f"Battle {battle_id} has been voted on; start a new battle to go on.")
        update = TurnUpdate()
        for side in ("a", "b"):
            update.side = side
            history = side_history(battle["turns"], side)
            for text in self.answer(battle[f"model_{side}"], history, prompt, params, cancel, progress):
                setattr(update, f"answer_{side}", text)
                yield replace(update)
        update.side = None
        update.position = self.store.add_battle_turn(user, battle_id, prompt, update.answer_a, update.answer_b)
        yield replace(update)

    def vote(self, user: str, battle_id: int, verdict: str) -> dict:
        """Store the user's vote; the returned battle names both models."""
        return self.store.vote_battle(user, battle_id, verdict)


def pick_pair(enabled: list[str], model_a: str | None, model_b: str | None, rng: random.Random) -> tuple[str, str]:
    """The chosen models, the missing ones drawn at random from ``enabled`` (sides in random order)."""
    pool = [m for m in dict.fromkeys(enabled) if m]
    if model_a and model_b:
        if model_a == model_b:
            raise CorralError("Pick two different models for a battle.")
        return model_a, model_b
    chosen = model_a or model_b
    others = [m for m in pool if m != chosen]
    if chosen:
        if not others:
            raise CorralError("Enable at least one more model to battle against the chosen one.")
        other = rng.choice(others)
        return (chosen, other) if model_a else (other, chosen)
    if len(pool) < 2:
        raise CorralError("Enable at least two models for the arena (pick them in the list of models).")
    first, second = rng.sample(pool, 2)
    return first, second


def side_history(turns: list[dict], side: str) -> list[dict]:
    """One side's conversation so far, in the prompt-form history the chat builder takes."""
    history: list[dict] = []
    for turn in turns:
        history += [{"role": "user", "content": turn["prompt"]},
                    {"role": "assistant", "content": turn[f"answer_{side}"]}]
    return history


def arena_of(ctx: object) -> Arena:
    """The context's arena (made on first use, kept in ``ctx.services``)."""
    arena = ctx.services.get("arena")
    if arena is None:
        from modules.core.store import Store

        store = getattr(ctx, "store", None) or ctx.services.get("store")
        if store is None:
            store = ctx.services["store"] = Store(ctx.config.user_data_dir / "corral.db")
        arena = ctx.services.setdefault("arena", Arena(ctx, store))
    return arena
