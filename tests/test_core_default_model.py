"""The core on the real default model: greedy equality, 4-bit NF4, unload, chat prompts."""
from __future__ import annotations

import pytest

from golden.make_golden import load_golden
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


def reply(ctx, question: str, params: SamplerParams = GREEDY, settings: ChatSettings | None = None):
    request, plan = chat_request(ctx, [], Turn(user_message=question), settings or ChatSettings(), params)
    deltas = list(ctx.engine.generate(request))
    return "".join(d.text for d in deltas), [i for d in deltas for i in d.token_ids], plan


@pytest.fixture(scope="module")
def ctx(default_ctx):
    """The session's context with the default model (float32, CPU): these tests only read and generate."""
    return default_ctx


def test_default_prompt_is_the_models_own_chatml(ctx):
    plan = chat_prompt(ctx, [], Turn(user_message="Hi"), ChatSettings(), GREEDY)
    assert plan.prompt.endswith("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n")
    # The reply ends at the turn's end marker: the model emits it as its EOS id, and as text it is a stop string.
    im_end = ctx.engine.backend.encode("<|im_end|>")
    assert len(im_end) == 1 and im_end[0] in ctx.engine.backend.eos_token_ids
    assert "<|im_end|>" in plan.stop_strings


@pytest.mark.parametrize("case", ["capital", "capital-with-system", "dragon"])
def test_greedy_engine_equals_plain_transformers(ctx, case):
    """Token for token what plain ``generate`` gives (stored in tests/golden/, checked live in test_default_model.py)."""
    golden = load_golden()["cases"][case]
    messages = golden["source"]
    system = messages[0]["content"] if messages[0]["role"] == "system" else ""
    params = GREEDY.replace(max_new_tokens=golden["max_new_tokens"])
    text, ids, plan = reply(ctx, messages[-1]["content"], params, ChatSettings(system=system))
    assert plan.prompt == golden["prompt"]
    assert ctx.engine.backend.encode(plan.prompt) == golden["prompt_ids"]
    assert ids == golden["ids"]
    assert text == golden["text"]
    if case.startswith("capital"):
        assert "Paris" in text


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


@pytest.mark.slow  # NF4 through bitsandbytes on the CPU: a GPU-oriented check, minutes here
def test_default_model_answers_at_4_bits_nf4(default_model_dir):
    # Its own load: 4-bit is a different load option from the session's shared float32 model.
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
    # Its own load and unload: what is measured is the memory a load takes and an unload gives back.
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


@pytest.mark.slow  # dequantizes the GGUF into a float32 model through transformers: slow on the CPU
def test_the_gguf_file_loads_through_transformers(default_model_dir):
    # Its own load: another file and loader than the session's shared model.
    ctx = make_context(default_model_dir.parent, loader="transformers", dtype="float32")
    ctx.models.load("SmolLM2-135M-Instruct-Q4_1.gguf")
    try:
        assert ctx.models.current.loader == "transformers"
        text, _, _ = reply(ctx, "What is the capital of France?")
        assert "Paris" in text
    finally:
        ctx.models.unload()
