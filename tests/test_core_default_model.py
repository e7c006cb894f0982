"""The core on the real default model: greedy equality, 4-bit NF4, unload, chat prompts."""
from __future__ import annotations

import gc

import pytest
import torch
from transformers import AutoModelForCausalLM

from modules.core.chat import ChatSettings, Turn
from modules.core.config import AppConfig, LoaderOptions
from modules.core.context import build_context
from modules.core.engine import GenerationRequest
from modules.core.generation import chat_prompt, chat_request
from modules.core.loaders.memory import process_rss, release_memory
from modules.core.sampling import SamplerParams

NAME = "SmolLM2-135M-Instruct"
GREEDY = SamplerParams(do_sample=False, max_new_tokens=24)


def make_context(models_dir, **loader):
    config = AppConfig(models_dir=models_dir, loader=LoaderOptions(cpu=True, **loader))
    return build_context(config)


def reply(ctx, question: str, params: SamplerParams = GREEDY):
    request, plan = chat_request(ctx, [], Turn(user_message=question), ChatSettings(), params)
    deltas = list(ctx.engine.generate(request))
    return "".join(d.text for d in deltas), [i for d in deltas for i in d.token_ids], plan


@pytest.fixture(scope="module")
def ctx(default_model_dir):
    ctx = make_context(default_model_dir.parent, dtype="float32")
    ctx.models.load(NAME)
    yield ctx
    ctx.models.unload()


def test_default_prompt_is_the_models_own_chatml(ctx):
    plan = chat_prompt(ctx, [], Turn(user_message="Hi"), ChatSettings(), GREEDY)
    assert plan.prompt.endswith("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n")
    assert "<|im_end|>" in plan.stop_strings or ctx.engine.backend.eos_token_ids


def test_greedy_engine_equals_plain_transformers(ctx, default_model_dir):
    text, ids, plan = reply(ctx, "What is the capital of France?")
    plain = AutoModelForCausalLM.from_pretrained(default_model_dir, dtype=torch.float32)
    prompt_ids = torch.tensor([ctx.engine.backend.encode(plan.prompt)])
    out = plain.generate(prompt_ids, do_sample=False, max_new_tokens=24)[0, prompt_ids.shape[1]:].tolist()
    eos = ctx.engine.backend.eos_token_ids
    expected = out[: next((i for i, t in enumerate(out) if t in eos), len(out))]
    assert ids == expected
    assert "Paris" in text
    del plain
    gc.collect()


def test_chat_mode_and_chat_instruct_prompts(ctx):
    settings = ChatSettings(mode="chat", user_name="Ann")
    settings.character.name, settings.character.context = "Bob", "Bob is a friendly baker."
    history = [{"role": "user", "content": "Hello"}, {"role": "assistant", "content": "Hi Ann!"}]
    plan = chat_prompt(ctx, history, Turn(user_message="Any bread?"), settings, GREEDY)
    assert plan.prompt == "Bob is a friendly baker.\nAnn: Hello\nBob: Hi Ann!\nAnn: Any bread?\nBob:"
    assert "\nAnn:" in plan.stop_strings
    settings.mode = "chat-instruct"
    plan = chat_prompt(ctx, history, Turn(user_message="Any bread?"), settings, GREEDY)
    assert plan.prompt == ('<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging '
                           'Face<|im_end|>\n<|im_start|>user\nContinue the chat dialogue below. Write a single reply for the '
                           'character "Bob".\n\nBob is a friendly baker.\nAnn: Hello\nBob: Hi Ann!\nAnn: Any bread?'
                           '<|im_end|>\n<|im_start|>assistant\nBob:')


def test_truncation_drops_oldest_turns_and_keeps_the_system_text(ctx):
    history = []
    for i in range(40):
        history += [{"role": "user", "content": f"Question number {i} " + "word " * 30},
                    {"role": "assistant", "content": f"Answer number {i}."}]
    settings = ChatSettings(system="You are the Keeper of Rules.")
    params = GREEDY.replace(truncation_length=400, max_new_tokens=50)
    plan = chat_prompt(ctx, history, Turn(user_message="Last one?"), settings, params)
    assert plan.dropped_turns > 0
    assert ctx.engine.count_tokens(plan.prompt) <= 350
    assert plan.prompt.startswith("<|im_start|>system\nYou are the Keeper of Rules.<|im_end|>")
    assert "Question number 39" in plan.prompt and "Question number 0 " not in plan.prompt
    assert plan.prompt.endswith("Last one?<|im_end|>\n<|im_start|>assistant\n")


def test_default_model_answers_at_4_bits_nf4(default_model_dir):
    ctx = make_context(default_model_dir.parent, load_in_4bit=True, quant_type="nf4", compute_dtype="bfloat16")
    loaded = ctx.models.load(NAME)
    try:
        assert loaded.options.load_in_4bit
        linear = ctx.engine.backend.model.model.layers[0].self_attn.q_proj
        assert type(linear).__name__ == "Linear4bit"
        assert ctx.engine.backend.info.quantization == "4-bit nf4"
        text, _, _ = reply(ctx, "What is the capital of France?")
        assert "Paris" in text
    finally:
        ctx.models.unload()


def test_unload_returns_memory_near_the_pre_load_level(default_model_dir):
    release_memory()
    ctx = make_context(default_model_dir.parent, dtype="float32")
    before = process_rss()
    ctx.models.load(NAME)
    reply(ctx, "Hello")
    loaded = process_rss()
    assert loaded - before > 300e6  # 135M parameters in fp32 really are in memory
    ctx.models.unload()
    after = process_rss()
    assert ctx.engine.backend is None
    assert after - before < 100e6, f"{(after - before) / 1e6:.0f} MB still held after unload"


def test_the_gguf_file_loads_through_transformers(default_model_dir):
    ctx = make_context(default_model_dir.parent, loader="transformers", dtype="float32")
    ctx.models.load("SmolLM2-135M-Instruct-Q4_1.gguf")
    try:
        assert ctx.models.current.loader == "transformers"
        text, _, _ = reply(ctx, "What is the capital of France?")
        assert "Paris" in text
    finally:
        ctx.models.unload()
