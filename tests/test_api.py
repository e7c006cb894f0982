"""The OpenAI-compatible API with the official ``openai`` client, on the real default model.

Greedy output over the API must equal the engine's own greedy output for the same
messages: the API adds transport, never a second way to build prompts or generate.
"""
from __future__ import annotations

import threading

import httpx
import openai
import pytest

from api_helpers import GREEDY_QUESTION, default_context, run_engine, sse_lines, watch_generations
from modules.api.server import start_api
from modules.core.chat import Character, ChatSettings, Turn
from modules.core.config import DEFAULT_MODEL_NAME
from modules.core.engine import GenerationRequest
from modules.core.generation import chat_prompt, chat_request
from modules.core.sampling import SamplerParams
from modules.core.templates import render

MAX = 24


@pytest.fixture(scope="module")
def served(default_model_dir, default_model, tmp_path_factory):
    ctx = default_context(default_model_dir.parent, tmp_path_factory.mktemp("api-user"), shared=default_model)
    handle = start_api(ctx)
    yield ctx, handle
    handle.stop()
    ctx.models.unload()


@pytest.fixture(scope="module")
def ctx(served):
    return served[0]


@pytest.fixture(scope="module")
def client(served) -> openai.OpenAI:
    return openai.OpenAI(base_url=served[1].url + "/v1", api_key="not-needed", max_retries=0, timeout=120)


@pytest.fixture(scope="module")
def http(served):
    with httpx.Client(base_url=served[1].url, timeout=120) as http_client:
        yield http_client


def engine_greedy(ctx, history, user_message, max_new_tokens=MAX, settings=None, format_name=None):
    params = SamplerParams(do_sample=False, max_new_tokens=max_new_tokens)
    request, _ = chat_request(ctx, history, Turn(user_message=user_message), settings or ChatSettings(), params,
                              format_name)
    return run_engine(ctx, request)


def test_models_list_and_retrieve(client):
    ids = [m.id for m in client.models.list().data]
    assert ids == [DEFAULT_MODEL_NAME]
    assert client.models.retrieve(DEFAULT_MODEL_NAME).id == DEFAULT_MODEL_NAME


def test_greedy_chat_equals_engine_greedy(ctx, client):
    history = [{"role": "user", "content": "Hi!"}, {"role": "assistant", "content": "Hello! How can I help?"}]
    messages = [{"role": "system", "content": "Answer in one sentence."}, *history,
                {"role": "user", "content": GREEDY_QUESTION}]
    answer = client.chat.completions.create(model=DEFAULT_MODEL_NAME, messages=messages, max_tokens=MAX,
                                            temperature=0)
    expected, deltas = engine_greedy(ctx, history, GREEDY_QUESTION,
                                     settings=ChatSettings(system="Answer in one sentence."))
    assert expected.strip()
    assert answer.choices[0].message.content == expected
    assert answer.choices[0].message.role == "assistant"
    assert answer.object == "chat.completion"
    assert answer.usage.prompt_tokens == deltas[-1].prompt_tokens
    assert answer.usage.completion_tokens == deltas[-1].completion_tokens
    assert answer.usage.total_tokens == answer.usage.prompt_tokens + answer.usage.completion_tokens


