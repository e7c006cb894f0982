"""Helpers for bench/gpu.py: a random LLaMA of a given shape on disk, and the machine's numbers.

Nothing can be downloaded on the GPU machine, so the model is built from its
config with random weights: speed and memory are those of the real model.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import torch

# LLaMA-7B's shape, and a tiny one for the CPU (output sizes multiples of 32, as bitsandbytes' CPU kernels want).
SHAPES: dict[str, dict[str, int]] = {
    "7b": dict(hidden_size=4096, num_hidden_layers=32, intermediate_size=11008, num_attention_heads=32,
               num_key_value_heads=32, vocab_size=32000, max_position_embeddings=4096),
    "tiny": dict(hidden_size=128, num_hidden_layers=2, intermediate_size=256, num_attention_heads=4,
                 num_key_value_heads=4, vocab_size=512, max_position_embeddings=1024),
}
DONE_MARK = "bench-complete.json"  # written last: a folder without it is a half-written model


def word_tokenizer(vocab_size: int) -> Any:
    """A tokenizer with one word per id (``w3`` -> 3): any prompt length is easy to write down exactly."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
    vocab.update({f"w{i}": i for i in range(3, vocab_size)})
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=core, unk_token="<unk>", bos_token="<s>", eos_token="</s>")


def random_prompt(tokens: int, vocab_size: int, seed: int = 0) -> list[int]:
    """``tokens`` random word ids (never a special token), the same for every run with ``seed``."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(3, vocab_size, (tokens,), generator=generator).tolist()


def ensure_random_model(folder: Path, shape: str, device: str) -> float:
    """Write a random fp16 LLaMA of ``shape`` to ``folder`` (safetensors); reuse a complete one. Returns seconds."""
    mark = folder / DONE_MARK
    if mark.is_file() and json.loads(mark.read_text()).get("shape") == SHAPES[shape]:
        return 0.0
    from transformers import LlamaConfig, LlamaForCausalLM

    started = time.perf_counter()
    folder.mkdir(parents=True, exist_ok=True)
    mark.unlink(missing_ok=True)
    config = LlamaConfig(**SHAPES[shape], bos_token_id=1, eos_token_id=2, pad_token_id=None,
                         tie_word_embeddings=False, rope_theta=10000.0)
    torch.manual_seed(0)
    # Built straight on the target device in fp16: no 27 GB fp32 copy in host memory.
    with torch.device(device):
        model = LlamaForCausalLM._from_config(config, dtype=torch.float16)
    model.save_pretrained(folder, max_shard_size="4GB")
    word_tokenizer(config.vocab_size).save_pretrained(folder)
    del model
    if device == "cuda":
        torch.cuda.empty_cache()
    mark.write_text(json.dumps({"shape": SHAPES[shape]}))
    return time.perf_counter() - started


def copy_bandwidth(device: str) -> float:
    """Bytes per second of a device-to-device copy (each byte read once and written once)."""
    size = (1 << 30) if device == "cuda" else (256 << 20)
    src = torch.empty(size, dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    dst.copy_(src)
    best = float("inf")
    for _ in range(5 if device == "cuda" else 3):
        _sync(device)
        started = time.perf_counter()
        for _ in range(4):
            dst.copy_(src)
        _sync(device)
        best = min(best, (time.perf_counter() - started) / 4)
    del src, dst
    return 2 * size / best


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def weight_bytes_per_token(model: torch.nn.Module) -> int:
    """Bytes of weights one decode step reads: every weight (and its 4-bit scales) but the input embedding,
    of which only one row is read. The KV cache is not counted."""
    embed = model.get_input_embeddings().weight
    output = model.get_output_embeddings()
    tied = output is not None and output.weight is embed
    total = 0
    for param in model.parameters():
        if param is embed and not tied:
            total += embed.shape[-1] * embed.element_size()  # one row
            continue
        total += param.numel() * param.element_size()
        total += _quant_state_bytes(getattr(param, "quant_state", None))
    return total


def _quant_state_bytes(state: Any) -> int:
    """absmax (and the nested absmax of double quantization) of a bitsandbytes 4-bit weight."""
    if state is None:
        return 0
    total = 0
    for name in ("absmax", "code", "offset"):
        tensor = getattr(state, name, None)
        if isinstance(tensor, torch.Tensor):
            total += tensor.numel() * tensor.element_size()
    return total + _quant_state_bytes(getattr(state, "state2", None))


def memory_now(device: str) -> int:
    """GPU: bytes allocated by tensors. CPU: the process's resident memory."""
    if device == "cuda":
        return torch.cuda.memory_allocated()
    from modules.core.loaders.memory import process_rss

    return process_rss()


def reset_peak(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()


def memory_peak(device: str) -> int:
    """GPU: peak allocated since :func:`reset_peak`. CPU: the process's peak resident memory so far."""
    if device == "cuda":
        return torch.cuda.max_memory_allocated()
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def device_name(device: str) -> str:
    if device == "cuda":
        return torch.cuda.get_device_name()
    import platform

    return f"CPU {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"
