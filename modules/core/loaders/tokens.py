"""A transformers tokenizer seen through :class:`~modules.core.prompt_tokens.PromptEncoder`.

What the encoder needs from a Hugging Face tokenizer: plain-text encoding with special-token
parsing off, its control texts, and the BOS prefix it adds. Where the model folder carries the
original SentencePiece ``tokenizer.model`` and it agrees with the loaded tokenizer, plain text
is encoded with SentencePiece itself: the 2023 LLaMA fine-tunes were trained with that
(legacy) tokenization, and transformers' converted tokenizer differs from it on text that starts
with a space (measured on llama.cpp's LLaMA tokenizer test vectors).
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable

from modules.core.prompt_tokens import PromptEncoder, SpecialTokens, control_texts

log = logging.getLogger(__name__)

# A probe that exercises word starts, digits, punctuation and bytes: both tokenizers must agree on it.
_PROBE = "Hello world! The 2 quick llamas, 3.5 times: naïve café ### Response:\nUSER: hi"


def _hf_plain(tokenizer: Any) -> Callable[[str], list[int]]:
    def encode(text: str) -> list[int]:
        return list(tokenizer.encode(text, add_special_tokens=False, split_special_tokens=True))
    return encode


def _sentencepiece_plain(tokenizer: Any, folder: Path | None) -> Callable[[str], list[int]] | None:
    """SentencePiece's own encoder for ``folder/tokenizer.model``, if it is this tokenizer's."""
    model_file = folder / "tokenizer.model" if folder is not None else None
    if model_file is None or not model_file.is_file():
        return None
    try:
        import sentencepiece as spm

        processor = spm.SentencePieceProcessor(model_file=str(model_file))
    except Exception as err:  # noqa: BLE001 - not a SentencePiece model: the tokenizer's own encoder is used
        log.info("%s is not a usable SentencePiece model (%s); using the tokenizer's encoder", model_file, err)
        return None
    if processor.get_piece_size() > len(tokenizer) or processor.encode(_PROBE) != _hf_plain(tokenizer)(_PROBE):
        log.info("%s does not match the loaded tokenizer; using the tokenizer's encoder", model_file)
        return None

    def encode(text: str) -> list[int]:
        return list(processor.encode(text))
    return encode


def _bos_prefix(tokenizer: Any) -> list[int]:
    """The ids the tokenizer puts before any text (usually [BOS] or nothing)."""
    with_special = tokenizer.encode("a", add_special_tokens=True)
    without = tokenizer.encode("a", add_special_tokens=False)
    if without and with_special[-len(without):] == without:
        return list(with_special[: len(with_special) - len(without)])
    return []


def _special_texts(tokenizer: Any) -> dict[str, int]:
    """Every special or added control text of the tokenizer (``<|im_end|>``, ``<|prompter|>``...)."""
    out: dict[str, int] = {}
    for token_id, added in getattr(tokenizer, "added_tokens_decoder", {}).items():
        if getattr(added, "special", True) and str(added):
            out[str(added)] = int(token_id)
    for text in tokenizer.all_special_tokens:
        token_id = tokenizer.convert_tokens_to_ids(text)
        if isinstance(token_id, int) and token_id >= 0:
            out.setdefault(text, token_id)
    return out


def hf_prompt_encoder(tokenizer: Any, folder: Path | None = None) -> PromptEncoder:
    tokens = SpecialTokens(bos=tokenizer.bos_token or "", eos=tokenizer.eos_token or "")
    control = control_texts((tokens.bos, tokenizer.bos_token_id), (tokens.eos, tokenizer.eos_token_id),
                            _special_texts(tokenizer))
    plain = _sentencepiece_plain(tokenizer, folder) or _hf_plain(tokenizer)
    return PromptEncoder(plain, control, _bos_prefix(tokenizer), tokens)


def eos_ids(tokenizer: Any, model: Any = None) -> set[int]:
    """EOS ids from the tokenizer and the model's generation config (some list several)."""
    ids: set[int] = set()
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    gen_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if isinstance(gen_eos, int):
        ids.add(gen_eos)
    elif isinstance(gen_eos, (list, tuple)):
        ids.update(int(i) for i in gen_eos)
    return ids
