"""Tiny random-weight models of the 2023 LLaMA families, on the real LLaMA (and GPT-NeoX) vocabularies.

Each folder looks like the download a user has on disk (``owner_name`` folder
names, 2023-style tokenizer files): ``tokenizer.model`` (the SentencePiece model
built from llama.cpp's vocabulary, see ``llama_vocab.py``), ``tokenizer_config.json``,
``special_tokens_map.json``, ``tokenizer.json`` (so transformers loads it in
about a second instead of converting the SentencePiece model each time) and
safetensors weights of a 2-layer, 64-wide model. The vocabulary is padded to a
multiple of 32 (bitsandbytes on the CPU needs it).

Kinds (``FAMILIES``): base LLaMA-1, LLaMA-2-chat without a chat template (name
detection applies) and with one (as Meta's repositories ship it today),
OpenAssistant on LLaMA (its turn markers are added special tokens from id
32000) and OpenAssistant on Pythia (GPTNeoXForCausalLM on the GPT-NeoX-20B
BPE vocabulary, EOS ``<|endoftext|>``).
"""
from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from llama_vocab import VocabFiles, build_sp_model, ensure_llama_vocab

BUILD_VERSION = 1  # bump when a builder's output changes: cached tokenizer files are keyed by it
OASST_TOKENS = ("<|prompter|>", "<|assistant|>", "<|system|>", "<|prefix_begin|>", "<|prefix_end|>")

# Meta's rules (llama/generation.py): system text folded into the first user turn, contents
# stripped, each exchange "<s>[INST] U [/INST] A </s>", no default system text.
LLAMA2_TEMPLATE = (
    "{% if messages[0]['role'] == 'system' %}{% set system = messages[0]['content'] | trim %}"
    "{% set messages = messages[1:] %}{% else %}{% set system = '' %}{% endif %}"
    "{% for message in messages %}{% if message['role'] == 'user' %}"
    "{% if loop.first and system %}{% set text = '<<SYS>>\\n' + system + '\\n<</SYS>>\\n\\n'"
    " + message['content'] | trim %}{% else %}{% set text = message['content'] | trim %}{% endif %}"
    "{{ bos_token + '[INST] ' + text + ' [/INST]' }}"
    "{% else %}{{ ' ' + message['content'] | trim + ' ' + eos_token }}{% endif %}{% endfor %}")


@dataclass(frozen=True)
class Family:
    """One family model: its folder name as users have it, and how its tokenizer is set up."""

    folder: str
    architecture: str = "llama"  # or "gpt_neox"
    added_tokens: tuple[str, ...] = ()
    chat_template: str | None = None
    context: int = 2048


FAMILIES: dict[str, Family] = {
    "llama-1": Family("huggyllama_llama-7b"),
    "llama-2-chat": Family("meta-llama_Llama-2-7b-chat-hf", context=4096),
    "llama-2-chat-template": Family("meta-llama_Llama-2-13b-chat-hf", chat_template=LLAMA2_TEMPLATE, context=4096),
    "oasst-llama": Family("OpenAssistant_oasst-sft-7-llama-30b-xor", added_tokens=OASST_TOKENS),
    "oasst-pythia": Family("OpenAssistant_oasst-sft-4-pythia-12b-epoch-3.5", architecture="gpt_neox",
                           added_tokens=OASST_TOKENS),
}


def sp_model_file(vocab: VocabFiles) -> Path:
    """The LLaMA ``tokenizer.model`` built from the GGUF vocabulary, cached beside it (~10 s the first time)."""
    path = vocab.folder / f"llama-tokenizer-v{BUILD_VERSION}.model"
    if not path.is_file():
        partial = build_sp_model(vocab.gguf, path.with_suffix(f".{os.getpid()}.part"))
        partial.replace(path)
    return path


