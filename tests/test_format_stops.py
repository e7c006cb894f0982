"""Stop strings through the engine: a tiny model made to write a reply that runs on into the next
user turn, in each form each format's model writes it, is cut there and the stop text never shows.

The tiny model's choice is steered by a logits processor that allows one scripted token per step,
so the reply is known exactly while every id still goes through the engine's decoding and
hold-back. models/config.yaml's skip_special_tokens is checked the same way: an OpenAssistant turn
marker is a special token, visible (and so a stop) only for models the rule names.
"""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from modules.core.config import LoaderOptions
from modules.core.engine import Engine, GenerationRequest
from modules.core.models import ModelManager
from modules.core.registry import ModelRegistry
from modules.core.sampling import SamplerParams
from modules.core.templates import FormatLibrary, render
from tiny_models import train_sentencepiece

ROOT = Path(__file__).resolve().parents[1]
OASST_TOKENS = ["<|prompter|>", "<|assistant|>", "<|system|>"]
OASST_NAME = "OpenAssistant_oasst-sft-7-llama-30b-xor"  # models/config.yaml: skip_special_tokens false
OTHER_NAME = "acme_tiny-7b"  # no rule: special tokens skipped

# format -> replies that run on into the user's next turn; each must show as "Paris."
RUN_ON = {
    "Vicuna-v1.1": ["Paris. USER: and you", "Paris.\nUSER: and you"],
    "Vicuna-v0": ["Paris.\n### Human: and", "Paris. ### Human: and", "Paris.### Human: and"],
    "stable-vicuna": ["Paris.\n### Human: and"],
    "guanaco": ["Paris. ### Human: and"],
    "Alpaca": ["Paris.\n\n### Instruction:\nand"],
    "Alpaca-LoRA": ["Paris.\n### Instruction:\nand"],
    "Koala": ["Paris. USER: and"],
    "OpenAssistant": ["Paris.<|prompter|>and"],
    "ChatML": ["Paris.<|im_end|>\n<|im_start|>user"],
    "LLaMA-2-chat": ["Paris. [INST] and"],
    "Plain-transcript": ["Paris.\nYou: and"],
}


class Script:
    """A logits processor that leaves only the next scripted token possible (then repeats the last)."""

    def __init__(self, ids: list[int]) -> None:
        self.ids, self.step = ids, 0

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        token = self.ids[min(self.step, len(self.ids) - 1)]
        self.step += 1
        forced = torch.full_like(scores, float("-inf"))
        forced[..., token] = 0.0
        return forced


def build_tiny_oasst_llama(folder: Path) -> Path:
    """A tiny LLaMA whose tokenizer has OpenAssistant's added special tokens, as oasst-sft-*-llama has."""
    from transformers import LlamaConfig, LlamaForCausalLM, LlamaTokenizer

    train_sentencepiece(folder)
    tokenizer = LlamaTokenizer.from_pretrained(str(folder), add_bos_token=True)
    tokenizer.add_special_tokens({"additional_special_tokens": OASST_TOKENS})
    vocab = ((len(tokenizer) + 31) // 32) * 32
    config = LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4,
                         num_key_value_heads=2, vocab_size=vocab, max_position_embeddings=256,
                         bos_token_id=1, eos_token_id=2, tie_word_embeddings=False)
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> Path:
    import shutil

    folder = tmp_path_factory.mktemp("stops") / "models"
    build_tiny_oasst_llama(folder / OASST_NAME)
    shutil.copytree(folder / OASST_NAME, folder / OTHER_NAME)
    shutil.copy(ROOT / "models" / "config.yaml", folder / "config.yaml")
    return folder


@pytest.fixture(scope="module")
def manager(models: Path) -> ModelManager:
    manager = ModelManager(ModelRegistry(models), Engine(), LoaderOptions(dtype="float32", cpu=True))
    yield manager
    manager.unload()


def _reply(manager: ModelManager, name: str, prompt: str, reply: str, stops: list[str]):
    """Generate ``reply`` (scripted) after ``prompt``; (shown text, last delta)."""
    if manager.loaded_name != name:
        manager.load(name)
    ids = manager.engine.backend.tokenizer.encode(reply, add_special_tokens=False)
    params = SamplerParams(do_sample=False, max_new_tokens=len(ids), ban_eos_token=True)
    request = GenerationRequest(prompt=prompt, params=params, stop_strings=stops, logits_processors=[Script(ids)])
    deltas = list(manager.engine.generate(request))
    return "".join(d.text for d in deltas), deltas[-1]


@pytest.mark.parametrize("name, reply", [(n, r) for n, replies in RUN_ON.items() for r in replies])
def test_a_run_on_reply_stops_before_the_next_turn(manager: ModelManager, name: str, reply: str) -> None:
    fmt = FormatLibrary(ROOT / "instruction-templates").get(name)
    prompt = render(fmt, [{"role": "user", "content": "What is the capital of France?"}], eos_token="</s>")
    shown, last = _reply(manager, OASST_NAME, prompt, reply, fmt.stop_strings)
    assert shown == "Paris."
    assert last.finish_reason == "stop" and last.stopped_by in fmt.stop_strings


def test_without_the_stop_the_whole_run_on_shows(manager: ModelManager) -> None:
    """The control: the same scripted reply with no stop strings is written out in full."""
    shown, last = _reply(manager, OASST_NAME, "Q:", "Paris. USER: and you", [])
    assert shown == "Paris. USER: and you" and last.finish_reason == "length"


def test_special_tokens_show_only_where_config_yaml_says(manager: ModelManager) -> None:
    stops = FormatLibrary(ROOT / "instruction-templates").get("OpenAssistant").stop_strings
    shown, last = _reply(manager, OASST_NAME, "<|prompter|>hi</s><|assistant|>", "Hi<|prompter|>more", stops)
    assert manager.engine.backend.skip_special_tokens is False
    assert (shown, last.stopped_by) == ("Hi", "<|prompter|>")
    # Another name, no rule: the turn marker is skipped when decoding, so it cannot stop the reply.
    shown, last = _reply(manager, OTHER_NAME, "<|prompter|>hi</s><|assistant|>", "Hi<|prompter|>more", stops)
    assert manager.engine.backend.skip_special_tokens is True
    assert (shown, last.finish_reason) == ("Himore", "length")


def test_llama_cpp_decodes_special_tokens_where_config_yaml_says(tmp_path: Path) -> None:
    pytest.importorskip("llama_cpp")
    import shutil

    from tiny_gguf import build_tiny_gguf

    build_tiny_gguf(tmp_path / "oasst-tiny-llama.gguf")
    shutil.copy(tmp_path / "oasst-tiny-llama.gguf", tmp_path / "tiny-llama.gguf")
    shutil.copy(ROOT / "models" / "config.yaml", tmp_path / "config.yaml")
    manager = ModelManager(ModelRegistry(tmp_path), Engine(), LoaderOptions())
    try:
        for name, shown in (("oasst-tiny-llama.gguf", "</s>"), ("tiny-llama.gguf", "")):
            assert manager.load(name).loader == "llama.cpp"
            backend = manager.engine.backend
            assert backend.skip_special_tokens is (shown == "")
            assert backend.decode([2]) == shown  # EOS, a control token: visible only where asked
    finally:
        manager.unload()
