"""Prompt tokenization: ``<s>``/``</s>`` written by a template become BOS/EOS ids, and BOS is never doubled."""
from __future__ import annotations

import re
from typing import Any


class PromptTokenizer:
    """Wraps a transformers tokenizer with the rules prompts need."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self.specials = self._special_strings()
        self._split = re.compile("(" + "|".join(re.escape(s) for s in sorted(self.specials, key=len, reverse=True)) + ")") \
            if self.specials else None
        self.bos_prefix = self._bos_prefix()

    def _special_strings(self) -> dict[str, int]:
        tok = self.tokenizer
        out: dict[str, int] = {}
        if tok.bos_token_id is not None:
            out["<s>"] = tok.bos_token_id
            out[tok.bos_token] = tok.bos_token_id
        if tok.eos_token_id is not None:
            out["</s>"] = tok.eos_token_id
            out[tok.eos_token] = tok.eos_token_id
        return {k: v for k, v in out.items() if k}

    def _bos_prefix(self) -> list[int]:
        """The ids the tokenizer puts before any text (usually [BOS] or nothing)."""
        with_special = self.tokenizer.encode("a", add_special_tokens=True)
        without = self.tokenizer.encode("a", add_special_tokens=False)
        if without and with_special[-len(without):] == without:
            return with_special[: len(with_special) - len(without)]
        return []

    def encode(self, text: str) -> list[int]:
        """Token ids for a prompt; the tokenizer's own BOS only if the text did not write one."""
        pieces = self._split.split(text) if self._split else [text]
        ids: list[int] = []
        for piece in pieces:
            if not piece:
                continue
            if piece in self.specials:
                ids.append(self.specials[piece])
            else:
                ids.extend(self.tokenizer.encode(piece, add_special_tokens=False))
        if self.bos_prefix and ids[: len(self.bos_prefix)] != self.bos_prefix:
            ids = self.bos_prefix + ids
        return ids

    def decode(self, ids: list[int], skip_special_tokens: bool = True) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=skip_special_tokens)

    def eos_ids(self, model: Any = None) -> set[int]:
        """EOS ids from the tokenizer and the model's generation config (some list several)."""
        ids: set[int] = set()
        if self.tokenizer.eos_token_id is not None:
            ids.add(int(self.tokenizer.eos_token_id))
        gen_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
        if isinstance(gen_eos, int):
            ids.add(gen_eos)
        elif isinstance(gen_eos, (list, tuple)):
            ids.update(int(i) for i in gen_eos)
        return ids
