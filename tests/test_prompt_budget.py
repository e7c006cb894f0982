"""The history budget: the fewest oldest turns dropped so the prompt fits, found in a logarithmic number of counts."""
from __future__ import annotations

import pytest

from modules.core.chat import ChatSettings, Turn, build_prompt
from modules.core.templates import InstructionFormat

FMT = InstructionFormat("Plain", "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
                        "{% if add_generation_prompt %}assistant:{% endif %}", [], "test")


def history(n: int) -> list[dict]:
    return [{"role": "user" if i % 2 == 0 else "assistant", "content": f"message {i} " + "x" * (i % 7)}
            for i in range(n)]


def fewest_dropped_linear(turns: list[dict], limit: int) -> int:
    """The old way, one count per dropped exchange: the reference answer."""
    dropped = 0
    while True:
        plan = build_prompt(turns[dropped:], Turn(user_message="last"), ChatSettings(), FMT, len, 10**9)
        if dropped >= len(turns) or len(plan.prompt) <= limit:
            return dropped
        dropped += 2 if len(turns) - dropped >= 2 else 1


@pytest.mark.parametrize("n,limit", [(0, 5), (1, 5), (2, 40), (7, 60), (40, 300), (41, 301), (200, 10**9), (601, 900)])
def test_the_budget_drops_exactly_as_many_turns_as_needed(n, limit):
    turns = history(n)
    counts: list[int] = []

    def count(text: str) -> int:
        counts.append(1)
        return len(text)

    plan = build_prompt(turns, Turn(user_message="last"), ChatSettings(), FMT, count, limit)
    assert plan.dropped_turns == fewest_dropped_linear(turns, limit)
    assert plan.prompt.endswith("user: last\nassistant:")
    assert len(counts) <= 2 * max(n, 1).bit_length() + 2  # 601 turns: at most 22 counts, not ~300
