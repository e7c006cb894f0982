"""Arena battles, their turns and their verdicts, per user.

A battle is two models (side A and side B) answering the same prompts, turn by
turn. A verdict is one human vote per battle (``judge`` is None) or one per judge
model. Every method takes the user's name and sees only that user's battles,
except :meth:`ArenaMixin.arena_outcomes` with ``user=None`` (the counts of every
user's votes, for a shared leaderboard; no prompt or answer text).
"""
from __future__ import annotations

import json
import sqlite3
from typing import Any

from modules.core.errors import CorralError
from modules.core.store.base import NotFoundError, StoreBase, now

VERDICTS = ("a", "b", "tie", "both_bad", "unparsed")
HUMAN_VERDICTS = ("a", "b", "tie", "both_bad")


class ArenaMixin(StoreBase):
    def create_battle(self, user: str, model_a: str, model_b: str, question_id: str | None = None,
                      category: str | None = None) -> int:
        if not model_a or not model_b or model_a == model_b:
            raise CorralError(f"A battle needs two different models, not {model_a!r} and {model_b!r}.")
        user_id = self.ensure_user(user)
        with self._write() as conn:
            cursor = conn.execute(
                "INSERT INTO arena_battles (user_id, model_a, model_b, question_id, category, created_at, updated_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)", (user_id, model_a, model_b, question_id, category, now(), now()))
            return int(cursor.lastrowid)

    def add_battle_turn(self, user: str, battle_id: int, prompt: str, answer_a: str, answer_b: str) -> int:
        """Append a turn (both sides' answers to ``prompt``); returns its position. Refused after the vote."""
        user_id = self.ensure_user(user)
        with self._write() as conn:
            self._owned_battle(conn, user_id, battle_id)
            if self._human_vote(conn, battle_id) is not None:
                raise CorralError(f"Battle {battle_id} has been voted on; start a new battle to go on.")
            row = conn.execute("SELECT MAX(position) FROM arena_turns WHERE battle_id = ?", (battle_id,)).fetchone()
            position = 0 if row[0] is None else row[0] + 1
            conn.execute("INSERT INTO arena_turns (battle_id, position, prompt, answer_a, answer_b) "
                         "VALUES (?, ?, ?, ?, ?)", (battle_id, position, prompt, answer_a, answer_b))
            conn.execute("UPDATE arena_battles SET updated_at = ? WHERE id = ?", (now(), battle_id))
            return position

    def get_battle(self, user: str, battle_id: int, reveal: bool | None = None) -> dict[str, Any]:
        """The battle with its turns and verdicts. Model names are left out (None) until the human
        vote is in, unless ``reveal`` says otherwise."""
        user_id = self.ensure_user(user)
        with self._read() as conn:
            battle = dict(self._owned_battle(conn, user_id, battle_id))
            battle["turns"] = [dict(r) for r in conn.execute(
                "SELECT position, prompt, answer_a, answer_b FROM arena_turns WHERE battle_id = ? ORDER BY position",
                (battle_id,))]
            battle["votes"] = [_vote_row(r) for r in conn.execute(
                "SELECT judge, verdict, detail, created_at FROM arena_votes WHERE battle_id = ? ORDER BY id",
                (battle_id,))]
        battle.pop("user_id", None)
        human = next((v for v in battle["votes"] if v["judge"] is None), None)
        battle["vote"] = human["verdict"] if human else None
        if not (reveal if reveal is not None else human is not None):
            battle["model_a"] = battle["model_b"] = None
        return battle

    def vote_battle(self, user: str, battle_id: int, verdict: str) -> dict[str, Any]:
        """The user's vote (a, b, tie, both_bad), once per battle; returns the battle, names revealed."""
        if verdict not in HUMAN_VERDICTS:
            raise CorralError(f"Unknown vote {verdict!r}: vote one of {', '.join(HUMAN_VERDICTS)}.")
        user_id = self.ensure_user(user)
        with self._write() as conn:
            self._owned_battle(conn, user_id, battle_id)
            if not conn.execute("SELECT 1 FROM arena_turns WHERE battle_id = ?", (battle_id,)).fetchone():
                raise CorralError(f"Battle {battle_id} has no answers yet; wait for both sides before voting.")
            if self._human_vote(conn, battle_id) is not None:
                raise CorralError(f"Battle {battle_id} has already been voted on; each battle takes one vote.")
            conn.execute("INSERT INTO arena_votes (battle_id, judge, verdict, created_at) VALUES (?, NULL, ?, ?)",
                         (battle_id, verdict, now()))
        return self.get_battle(user, battle_id)

    def save_judgement(self, user: str, battle_id: int, judge: str, verdict: str, detail: dict) -> None:
        """A judge model's verdict on a battle (replacing its earlier one), with its raw outputs in ``detail``."""
        if verdict not in VERDICTS or not judge:
            raise CorralError(f"A judgement needs a judge name and one of {', '.join(VERDICTS)}, not {verdict!r}.")
        user_id = self.ensure_user(user)
        with self._write() as conn:
            self._owned_battle(conn, user_id, battle_id)
            conn.execute("DELETE FROM arena_votes WHERE battle_id = ? AND judge = ?", (battle_id, judge))
            conn.execute("INSERT INTO arena_votes (battle_id, judge, verdict, detail, created_at) VALUES (?, ?, ?, ?, ?)",
                         (battle_id, judge, verdict, json.dumps(detail, ensure_ascii=False), now()))

    def list_battles(self, user: str, model_pair: tuple[str, str] | None = None) -> list[dict[str, Any]]:
        """The user's battles, oldest first: id, models, question, category, turns, human vote, judges."""
        user_id = self.ensure_user(user)
        query = ("SELECT b.id, b.model_a, b.model_b, b.question_id, b.category, b.created_at, "
                 "(SELECT COUNT(*) FROM arena_turns t WHERE t.battle_id = b.id) AS turns, "
                 "(SELECT verdict FROM arena_votes v WHERE v.battle_id = b.id AND v.judge IS NULL) AS vote "
                 "FROM arena_battles b WHERE b.user_id = ?")
        args: list[Any] = [user_id]
        if model_pair is not None:
            query += " AND ((b.model_a = ? AND b.model_b = ?) OR (b.model_a = ? AND b.model_b = ?))"
            args += [model_pair[0], model_pair[1], model_pair[1], model_pair[0]]
        with self._read() as conn:
            rows = [dict(r) for r in conn.execute(query + " ORDER BY b.id", args)]
            for row in rows:
                row["judges"] = {r["judge"]: r["verdict"] for r in conn.execute(
                    "SELECT judge, verdict FROM arena_votes WHERE battle_id = ? AND judge IS NOT NULL", (row["id"],))}
        return rows

    def arena_outcomes(self, user: str | None) -> list[dict[str, Any]]:
        """Every verdict with a battle's two models, oldest first: battle_id, model_a, model_b, judge
        (None: the human vote), verdict. ``user=None``: every user's."""
        query = ("SELECT b.id AS battle_id, b.model_a, b.model_b, v.judge, v.verdict, v.created_at "
                 "FROM arena_votes v JOIN arena_battles b ON b.id = v.battle_id")
        args: tuple = ()
        if user is not None:
            query += " WHERE b.user_id = ?"
            args = (self.ensure_user(user),)
        with self._read() as conn:
            return [dict(r) for r in conn.execute(query + " ORDER BY v.created_at, v.id", args)]

    def export_battles(self, user: str) -> list[dict[str, Any]]:
        """Every battle of the user with turns and verdicts, names shown (for CSV / JSON export)."""
        return [self.get_battle(user, row["id"], reveal=True) for row in self.list_battles(user)]

    @staticmethod
    def _owned_battle(conn: sqlite3.Connection, user_id: int, battle_id: int) -> sqlite3.Row:
        row = conn.execute("SELECT * FROM arena_battles WHERE id = ? AND user_id = ?", (battle_id, user_id)).fetchone()
        if row is None:
            raise NotFoundError(f"Battle {battle_id} was not found. Start a new battle.")
        return row

    @staticmethod
    def _human_vote(conn: sqlite3.Connection, battle_id: int) -> str | None:
        row = conn.execute("SELECT verdict FROM arena_votes WHERE battle_id = ? AND judge IS NULL",
                           (battle_id,)).fetchone()
        return row[0] if row else None


def _vote_row(row: sqlite3.Row) -> dict[str, Any]:
    vote = dict(row)
    try:
        vote["detail"] = json.loads(vote["detail"]) if vote["detail"] else {}
    except ValueError:
        vote["detail"] = {"raw": vote["detail"]}
    return vote
