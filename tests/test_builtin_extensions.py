"""The built-in extensions on the real default model, through the real chat and text paths."""
from __future__ import annotations

import html
import math
import re
import threading
from pathlib import Path

import pytest

from modules.core.chat import ChatSettings, Turn
from modules.core.config import ROOT, AppConfig
from modules.core.context import build_context
from modules.core.conversation import Conversation, TurnSetup
from modules.core.extensions import HOOKS
from modules.core.generation import prepare_chat, prepare_text, run_generation
from modules.core.sampling import SamplerParams

GREEDY = SamplerParams(do_sample=False, max_new_tokens=40)
QUESTION = "What is the capital of France?"


@pytest.fixture(scope="module")
def ctx(default_model_dir: Path, default_model, tmp_path_factory):
    config = AppConfig(models_dir=default_model_dir.parent, extensions_dir=ROOT / "extensions",
                       user_data_dir=tmp_path_factory.mktemp("user_data"))
    context = default_model.lend(build_context(config))  # the session's model; extensions are this context's
    yield context
    context.extensions.enable(context, [])
    context.models.unload()
    context.store.close()


@pytest.fixture()
def only(ctx):
    """Enable exactly the given built-ins for one test."""
    def enable(*names: str):
        assert ctx.extensions.enable(ctx, list(names)) == list(names), ctx.extensions.failed()
        return [ctx.extensions.get(n).module for n in names]
    yield enable
    ctx.extensions.enable(ctx, [])


def chat_reply(ctx, question: str = QUESTION, params: SamplerParams = GREEDY):
    generation = run_generation(ctx, prepare_chat(ctx, [], Turn(user_message=question), ChatSettings(), params))
    list(generation)
    return generation


def test_every_builtin_is_available(ctx):
    assert {"example", "character_bias", "long_replies", "documents", "token_probabilities"} <= set(
        ctx.extensions.available())


def test_example_defines_every_hook_and_changes_nothing(ctx, only):
    plain = chat_reply(ctx)
    (example,) = only("example")
    defined = {h for h in HOOKS if callable(getattr(example, h, None))}
    assert defined == set(HOOKS) - {"custom_generate_chat_prompt", "custom_generate_reply", "custom_tokenized_length"}
    with_example = chat_reply(ctx)
    assert with_example.text == plain.text and with_example.shown == plain.shown
    assert with_example.notices == []


def test_character_bias_starts_every_reply_hidden(ctx, only):
    plain = chat_reply(ctx)
    (bias,) = only("character_bias")
    bias.params["bias string"] = "Bonjour! Je suis"
    conversation = Conversation(ctx, "bias-user")
    chat_id = conversation.new_chat(ChatSettings())
    steps = list(conversation.send(chat_id, QUESTION, TurnSetup(params=GREEDY), threading.Event()))
    prepared = prepare_chat(ctx, [], Turn(user_message=QUESTION), ChatSettings(), GREEDY)
    assert prepared.request.prompt.endswith("<|im_start|>assistant\nBonjour! Je suis")
    reply = conversation.messages(chat_id)[-1]
    # the model continued from the hidden string: the reply follows it and differs from the plain one
    assert reply["role"] == "assistant" and reply["content"] == steps[-1].text
    assert not reply["content"].startswith("Bonjour") and reply["content"] != plain.text.lstrip()
    biased = run_generation(ctx, prepared)
    list(biased)
    assert biased.text.lstrip() == reply["content"]


def test_long_replies_holds_back_newline_and_eos(ctx, only):
    minimum = 30
    plain = chat_reply(ctx)
    plain_ids = plain.token_ids
    assert len(plain_ids) < minimum  # the plain reply is short: it ends (EOS) well before 30 tokens
    (long_replies,) = only("long_replies")
    long_replies.params["min_length"] = minimum
    longer = chat_reply(ctx)
    assert longer.last.completion_tokens >= minimum
    first = ctx.engine.backend.decode(longer.token_ids[:minimum])
    assert "\n" not in first and longer.text.startswith(plain.text.rstrip()[:10])


def test_token_probabilities_colours_the_chat_view_only(ctx, only):
    only("token_probabilities")
    conversation = Conversation(ctx, "colours-user")
    chat_id = conversation.new_chat(ChatSettings())
    steps = list(conversation.send(chat_id, QUESTION, TurnSetup(params=GREEDY), threading.Event()))
    reply = conversation.messages(chat_id)[-1]
    assert "<span" not in reply["content"] and "Paris" in reply["content"]
    shown = reply["visible"]
    assert shown == steps[-1].text and shown.count('<span class="token-probability"') >= 5
    assert html.unescape(re.sub(r"<[^>]+>", "", shown)) == reply["content"]
    probabilities = [float(p) for p in re.findall(r'title="([0-9.]+)"', shown)]
    assert all(0.0 <= p <= 1.0 for p in probabilities) and max(probabilities) > 0.5
    # the same reply through the engine: the first tooltip is exp(logprob) of the first token
    generation = chat_reply(ctx)
    assert probabilities[0] == pytest.approx(math.exp(generation.logprobs[0]), abs=1e-3)
    # the API and the notebook keep plain text
    api = run_generation(ctx, prepare_chat(ctx, [], Turn(user_message=QUESTION), ChatSettings(), GREEDY,
                                           interface="api"))
    list(api)
    notebook = run_generation(ctx, prepare_text(ctx, "The capital of France is", GREEDY))
    list(notebook)
    assert "<span" not in api.shown and "<span" not in notebook.shown
