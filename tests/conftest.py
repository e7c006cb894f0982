"""Fixtures shared by every test module.

Tests use the real default model (SmolLM2-135M-Instruct, converted once into
models/ and reused by later runs) and tiny models built on the spot
(``tiny_models.py``).
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
# ``python -m pytest`` from the repository root finds ``modules`` by itself;
# a bare ``pytest`` or a run from elsewhere needs the root on the path.
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

pytest_plugins = ["family_fixtures"]  # real LLaMA vocabulary and tiny family models (family_fixtures.py)


@pytest.fixture(scope="session")
def repo_root() -> Path:
    """The repository's top folder (where app.py lives)."""
    return REPO_ROOT


@pytest.fixture(scope="session")
def default_model_dir(repo_root: Path) -> Path:
    """The converted SmolLM2-135M-Instruct folder in the repository's models/ (made once, ~30 s)."""
    from modules.core.default_model import ensure_default_model

    return ensure_default_model(repo_root / "models")