def test_streaming_chat_matches_and_reports_usage(ctx, client):
    messages = [{"role": "user", "content": GREEDY_QUESTION}]
    stream = client.chat.completions.create(model=DEFAULT_MODEL_NAME, messages=messages, max_tokens=MAX,
                                            temperature=0, stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    content = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(content) > 2  # really streamed, not one piece
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["stop"]  # "The capital of France is Paris." ends well within MAX tokens
    usage_chunk = chunks[-1]
    assert usage_chunk.choices == [] and usage_chunk.usage.completion_tokens > 0
    expected, deltas = engine_greedy(ctx, [], GREEDY_QUESTION)
    assert "".join(content) == expected
    assert usage_chunk.usage.prompt_tokens == deltas[-1].prompt_tokens


def test_content_parts_equal_plain_text(client):
    plain = client.chat.completions.create(model=DEFAULT_MODEL_NAME, temperature=0, max_tokens=MAX,
                                           messages=[{"role": "user", "content": GREEDY_QUESTION}])
    parts = client.chat.completions.create(model=DEFAULT_MODEL_NAME, temperature=0, max_tokens=MAX, messages=[
        {"role": "user", "content": [{"type": "text", "text": "What is the capital "},
                                     {"type": "text", "text": "of France?"}]}])
    assert parts.choices[0].message.content == plain.choices[0].message.content


def test_text_completion_greedy_stream_and_not(ctx, client):
    prompt = "The three primary colors are"
    expected, _ = run_engine(ctx, GenerationRequest(prompt=prompt, params=SamplerParams(do_sample=False,
                                                                                         max_new_tokens=12)))
    whole = client.completions.create(model=DEFAULT_MODEL_NAME, prompt=prompt, max_tokens=12, temperature=0)
    assert whole.object == "text_completion"
    assert whole.choices[0].text == expected
    streamed = "".join(c.choices[0].text for c in client.completions.create(
        model=DEFAULT_MODEL_NAME, prompt=prompt, max_tokens=12, temperature=0, stream=True) if c.choices)
    assert streamed == expected
    echoed = client.completions.create(model=DEFAULT_MODEL_NAME, prompt=prompt, max_tokens=12, temperature=0,
                                       echo=True)
    assert echoed.choices[0].text == prompt + expected


def test_stop_strings_cut_the_reply(ctx, client):
    full, _ = engine_greedy(ctx, [], GREEDY_QUESTION)
    words = full.split()
    assert len(words) >= 3, full
    stop = " " + words[2]
    answer = client.chat.completions.create(model=DEFAULT_MODEL_NAME, temperature=0, max_tokens=MAX, stop=[stop],
                                            messages=[{"role": "user", "content": GREEDY_QUESTION}])
    assert answer.choices[0].message.content == full[: full.index(stop)]
    assert answer.choices[0].finish_reason == "stop"


def test_max_tokens_limits_and_huge_is_clamped(client):
    short = client.chat.completions.create(model=DEFAULT_MODEL_NAME, temperature=0, max_tokens=3,
                                           messages=[{"role": "user", "content": "Tell me a long story."}])
    assert short.usage.completion_tokens == 3 and short.choices[0].finish_reason == "length"
    huge = client.chat.completions.create(model=DEFAULT_MODEL_NAME, temperature=0, max_tokens=10**12, stop=["."],
                                          messages=[{"role": "user", "content": GREEDY_QUESTION}])
    assert huge.choices[0].finish_reason == "stop"
    assert 0 < huge.usage.completion_tokens < 100


def test_seed_makes_sampling_repeatable(client):
    def sample(seed: int) -> str:
        return client.chat.completions.create(
            model=DEFAULT_MODEL_NAME, temperature=1.0, top_p=0.95, seed=seed, max_tokens=12,
            messages=[{"role": "user", "content": "Name a random animal."}]).choices[0].message.content

    assert sample(1234) == sample(1234)


def test_logit_bias_bans_the_greedy_first_token(ctx, client):
    _, deltas = engine_greedy(ctx, [], GREEDY_QUESTION, max_new_tokens=4)
    first_id = next(d.token_ids[0] for d in deltas if d.token_ids)
    first_text = ctx.engine.backend.decode([first_id])
    answer = client.chat.completions.create(model=DEFAULT_MODEL_NAME, temperature=0, max_tokens=4,
                                            logit_bias={str(first_id): -100},
                                            messages=[{"role": "user", "content": GREEDY_QUESTION}])
    assert not answer.choices[0].message.content.startswith(first_text)


def repeated_words(text: str) -> int:
    words = text.split()
    return len(words) - len(set(words))


def test_penalties_change_the_greedy_reply(client):
    def ask(**penalties):
        return client.chat.completions.create(model=DEFAULT_MODEL_NAME, temperature=0, max_tokens=16, **penalties,
                                              messages=[{"role": "user", "content": "Write the word 'la' eight times."}])

    plain = ask()
    penalized = ask(presence_penalty=1.5, frequency_penalty=1.5)
    assert penalized.usage.completion_tokens <= 16 and "warnings" not in penalized.model_extra
    plain_text, penalized_text = plain.choices[0].message.content, penalized.choices[0].message.content
    assert repeated_words(plain_text) >= 3, plain_text  # unpenalized, the greedy reply repeats itself
    assert penalized_text != plain_text
    assert repeated_words(penalized_text) < repeated_words(plain_text), (plain_text, penalized_text)


def test_preset_as_extra_field(ctx, client):
    greedy, _ = engine_greedy(ctx, [], GREEDY_QUESTION)
    answer = client.chat.completions.create(model=DEFAULT_MODEL_NAME, max_tokens=MAX, extra_body={
        "preset": "Deterministic"}, messages=[{"role": "user", "content": GREEDY_QUESTION}])
    assert answer.choices[0].message.content == greedy
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model=DEFAULT_MODEL_NAME, max_tokens=4, extra_body={"preset": "No such"},
                                       messages=[{"role": "user", "content": "Hi"}])
    assert err.value.body["param"] == "preset"


