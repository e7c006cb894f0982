"""A tiny LLaMA model written straight to a GGUF file with the ``gguf`` package, for llama.cpp tests.

Two layers, 64 wide, a SentencePiece-style ("llama") vocabulary of ~400
tokens: the three specials, the 256 byte-fallback tokens, single characters
and every prefix of a few words (SentencePiece merges adjacent pieces only
into pieces that exist, so a word is reachable only through its prefixes).
Weights are random (seeded) float32. It loads in milliseconds and generates
real, deterministic tokens, which is all the loader tests need.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

WORDS = ("the", "quick", "brown", "fox", "jumps", "over", "lazy", "dog", "llama", "llamas", "hello",
         "world", "capital", "of", "france", "is", "paris", "one", "two", "three", "numbers")
LETTERS = "abcdefghijklmnopqrstuvwxyz.,!?"
SPACE = "\u2581"  # SentencePiece's visible space

# gguf token types (llama.cpp's LLAMA_TOKEN_TYPE_*)
NORMAL, UNKNOWN, CONTROL, BYTE = 1, 2, 3, 6


def tiny_vocab() -> tuple[list[str], list[float], list[int]]:
    """Tokens, scores (higher merges first) and types of a small SentencePiece vocabulary."""
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)]
    types = [UNKNOWN, CONTROL, CONTROL] + [BYTE] * 256
    pieces: list[str] = [SPACE] + list(LETTERS)
    for word in WORDS:
        text = SPACE + word
        pieces += [text[:end] for end in range(2, len(text) + 1)]
    seen: set[str] = set()
    for piece in pieces:
        if piece not in seen:
            seen.add(piece)
            tokens.append(piece)
            types.append(NORMAL)
    # Longer pieces score higher, so whole words win over their parts.
    scores = [0.0] * 259 + [float(len(t)) for t in tokens[259:]]
    return tokens, scores, types


def build_tiny_gguf(path: Path, *, seed: int = 0, layers: int = 2, width: int = 64, heads: int = 4,
                    kv_heads: int = 2, ffn: int = 128, context: int = 256) -> Path:
    """Write the tiny model to ``path`` (a .gguf file) and return ``path``."""
    return write_llama_gguf(path, *tiny_vocab(), name="tiny-llama-gguf", seed=seed, layers=layers, width=width,
                            heads=heads, kv_heads=kv_heads, ffn=ffn, context=context)


def write_llama_gguf(path: Path, tokens: list[str], scores: list[float], types: list[int], *, name: str,
                     bos_id: int = 1, eos_id: int = 2, unk_id: int = 0, chat_template: str | None = None,
                     seed: int = 0, layers: int = 2, width: int = 64, heads: int = 4, kv_heads: int = 2,
                     ffn: int = 128, context: int = 256) -> Path:
    """Write a random-weight LLaMA with the given SentencePiece ("llama") vocabulary to ``path``."""
    from gguf import GGUFWriter, LlamaFileType

    head_dim = width // heads
    writer = GGUFWriter(str(path), "llama")
    writer.add_name(name)
    writer.add_file_type(LlamaFileType.ALL_F32)
    writer.add_context_length(context)
    writer.add_embedding_length(width)
    writer.add_block_count(layers)
    writer.add_feed_forward_length(ffn)
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv_heads)
    writer.add_rope_dimension_count(head_dim)
    writer.add_rope_freq_base(10000.0)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_vocab_size(len(tokens))
    writer.add_tokenizer_model("llama")
    writer.add_token_list(tokens)
    writer.add_token_scores(scores)
    writer.add_token_types(types)
    writer.add_unk_token_id(unk_id)
    writer.add_bos_token_id(bos_id)
    writer.add_eos_token_id(eos_id)
    writer.add_add_bos_token(True)
    writer.add_add_eos_token(False)
    if chat_template is not None:
        writer.add_chat_template(chat_template)
    for tensor_name, array in _tensors(np.random.default_rng(seed), len(tokens), layers, width, heads, kv_heads,
                                       ffn):
        writer.add_tensor(tensor_name, array)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def _tensors(rng: np.random.Generator, vocab: int, layers: int, width: int, heads: int, kv_heads: int,
             ffn: int) -> list[tuple[str, np.ndarray]]:
    """GGUF tensor names with arrays shaped like PyTorch Linear weights [out, in] (GGUF reverses them)."""
    head_dim = width // heads

    def weight(*shape: int, scale: float = 0.3) -> np.ndarray:
        return (rng.standard_normal(shape) * scale).astype(np.float32)

    ones = np.ones(width, dtype=np.float32)
    out = [("token_embd.weight", weight(vocab, width, scale=1.0))]
    for i in range(layers):
        out += [
            (f"blk.{i}.attn_norm.weight", ones.copy()),
            (f"blk.{i}.attn_q.weight", weight(heads * head_dim, width)),
            (f"blk.{i}.attn_k.weight", weight(kv_heads * head_dim, width)),
            (f"blk.{i}.attn_v.weight", weight(kv_heads * head_dim, width)),
            (f"blk.{i}.attn_output.weight", weight(width, heads * head_dim)),
            (f"blk.{i}.ffn_norm.weight", ones.copy()),
            (f"blk.{i}.ffn_gate.weight", weight(ffn, width)),
            (f"blk.{i}.ffn_up.weight", weight(ffn, width)),
            (f"blk.{i}.ffn_down.weight", weight(width, ffn)),
        ]
    out += [("output_norm.weight", ones.copy()), ("output.weight", weight(vocab, width))]
    return out
