"""The leaderboard and exports, read from the store: human votes and each judge kept apart."""
from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field

from modules.core.arena.judge import agreement
from modules.core.arena.ratings import leaderboard, outcomes_from, win_rates

HUMANS = "humans"


@dataclass
class Board:
    """One leaderboard: ``rows`` best first, the win-rate matrix, and how many verdicts went in."""

    source: str  # "humans" or a judge model's name
    rows: list[dict] = field(default_factory=list)
    names: list[str] = field(default_factory=list)
    matrix: list[list[float | None]] = field(default_factory=list)
    verdicts: int = 0
    unparsed: int = 0

    def as_dict(self) -> dict:
        return {"source": self.source, "rows": self.rows, "win_rates": {"models": self.names, "matrix": self.matrix},
                "verdicts": self.verdicts, "unparsed": self.unparsed}


def boards(store: object, user: str | None, rounds: int = 200) -> dict:
    """{"humans": Board, "judges": {name: Board}, "agreement": {...}} from ``user``'s verdicts
    (``user=None``: every user's)."""
    rows = store.arena_outcomes(user)
    judges = sorted({r["judge"] for r in rows if r["judge"] is not None})
    return {"humans": _board(HUMANS, [r for r in rows if r["judge"] is None], rounds),
            "judges": {j: _board(j, [r for r in rows if r["judge"] == j], rounds) for j in judges},
            "agreement": agreement(rows)}


def _board(source: str, rows: list[dict], rounds: int) -> Board:
    outcomes = outcomes_from(rows)
    names, matrix = win_rates(outcomes)
    return Board(source, leaderboard(outcomes, rounds=rounds), names, matrix, len(outcomes),
                 sum(1 for r in rows if r["verdict"] == "unparsed"))


CSV_COLUMNS = ("battle_id", "created_at", "question_id", "category", "model_a", "model_b", "turn", "prompt",
               "answer_a", "answer_b", "vote", "judges")


def export_json(store: object, user: str) -> str:
    return json.dumps({"format": "corral-arena-1", "battles": store.export_battles(user)}, ensure_ascii=False,
                      indent=1)


def export_csv(store: object, user: str) -> str:
    """One row per turn; the battle's human vote and the judges' verdicts (JSON) on every row of it."""
    out = io.StringIO()
    writer = csv.DictWriter(out, CSV_COLUMNS)
    writer.writeheader()
    for battle in store.export_battles(user):
        judges = {v["judge"]: v["verdict"] for v in battle["votes"] if v["judge"] is not None}
        for turn in battle["turns"]:
            writer.writerow({"battle_id": battle["id"], "created_at": battle["created_at"],
                             "question_id": battle["question_id"] or "", "category": battle["category"] or "",
                             "model_a": battle["model_a"], "model_b": battle["model_b"], "turn": turn["position"],
                             "prompt": turn["prompt"], "answer_a": turn["answer_a"], "answer_b": turn["answer_b"],
                             "vote": battle["vote"] or "", "judges": json.dumps(judges, ensure_ascii=False)})
    return out.getvalue()