def test_chat_prompt_endpoint_shows_the_exact_prompt(ctx, http):
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
                {"role": "assistant", "content": "Hello."}, {"role": "user", "content": "How are you?"}]
    shown = http.post("/v1/internal/chat-prompt", json={"messages": messages, "instruction_format": "Alpaca"}).json()
    expected = render(ctx.formats.get("Alpaca"), messages, add_generation_prompt=True)
    assert shown["prompt"] == expected
    assert shown["instruction_format"] == "Alpaca"
    assert shown["prompt_tokens"] == ctx.engine.count_tokens(expected)
    assert shown["stop_strings"] == ctx.formats.get("Alpaca").stop_strings


def test_chat_mode_with_inline_character(ctx, http, client):
    character = {"name": "Ada", "context": "Ada is a mathematician who loves engines.", "greeting": "Hello."}
    body = {"messages": [{"role": "user", "content": "Who are you?"}], "mode": "chat", "character": character,
            "user_name": "Sam"}
    shown = http.post("/v1/internal/chat-prompt", json=body).json()
    settings = ChatSettings(mode="chat", character=Character(**character), user_name="Sam")
    plan = chat_prompt(ctx, [], Turn(user_message="Who are you?"), settings, SamplerParams())
    assert shown["prompt"] == plan.prompt and shown["prompt"].endswith("Ada:")
    answer = client.chat.completions.create(model=DEFAULT_MODEL_NAME, temperature=0, max_tokens=MAX,
                                            messages=body["messages"], extra_body={k: v for k, v in body.items()
                                                                                   if k != "messages"})
    expected, _ = engine_greedy(ctx, [], "Who are you?", settings=settings)
    assert answer.choices[0].message.content == expected
    assert "\nSam:" not in answer.choices[0].message.content  # the chat mode's stop string applies


def test_last_assistant_message_is_continued(ctx, client):
    full, _ = engine_greedy(ctx, [], GREEDY_QUESTION)
    prefix = " ".join(full.split()[:3])
    answer = client.chat.completions.create(model=DEFAULT_MODEL_NAME, temperature=0, max_tokens=MAX, messages=[
        {"role": "user", "content": GREEDY_QUESTION}, {"role": "assistant", "content": prefix}])
    assert (prefix + answer.choices[0].message.content).strip() == full.strip()


def test_tokens_endpoints(ctx, http):
    text = "Corral serves models."
    ids = ctx.engine.backend.encode(text)
    assert http.post("/v1/internal/token-count", json={"text": text}).json() == {"length": len(ids)}
    encoded = http.post("/v1/internal/encode", json={"text": text}).json()
    assert encoded["tokens"] == ids
    assert http.post("/v1/internal/decode", json={"tokens": ids}).json()["text"] == ctx.engine.backend.decode(ids)
    assert DEFAULT_MODEL_NAME in http.get("/v1/internal/model/list").json()["model_names"]
    info = http.get("/v1/internal/model/info").json()
    assert info["model_name"] == DEFAULT_MODEL_NAME and info["context_length"] == ctx.engine.context_length


