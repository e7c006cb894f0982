"""Two tiny models with different prompt formats (Alpaca and Koala, by models/config.yaml) for arena tests."""
from __future__ import annotations

from pathlib import Path

from tiny_models import build_tiny_llama

ALPACA, KOALA = "tiny-alpaca", "tiny-koala"


def build_arena_models(models: Path) -> Path:
    """``models`` holding tiny-alpaca and tiny-koala (different random weights) and their format rules."""
    build_tiny_llama(models / ALPACA, seed=1)
    build_tiny_llama(models / KOALA, seed=2)
    (models / "config.yaml").write_text(f"'{ALPACA}':\n  instruction_format: Alpaca\n"
                                        f"'{KOALA}':\n  instruction_format: Koala\n")
    return models
