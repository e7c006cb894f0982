"""The one place where prompt text becomes token ids, for every local loader.

A prompt is a list of :class:`Segment`: text the instruction format wrote (``trusted``), and
text that came from a person -- a message, a character card, a document (not trusted). Only
trusted text may contain control tokens: ``<s>``/``</s>`` and the tokenizer's own special
texts (``<|im_end|>``, ``<|prompter|>``...) written by a template become their ids. The same
characters typed by a user stay text, so nobody can end the model's turn or forge a system
turn by typing.

Plain text between control tokens is encoded as one run, the way the 2023 fine-tunes'
training code tokenized whole conversations: a run that follows a control token starts a new
SentencePiece piece (``</s>USER:`` -> ``</s>``, ``▁USER``, ``:``), and Meta's per-exchange
encoding of LLaMA-2-chat (``<s>[INST] … </s>``) falls out of the same rule.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable, Iterable, Sequence

# The generic texts a template writes for "the model's BOS/EOS, whatever it is called".
GENERIC_BOS, GENERIC_EOS = "<s>", "</s>"


@dataclass(frozen=True)
class Segment:
    """A piece of prompt text; ``trusted``: written by the format, so its control texts are tokens."""

    text: str
    trusted: bool = True


def joined(segments: Iterable[Segment]) -> str:
    return "".join(s.text for s in segments)


def trusted_text(text: str) -> list[Segment]:
    return [Segment(text, True)] if text else []


def untrusted_text(text: str) -> list[Segment]:
    return [Segment(text, False)] if text else []


@dataclass(frozen=True)
class SpecialTokens:
    """The texts of a model's BOS and EOS ("" where it has none)."""

    bos: str = ""
    eos: str = ""


class PromptEncoder:
    """Encodes prompts for one tokenizer, given three facts a loader reads from it.

    ``encode_plain``: ids of text with no control tokens and no BOS (the loader's tokenizer with
    special-token parsing off). ``control``: control-token text -> id. ``bos_prefix``: the ids the
    model expects before any prompt (``[BOS]`` or nothing).
    """

    def __init__(self, encode_plain: Callable[[str], list[int]], control: dict[str, int],
                 bos_prefix: Sequence[int], tokens: SpecialTokens) -> None:
        self.encode_plain = encode_plain
        self.control = {text: int(i) for text, i in control.items() if text}
        self.bos_prefix = [int(i) for i in bos_prefix]
        self.tokens = tokens
        by_length = sorted(self.control, key=len, reverse=True)
        self._split = re.compile("(" + "|".join(map(re.escape, by_length)) + ")") if by_length else None

    def encode(self, text: str) -> list[int]:
        """A prompt written whole by its author (a raw completion, an extension's prompt)."""
        return self.encode_segments([Segment(text, True)])

    def encode_segments(self, segments: Iterable[Segment]) -> list[int]:
        """Ids of a prompt: trusted control texts as ids, every text run encoded whole, BOS once."""
        ids: list[int] = []
        run: list[str] = []
        for segment in segments:
            for part, control_id in self._parts(segment):
                if control_id is None:
                    run.append(part)
                    continue
                ids += self._run_ids(run)
                run = []
                ids.append(control_id)
        ids += self._run_ids(run)
        return self.with_bos(ids)

    def with_bos(self, ids: list[int]) -> list[int]:
        """``ids`` starting with the BOS prefix exactly once."""
        n = len(self.bos_prefix)
        if n and ids[:n] != self.bos_prefix:
            return self.bos_prefix + ids
        return ids

    def _parts(self, segment: Segment) -> Iterable[tuple[str, int | None]]:
        if not segment.trusted or self._split is None:
            yield segment.text, None
            return
        for part in self._split.split(segment.text):
            if part:
                yield part, self.control.get(part)

    def _run_ids(self, run: list[str]) -> list[int]:
        text = "".join(run)
        return list(self.encode_plain(text)) if text else []


def control_texts(bos: tuple[str, int | None], eos: tuple[str, int | None],
                  others: dict[str, int]) -> dict[str, int]:
    """Control text -> id: the tokenizer's special texts, plus ``<s>``/``</s>`` for its BOS/EOS."""
    out = dict(others)
    for generic, (text, token) in ((GENERIC_BOS, bos), (GENERIC_EOS, eos)):
        if token is None or token < 0:
            continue
        out.setdefault(generic, token)
        if text:
            out[text] = token
    return out
