"""A model as judge: it reads both sides' conversations and says which answered better.

Each battle is judged twice, with the sides shown in both orders, so a judge that
favours the first (or second) answer cancels out: the verdict stands only when both
orders agree; otherwise it is a tie. An output without a readable verdict is
"unparsed" and counts for nobody. Judge verdicts are stored beside the human vote
and never mixed into the human leaderboard.
"""
from __future__ import annotations

import re
import threading
from dataclasses import dataclass

from modules.core.errors import CorralError
from modules.core.sampling import SamplerParams

JUDGE_INSTRUCTIONS = """You are the referee of a blind comparison between two AI assistants, called A and B.
A user asked both of them the same questions; their answers follow. Decide which assistant served the user better.
Weigh, in this order: whether the answer is correct and does what was asked, whether it is helpful and complete
for this user, and whether it is clear. Ignore which answer comes first, how long an answer is, and any claim
an assistant makes about itself. Write two or three sentences comparing them, then end with your verdict on a
line of its own, written exactly as one of these: [[A]] when A is better, [[B]] when B is better, [[C]] when they
are equally good or equally bad."""

VERDICT_MARK = re.compile(r"\[\[\s*(A|B|C|TIE)\s*\]\]", re.IGNORECASE)
VERDICT_WORDS = re.compile(r"verdict\s*(?:is)?\s*[:\-]?\s*\**\s*(?:assistant\s+)?\[?\s*(A|B|C|tie)\b\s*\]?",
                           re.IGNORECASE)
JUDGE_PARAMS = SamplerParams(do_sample=False, max_new_tokens=384)


@dataclass
class Judgement:
    verdict: str  # "a", "b", "tie" or "unparsed"
    first: str  # the judge's output with A shown first
    second: str  # ... with the sides swapped (B shown as "A")
    first_verdict: str
    second_verdict: str  # already mapped back to the real sides

    def detail(self) -> dict:
        return {"first_order": {"output": self.first, "verdict": self.first_verdict},
                "swapped_order": {"output": self.second, "verdict": self.second_verdict}}


def parse_verdict(text: str) -> str:
    """"a", "b", "tie" from a judge's output, else "unparsed".

    The last ``[[A]]`` / ``[[B]]`` / ``[[C]]`` (or ``[[tie]]``) wins, since judges often repeat the
    instructions before answering; without one, a last "verdict: A" line is accepted.
    """
    if not isinstance(text, str):
        return "unparsed"
    marks = VERDICT_MARK.findall(text)
    if not marks:
        marks = VERDICT_WORDS.findall(text)
    if not marks:
        return "unparsed"
    last = marks[-1].upper()
    return {"A": "a", "B": "b"}.get(last, "tie")


def swap_verdict(verdict: str) -> str:
    return {"a": "b", "b": "a"}.get(verdict, verdict)


def combine(first: str, second_mapped: str) -> str:
    """Both orders' verdicts (on the real sides) -> one: agreed, else tie; unparsed if either is."""
    if "unparsed" in (first, second_mapped):
        return "unparsed"
    return first if first == second_mapped else "tie"


def judge_prompt(turns: list[dict], first: str, second: str) -> str:
    """The judge's question: the instructions, then each turn with side ``first`` shown as A."""
    parts = [JUDGE_INSTRUCTIONS, ""]
    for number, turn in enumerate(turns, start=1):
        parts += [f"=== User question {number} ===", turn["prompt"].strip(),
                  f"=== Assistant A, answer {number} ===", turn[f"answer_{first}"].strip() or "(no answer)",
                  f"=== Assistant B, answer {number} ===", turn[f"answer_{second}"].strip() or "(no answer)", ""]
    parts.append("Compare the two assistants, then give your verdict: [[A]], [[B]] or [[C]].")
    return "\n".join(parts)


def judge_turns(arena: object, judge: str, turns: list[dict], params: SamplerParams = JUDGE_PARAMS,
                cancel: threading.Event | None = None) -> Judgement:
    """Ask model ``judge`` (through the arena, so it is loaded like a side) about ``turns`` in both orders."""
    first = arena.complete(judge, [], judge_prompt(turns, "a", "b"), params, cancel)
    second = arena.complete(judge, [], judge_prompt(turns, "b", "a"), params, cancel)
    first_verdict, second_verdict = parse_verdict(first), swap_verdict(parse_verdict(second))
    return Judgement(combine(first_verdict, second_verdict), first, second, first_verdict, second_verdict)


def judge_battle(arena: object, user: str, battle_id: int, judge: str, params: SamplerParams = JUDGE_PARAMS,
                 cancel: threading.Event | None = None) -> Judgement:
    """Judge a stored battle and store the verdict (the judge's model name as ``judge``)."""
    battle = arena.store.get_battle(user, battle_id, reveal=True)
    if not battle["turns"]:
        raise CorralError(f"Battle {battle_id} has no answers to judge yet.")
    judgement = judge_turns(arena, judge, battle["turns"], params, cancel)
    arena.store.save_judgement(user, battle_id, judge, judgement.verdict, judgement.detail())
    return judgement


def agreement(rows: list[dict]) -> dict[str, dict[str, float]]:
    """Per judge, over battles with both a human vote and a parsed judge verdict: how often they agree.

    "Both bad" from a human counts as a tie. Returns {judge: {"battles": n, "agree": k, "rate": k/n}}.
    """
    human = {r["battle_id"]: ("tie" if r["verdict"] == "both_bad" else r["verdict"])
             for r in rows if r["judge"] is None}
    out: dict[str, dict[str, float]] = {}
    for r in rows:
        if r["judge"] is None or r["verdict"] == "unparsed" or r["battle_id"] not in human:
            continue
        entry = out.setdefault(r["judge"], {"battles": 0, "agree": 0, "rate": 0.0})
        entry["battles"] += 1
        entry["agree"] += int(human[r["battle_id"]] == r["verdict"])
        entry["rate"] = entry["agree"] / entry["battles"]
    return out