def build_family_model(kind: str, folder: Path, vocab: VocabFiles | None = None, *, seed: int = 0) -> Path:
    """Write the tiny model of ``kind`` (a key of FAMILIES) into ``folder`` and return it."""
    family = FAMILIES.get(kind)
    if family is None:
        raise ValueError(f"unknown family {kind!r}; choose one of {', '.join(FAMILIES)}")
    vocab = vocab or ensure_llama_vocab()
    folder.mkdir(parents=True, exist_ok=True)
    if family.architecture == "gpt_neox":
        from neox_tokenizer import write_neox_tokenizer

        vocab_size = write_neox_tokenizer(folder, vocab, family.added_tokens, cache_tag=f"v{BUILD_VERSION}")
    else:
        vocab_size = _write_llama_tokenizer(folder, vocab, family, cache=vocab.folder / f"hf-{kind}-v{BUILD_VERSION}")
    _write_weights(folder, family, ((vocab_size + 31) // 32) * 32, seed)
    return folder


def _write_llama_tokenizer(folder: Path, vocab: VocabFiles, family: Family, cache: Path) -> int:
    """2023-style tokenizer files; returns the tokenizer's length (32000 + added tokens)."""
    shutil.copyfile(sp_model_file(vocab), folder / "tokenizer.model")
    specials = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}
    first_added = 32000
    added = {str(first_added + i): _added(text) for i, text in enumerate(family.added_tokens)}
    config = {"tokenizer_class": "LlamaTokenizer", "add_bos_token": True, "add_eos_token": False,
              "legacy": True, "clean_up_tokenization_spaces": False, "model_max_length": family.context,
              "pad_token": None, "sp_model_kwargs": {}, **specials,
              "added_tokens_decoder": {"0": _added("<unk>"), "1": _added("<s>"), "2": _added("</s>"), **added}}
    if family.added_tokens:
        config["additional_special_tokens"] = list(family.added_tokens)
        _write_json(folder / "added_tokens.json", {text: first_added + i for i, text in enumerate(family.added_tokens)})
    if family.chat_template is not None:
        config["chat_template"] = family.chat_template
    _write_json(folder / "tokenizer_config.json", config)
    special_map = dict(specials)
    if family.added_tokens:
        special_map["additional_special_tokens"] = list(family.added_tokens)
    _write_json(folder / "special_tokens_map.json", special_map)
    _copy_tokenizer_json(folder, cache)
    return 32000 + len(family.added_tokens)


def _copy_tokenizer_json(folder: Path, cache: Path) -> None:
    """The tokenizer.json transformers makes from these files, converted once and cached."""
    cached = cache / "tokenizer.json"
    if not cached.is_file():
        (folder / "tokenizer.json").unlink(missing_ok=True)
        from transformers import AutoTokenizer

        staging = cache.with_name(f"{cache.name}.{os.getpid()}.part")
        AutoTokenizer.from_pretrained(str(folder)).save_pretrained(str(staging))
        cache.mkdir(parents=True, exist_ok=True)
        (staging / "tokenizer.json").replace(cached)
        shutil.rmtree(staging)
    shutil.copyfile(cached, folder / "tokenizer.json")


def _added(text: str, special: bool = True) -> dict:
    return {"content": text, "lstrip": False, "normalized": False, "rstrip": False, "single_word": False,
            "special": special}


def _write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def _write_weights(folder: Path, family: Family, vocab_size: int, seed: int) -> None:
    import torch

    if family.architecture == "gpt_neox":
        from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

        config = GPTNeoXConfig(vocab_size=vocab_size, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                               intermediate_size=128, max_position_embeddings=family.context, rotary_pct=0.25,
                               use_parallel_residual=True, bos_token_id=0, eos_token_id=0,
                               tie_word_embeddings=False)
        model_class = GPTNeoXForCausalLM
    else:
        from transformers import LlamaConfig, LlamaForCausalLM

        config = LlamaConfig(vocab_size=vocab_size, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                             num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=family.context,
                             bos_token_id=1, eos_token_id=2, tie_word_embeddings=False)
        model_class = LlamaForCausalLM
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = model_class(config)
    model.save_pretrained(str(folder))


def build_family_gguf(path: Path, vocab: VocabFiles | None = None, *, chat_template: str | None = None, seed: int = 0,
                      context: int = 4096) -> Path:
    """A tiny GGUF LLaMA on the real 32000-piece vocabulary, for the llama.cpp loader."""
    from sentencepiece import sentencepiece_model_pb2 as pb

    from tiny_gguf import write_llama_gguf

    model = pb.ModelProto()
    model.ParseFromString(sp_model_file(vocab or ensure_llama_vocab()).read_bytes())
    tokens = [piece.piece for piece in model.pieces]
    scores = [piece.score for piece in model.pieces]
    types = [int(piece.type) for piece in model.pieces]
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_llama_gguf(path, tokens, scores, types, name=path.stem, chat_template=chat_template, seed=seed,
                            context=context)


__all__ = ["FAMILIES", "Family", "LLAMA2_TEMPLATE", "OASST_TOKENS", "build_family_gguf", "build_family_model",
           "sp_model_file"]
