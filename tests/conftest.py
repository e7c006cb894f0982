"""Fixtures shared by every test module.

Tests use the real default model (SmolLM2-135M-Instruct, converted once into
models/ and reused by later runs) and tiny models built on the spot
(``tiny_models.py``).

Session fixtures for new tests (each made at most once per run):
- ``default_model_dir``: the converted default model's folder in the repository's models/.
- ``default_model``: the default model loaded once (float32, CPU) as a
  :class:`session_model.SharedModel`; ``default_model.lend(ctx)`` puts it into any context of
  yours (your own user data, extensions, settings) without another load.
- ``default_ctx``: a ready context with the shared model loaded and its own temporary user data,
  for tests that read prompts or generate but do not change the context (no extensions enabled,
  no settings changed, no load or unload). Tests that change it build their own and ``lend``.
- ``tiny_llama_dir``: a folder holding ``tiny-llama``, a random ~100k-parameter LLaMA
  (``tiny_models.build_tiny_llama``), for tests that do not look at the text's content.
- ``subprocess_env``: the environment for any process a test starts (OMP_WAIT_POLICY=PASSIVE);
  ``processes.child_env(**extra)`` gives the same with your own additions.
"""
from __future__ import annotations

import os
import sys

# torch's OpenMP threads spin while they wait unless told otherwise before torch is first
# imported; on two shared cores, pytest, the app's server threads and a browser then steal each
# other's time (the same tests ran 2-2.7x slower). Set here, before anything imports torch.
os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
TORCH_IMPORTED_BEFORE_CONFTEST = "torch" in sys.modules

from pathlib import Path  # noqa: E402
from typing import Iterator  # noqa: E402

import pytest  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
# ``python -m pytest`` from the repository root finds ``modules`` by itself;
# a bare ``pytest`` or a run from elsewhere needs the root on the path.
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

pytest_plugins = ["family_fixtures",  # real LLaMA vocabulary and tiny family models (family_fixtures.py)
                  "arena_helpers"]  # two tiny models with different formats for the arena (arena_helpers.py)


@pytest.fixture(scope="session")
def repo_root() -> Path:
    """The repository's top folder (where app.py lives)."""
    return REPO_ROOT


@pytest.fixture(scope="session")
def subprocess_env() -> dict[str, str]:
    """The environment for processes tests start: this one's, OMP_WAIT_POLICY=PASSIVE, no Gradio analytics."""
    from processes import child_env

    return child_env(GRADIO_ANALYTICS_ENABLED="False")


@pytest.fixture(scope="session")
def default_model_dir(repo_root: Path) -> Path:
    """The converted SmolLM2-135M-Instruct folder in the repository's models/ (made once, ~30 s)."""
    from modules.core.default_model import ensure_default_model

    return ensure_default_model(repo_root / "models")


@pytest.fixture(scope="session")
def default_model(default_model_dir: Path):
    """The default model loaded once for the session (float32 on the CPU); ``.lend(ctx)`` shares it."""
    from session_model import load_shared_model

    shared = load_shared_model(default_model_dir.parent)
    yield shared
    shared.close()


@pytest.fixture(scope="session")
def default_ctx(default_model, default_model_dir: Path, tmp_path_factory) -> Iterator:
    """A context over models/ with the shared default model and its own temporary user data (read-only use)."""
    from api_helpers import default_context

    ctx = default_context(default_model_dir.parent, tmp_path_factory.mktemp("default-ctx"), shared=default_model)
    yield ctx
    ctx.models.unload()
    ctx.store.close()


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory) -> Path:
    """A models folder holding ``tiny-llama`` (random weights, own SentencePiece tokenizer). Do not write into it."""
    from tiny_models import build_tiny_llama

    models = tmp_path_factory.mktemp("tiny-models")
    build_tiny_llama(models / "tiny-llama")
    return models
