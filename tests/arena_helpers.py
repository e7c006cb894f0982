"""Two tiny models with different prompt formats (Alpaca and Koala, by models/config.yaml) for arena tests.

A pytest plugin (listed in conftest.py): ``arena_models_dir`` builds them once per run; tests use the
folder read-only, or :func:`models_subset` for a folder holding only some of them.
"""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Iterator

import pytest

from tiny_models import build_tiny_llama

ALPACA, KOALA = "tiny-alpaca", "tiny-koala"


def build_arena_models(models: Path) -> Path:
    """``models`` holding tiny-alpaca and tiny-koala (different random weights) and their format rules."""
    build_tiny_llama(models / ALPACA, seed=1)
    build_tiny_llama(models / KOALA, seed=2)
    (models / "config.yaml").write_text(f"'{ALPACA}':\n  instruction_format: Alpaca\n"
                                        f"'{KOALA}':\n  instruction_format: Koala\n")
    return models


def models_subset(source: Path, target: Path, names: list[str]) -> Path:
    """``target`` with links to ``names`` in ``source`` and a copy of its config.yaml."""
    target.mkdir(parents=True, exist_ok=True)
    for name in names:
        (target / name).symlink_to(source / name, target_is_directory=True)
    shutil.copy(source / "config.yaml", target / "config.yaml")
    return target


@pytest.fixture(scope="session")
def arena_models_dir(tmp_path_factory) -> Path:
    """A models folder with tiny-alpaca and tiny-koala, built once per run. Do not write into it."""
    return build_arena_models(tmp_path_factory.mktemp("arena-models"))


def arena_context(models_dir: Path, user_data: Path) -> Iterator:
    """A context over the arena's tiny models (float32, CPU); unloads and closes the store afterwards."""
    from modules.core.config import AppConfig, LoaderOptions
    from modules.core.context import build_context

    ctx = build_context(AppConfig(loader=LoaderOptions(dtype="float32", cpu=True), models_dir=models_dir,
                                  user_data_dir=user_data))
    yield ctx
    ctx.models.unload()
    ctx.store.close()