def test_stop_generation_ends_a_stream(ctx, http):
    body = {"messages": [{"role": "user", "content": "Write a very long story about a dragon."}],
            "max_tokens": 200, "temperature": 0, "stream": True}
    texts, finishes = [], []
    with watch_generations(ctx.engine) as watch:
        with http.stream("POST", "/v1/chat/completions", json=body) as response:
            for data in sse_lines(response):
                if data == "[DONE]":
                    break
                choice = httpx.Response(200, content=data).json()["choices"][0]
                if choice["delta"].get("content"):
                    texts.append(choice["delta"]["content"])
                    if len(texts) == 3:
                        assert http.post("/v1/internal/stop-generation").json()["stopped"] == 1
                if choice["finish_reason"]:
                    finishes.append(choice["finish_reason"])
        assert watch.finished.wait(60)
    assert 3 <= len(texts) < 10 and finishes == ["stop"]
    assert watch.last[0].finish_reason == "cancelled"  # stopped, not ended by EOS or the budget


def test_a_short_request_is_not_held_behind_a_long_stream(client):
    """Concurrent requests share decode steps (modules/core/batching.py): the short one, sent
    while the long one streams, ends first instead of waiting for the long one's whole reply."""
    order: list[str] = []
    first_token = threading.Event()

    def long_stream() -> None:
        for chunk in client.chat.completions.create(model=DEFAULT_MODEL_NAME, temperature=0, max_tokens=64,
                                                    stream=True, extra_body={"ban_eos_token": True},
                                                    messages=[{"role": "user", "content": "Count."}]):
            if chunk.choices and chunk.choices[0].delta.content:
                first_token.set()
            if chunk.choices and chunk.choices[0].finish_reason:
                order.append("long")

    worker = threading.Thread(target=long_stream)
    worker.start()
    assert first_token.wait(60)
    client.chat.completions.create(model=DEFAULT_MODEL_NAME, temperature=0, max_tokens=2,
                                   messages=[{"role": "user", "content": "Hi"}])
    order.append("short")
    worker.join(120)
    assert order == ["short", "long"]


CHECKER = """
params = {"display_name": "Checker"}


def input_modifier(string, state, is_chat=False):
    return string + " Answer in one word."


def output_modifier(string, state, is_chat=False):
    return string + " [checked via " + state["interface"] + "]"
"""


def test_extension_hooks_apply_to_api_requests(ctx, client, http):
    folder = ctx.config.extensions_dir / "checker"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "script.py").write_text(CHECKER, encoding="utf-8")
    assert ctx.extensions.enable(ctx, ["checker"]) == ["checker"]
    try:
        messages = [{"role": "user", "content": GREEDY_QUESTION}]
        shown = http.post("/v1/internal/chat-prompt", json={"messages": messages}).json()["prompt"]
        assert f"{GREEDY_QUESTION} Answer in one word." in shown  # input_modifier, in the exact prompt
        ctx.extensions.enable(ctx, [])
        expected, _ = engine_greedy(ctx, [], f"{GREEDY_QUESTION} Answer in one word.")
        ctx.extensions.enable(ctx, ["checker"])
        whole = client.chat.completions.create(model=DEFAULT_MODEL_NAME, messages=messages, max_tokens=MAX,
                                               temperature=0)
        assert whole.choices[0].message.content == expected + " [checked via api]"
        streamed = "".join(c.choices[0].delta.content or "" for c in client.chat.completions.create(
            model=DEFAULT_MODEL_NAME, messages=messages, max_tokens=MAX, temperature=0, stream=True) if c.choices)
        assert streamed == whole.choices[0].message.content
        text = client.completions.create(model=DEFAULT_MODEL_NAME, prompt="Hello", max_tokens=2, temperature=0)
        assert text.choices[0].text.endswith(" [checked via api]")
    finally:
        ctx.extensions.enable(ctx, [])
