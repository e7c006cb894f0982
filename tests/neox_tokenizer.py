"""The GPT-NeoX-20B (Pythia) BPE tokenizer, rebuilt with ``tokenizers`` from llama.cpp's vocabulary file.

``ggml-vocab-gpt-neox.gguf`` holds the 50277 real tokens (padded with
``[PAD…]`` entries) and the 50009 merges. Pythia's tokenizer is byte-level BPE
with NFC normalization, no prefix space, ``<|endoftext|>`` (id 0) as BOS/EOS/UNK
and ``<|padding|>`` (id 1); runs of 2 to 24 spaces are added tokens 50254–50276.
Reading the GGUF takes seconds, so the base ``tokenizer.json`` is cached beside it.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from llama_vocab import VocabFiles, read_gguf_vocab

NEOX_VOCAB = 50277
SPECIALS = ("<|endoftext|>", "<|padding|>")


def base_tokenizer_json(vocab: VocabFiles, cache_tag: str) -> Path:
    """Pythia's own tokenizer.json (no fine-tune tokens), built once and cached."""
    path = vocab.folder / f"neox-tokenizer-{cache_tag}.json"
    if not path.is_file():
        tokenizer = _build_from_gguf(vocab.neox_gguf)
        partial = path.with_suffix(f".{os.getpid()}.part")
        tokenizer.save(str(partial))
        partial.replace(path)
    return path


def _build_from_gguf(gguf_path: Path):
    from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

    gguf = read_gguf_vocab(gguf_path)
    tokens = gguf.tokens[:NEOX_VOCAB]
    merges = [tuple(merge.split(" ")) for merge in gguf.merges]
    tokenizer = Tokenizer(models.BPE(vocab={token: i for i, token in enumerate(tokens)}, merges=merges))
    tokenizer.normalizer = normalizers.NFC()
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = processors.ByteLevel(trim_offsets=True)
    tokenizer.add_special_tokens([AddedToken(text, special=True, normalized=False) for text in SPECIALS])
    spaces = [i for i, kind in enumerate(gguf.types[:NEOX_VOCAB]) if kind == 4]  # USER_DEFINED: space runs
    tokenizer.add_tokens([AddedToken(tokens[i], normalized=True) for i in spaces])
    return tokenizer


def write_neox_tokenizer(folder: Path, vocab: VocabFiles, added: tuple[str, ...], cache_tag: str) -> int:
    """Write tokenizer.json/tokenizer_config.json/special_tokens_map.json; return the tokenizer's length."""
    from tokenizers import AddedToken, Tokenizer

    tokenizer = Tokenizer.from_file(str(base_tokenizer_json(vocab, cache_tag)))
    tokenizer.add_special_tokens([AddedToken(text, special=True, normalized=False) for text in added])
    tokenizer.save(str(folder / "tokenizer.json"))
    specials = {"bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>",
                "pad_token": "<|padding|>"}
    config = {"tokenizer_class": "GPTNeoXTokenizer", "add_prefix_space": False, "add_bos_token": False,
              "add_eos_token": False, "clean_up_tokenization_spaces": False, "model_max_length": 2048, **specials}
    special_map = dict(specials)
    if added:
        config["additional_special_tokens"] = list(added)
        special_map["additional_special_tokens"] = list(added)
    for name, data in (("tokenizer_config.json", config), ("special_tokens_map.json", special_map)):
        (folder / name).write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    return tokenizer.get_vocab_size(with_added_tokens=True)
