"""Tiny LLaMA models built in tests: a SentencePiece tokenizer trained on the spot, random weights."""
from __future__ import annotations

import io
from pathlib import Path

TEXT = [
    "The quick brown fox jumps over the lazy dog.",
    "A chat between a curious user and an artificial intelligence assistant.",
    "What is the capital of France? The capital of France is Paris.",
    "Large language models predict the next token from the previous ones.",
    "Llamas and alpacas live in the Andes mountains of South America.",
    "Numbers: one two three four five six seven eight nine ten.",
    "### Instruction:\nWrite a poem.\n\n### Response:\nRoses are red.",
    "USER: hello there ASSISTANT: hi, how can I help you today?",
]


def train_sentencepiece(folder: Path, vocab_size: int = 320) -> Path:
    """Train a small BPE SentencePiece model (< 1 s) and save it as tokenizer.model."""
    import sentencepiece as spm

    folder.mkdir(parents=True, exist_ok=True)
    stream = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(TEXT * 50), model_writer=stream, vocab_size=vocab_size, model_type="bpe",
        bos_id=1, eos_id=2, unk_id=0, pad_id=-1, byte_fallback=True, minloglevel=2,
        character_coverage=1.0, hard_vocab_limit=False)
    path = folder / "tokenizer.model"
    path.write_bytes(stream.getvalue())
    return path


def build_tiny_llama(folder: Path, hidden: int = 64, layers: int = 2, seed: int = 0,
                     context: int = 256) -> Path:
    """A ~100k-parameter LlamaForCausalLM with its tokenizer, saved as an ordinary folder."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, LlamaTokenizer

    train_sentencepiece(folder)
    tokenizer = LlamaTokenizer.from_pretrained(str(folder), add_bos_token=True)
    vocab = ((len(tokenizer) + 31) // 32) * 32  # bitsandbytes on the CPU wants multiples of 32
    config = LlamaConfig(hidden_size=hidden, intermediate_size=hidden * 2, num_hidden_layers=layers,
                         num_attention_heads=4, num_key_value_heads=2, vocab_size=vocab,
                         max_position_embeddings=context, bos_token_id=1, eos_token_id=2,
                         tie_word_embeddings=False)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
