"""Extensions: loading, params overrides, every hook in order on the chat and notebook paths,
isolation of a raising extension, a missing requirement, first-wins hooks, and the built-ins."""
from __future__ import annotations

import textwrap
import threading
from pathlib import Path

import pytest

from modules.core.chat import ChatSettings, Turn
from modules.core.config import AppConfig, LoaderOptions
from modules.core.context import build_context
from modules.core.generation import prepare_chat, prepare_text, run_generation
from modules.core.sampling import SamplerParams
from tiny_models import build_tiny_llama

GREEDY = SamplerParams(do_sample=False, max_new_tokens=12)
CHAT_ORDER = ["history_modifier", "state_modifier", "chat_input_modifier", "input_modifier", "bot_prefix_modifier",
              "tokenizer_modifier", "logits_processor_modifier", "output_modifier"]

# An extension written the way that ecosystem writes them: module-level params, plain hook
# functions, Gradio components in ui(), a transformers LogitsProcessor.
RECORDER = '''
import gradio as gr
import torch
from transformers import LogitsProcessor

params = {"display_name": "Recorder", "is_tab": False, "marker": "[in]", "tag": "default"}
calls = []


def setup():
    calls.append(("setup", params["tag"]))


def history_modifier(history):
    calls.append(("history_modifier", history))
    return history


def state_modifier(state):
    calls.append(("state_modifier", dict(state)))
    state["max_new_tokens"] = 5
    return state


def chat_input_modifier(text, visible_text, state):
    calls.append(("chat_input_modifier", text, visible_text))
    return text + " (ci)", visible_text + " (shown)"


def input_modifier(string, state, is_chat=False):
    calls.append(("input_modifier", string, is_chat))
    return string + " " + params["marker"]


def bot_prefix_modifier(string, state):
    calls.append(("bot_prefix_modifier", string))
    return string + "Sure:"


def tokenizer_modifier(state, prompt, input_ids, input_embeds):
    calls.append(("tokenizer_modifier", prompt, tuple(input_ids.shape), input_embeds))
    return prompt, input_ids, input_embeds


class CountCalls(LogitsProcessor):
    def __init__(self):
        self.calls = 0

    def __call__(self, input_ids, scores):
        self.calls += 1
        return scores


def logits_processor_modifier(processor_list, input_ids):
    counter = CountCalls()
    processor_list.append(counter)
    calls.append(("logits_processor_modifier", tuple(input_ids.shape), counter))


def output_modifier(string, state, is_chat=False):
    calls.append(("output_modifier", string, is_chat))
    return "<<" + string + ">>"


def custom_css():
    return ".recorder-box { color: red; }"


def custom_js():
    return "console.log('recorder');"


def ui():
    gr.Checkbox(label="Recorder on")
'''

RAISING = '''
params = {"display_name": "Broken"}


def input_modifier(string):
    raise RuntimeError("input is broken")


def output_modifier(string, state):
    raise ValueError("output is broken")


def bot_prefix_modifier(string, state):
    return 42  # not text
'''

MISSING = '''
import corral_package_that_does_not_exist  # noqa: F401

params = {"display_name": "Needs a package"}
'''

FLEXIBLE = '''
def input_modifier(string):
    return string.upper()


def output_modifier(text):
    return text + "!"
'''


def write_extension(folder: Path, name: str, source: str, requirements: str | None = None) -> None:
    (folder / name).mkdir(parents=True, exist_ok=True)
    (folder / name / "script.py").write_text(textwrap.dedent(source), encoding="utf-8")
    if requirements is not None:
        (folder / name / "requirements.txt").write_text(requirements, encoding="utf-8")


@pytest.fixture(scope="module")
def ext_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("extensions")
    write_extension(folder, "recorder", RECORDER)
    write_extension(folder, "broken", RAISING)
    write_extension(folder, "needs_pkg", MISSING, requirements="corral_package_that_does_not_exist\n")
    write_extension(folder, "flexible", FLEXIBLE)
    return folder


@pytest.fixture(scope="module")
def ctx(tmp_path_factory, ext_dir):
    models = tmp_path_factory.mktemp("models")
    build_tiny_llama(models / "tiny-llama")
    config = AppConfig(models_dir=models, extensions_dir=ext_dir, user_data_dir=tmp_path_factory.mktemp("data"),
                       loader=LoaderOptions(dtype="float32", cpu=True))
    config.settings = {"recorder-marker": "[override]", "recorder-tag": "from settings"}
    context = build_context(config)
    context.models.load("tiny-llama")
    yield context
    context.models.unload()


@pytest.fixture()
def recorder(ctx):
    assert ctx.extensions.enable(ctx, ["recorder"]) == ["recorder"]
    module = ctx.extensions.get("recorder").module
    module.calls.clear()
    yield module
    ctx.extensions.enable(ctx, [])


def names(calls) -> list[str]:
    return [call[0] for call in calls]


def test_discovery_params_override_and_setup(ctx, recorder):
    assert ctx.extensions.available() == ["broken", "flexible", "needs_pkg", "recorder"]
    ext = ctx.extensions.get("recorder")
    assert ext.display_name == "Recorder" and ext.is_tab is False
    assert ext.params["marker"] == "[override]"
    ctx.extensions.enable(ctx, [])  # disabling and enabling again reuses the loaded module
    ctx.extensions.enable(ctx, ["recorder"])
    assert ctx.extensions.get("recorder").module is ext.module and ctx.extensions.enabled == ["recorder"]
    assert "recorder-box" in ctx.extensions.page_text("custom_css")
    assert "console.log('recorder')" in ctx.extensions.page_text("custom_js")


def test_setup_sees_the_overridden_params(tmp_path, ctx):
    write_extension(tmp_path, "setup_probe", 'params = {"x": 1}\nseen = []\ndef setup():\n    seen.append(params["x"])\n')
    from modules.core.extensions import ExtensionManager

    manager = ExtensionManager(tmp_path)
    assert manager.enable(ctx, ["setup_probe"], {"setup_probe-x": 7}) == ["setup_probe"]
    assert manager.get("setup_probe").module.seen == [7]


def test_chat_path_runs_every_hook_in_order_with_the_documented_arguments(ctx, recorder):
    history = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
    prepared = prepare_chat(ctx, history, Turn(user_message="Tell me"), ChatSettings(), GREEDY)
    generation = run_generation(ctx, prepared)
    deltas = list(generation)
    calls = recorder.calls
    assert names(calls) == CHAT_ORDER
    by_name = {call[0]: call for call in calls}
    assert by_name["history_modifier"][1] == {"internal": [["hi", "hello"]], "visible": [["hi", "hello"]]}
    assert by_name["state_modifier"][1]["max_new_tokens"] == GREEDY.max_new_tokens
    assert by_name["state_modifier"][1]["interface"] == "chat"
    assert by_name["chat_input_modifier"][1:] == ("Tell me", "Tell me")
    assert by_name["input_modifier"][1:] == ("Tell me (ci)", True)
    assert by_name["bot_prefix_modifier"][1] == ""
    # what the hooks returned is what the model got, and what the caller stores
    assert prepared.user_text == "Tell me (ci) [override]" and prepared.visible_text == "Tell me (shown)"
    assert "Tell me (ci) [override]" in prepared.request.prompt and prepared.request.prompt.endswith("Sure:")
    _, prompt, shape, embeds = by_name["tokenizer_modifier"]
    assert prompt == prepared.request.prompt and embeds is None
    assert shape == (1, len(ctx.engine.backend.encode(prompt)))
    _, lp_shape, counter = by_name["logits_processor_modifier"]
    assert lp_shape == shape
    # state_modifier's max_new_tokens took effect, and the processor really ran once per token
    assert generation.last.completion_tokens <= 5 and counter.calls == len(generation.token_ids) > 0
    assert deltas[-1].finish_reason == ("length" if generation.last.completion_tokens == 5 else "stop")
    assert by_name["output_modifier"][1:] == (generation.reply, True)
    assert generation.shown == f"<<{generation.reply}>>" and "<<" not in generation.text
    assert generation.notices == []


def test_notebook_path_runs_the_text_hooks_in_order(ctx, recorder):
    prepared = prepare_text(ctx, "Numbers: one two", GREEDY)
    generation = run_generation(ctx, prepared)
    list(generation)
    assert names(recorder.calls) == ["state_modifier", "input_modifier", "tokenizer_modifier",
                                     "logits_processor_modifier", "output_modifier"]
    assert recorder.calls[1][1:] == ("Numbers: one two", False)
    assert prepared.request.prompt == "Numbers: one two [override]"
    assert recorder.calls[-1][1:] == (generation.text, False)
    assert generation.shown == f"<<{generation.text}>>"


def test_a_raising_extension_is_reported_and_the_reply_still_arrives(ctx, recorder):
    ctx.extensions.enable(ctx, ["broken", "recorder"])
    prepared = prepare_chat(ctx, [], Turn(user_message="Hello"), ChatSettings(), GREEDY)
    generation = run_generation(ctx, prepared)
    list(generation)
    assert generation.last.finish_reason in {"stop", "length"} and generation.last.completion_tokens > 0
    hooks = sorted((n.extension, n.hook) for n in generation.notices)
    assert hooks == [("broken", "bot_prefix_modifier"), ("broken", "input_modifier"), ("broken", "output_modifier")]
    assert all("broken" in str(n) and "skipped" in str(n) for n in generation.notices)
    input_notice = next(n for n in generation.notices if n.hook == "input_modifier")
    assert "input is broken" in str(input_notice)  # the extension's own error, passed on
    # the next extension still got the unchanged value
    assert prepared.user_text == "Hello (ci) [override]"
    assert generation.shown == f"<<{generation.reply}>>"
    assert ctx.extensions.report.recent(3)[-1].extension == "broken"


def test_a_missing_requirement_is_reported_with_the_pip_command(ctx, ext_dir):
    enabled = ctx.extensions.enable(ctx, ["needs_pkg", "flexible"])
    assert enabled == ["flexible"]
    message = ctx.extensions.failed()["needs_pkg"]
    assert "corral_package_that_does_not_exist" in message
    assert "pip install -r" in message and str(Path("needs_pkg") / "requirements.txt") in message
    prepared = prepare_text(ctx, "abc", GREEDY)  # the app keeps working with the others
    assert prepared.request.prompt == "ABC"
    ctx.extensions.enable(ctx, [])


def test_flexible_signatures_get_only_what_they_declare(ctx):
    ctx.extensions.enable(ctx, ["flexible"])
    try:
        generation = run_generation(ctx, prepare_text(ctx, "numbers:", GREEDY))
        list(generation)
        assert generation.prepared.request.prompt == "NUMBERS:" and generation.notices == []
        assert generation.shown == generation.text + "!"
    finally:
        ctx.extensions.enable(ctx, [])


def test_first_extension_wins_for_custom_prompt_reply_and_length(tmp_path, ctx):
    write_extension(tmp_path, "first", '''
def custom_generate_chat_prompt(user_input, state, **kwargs):
    return "PROMPT-FIRST " + user_input + (" continue" if kwargs["_continue"] else "")

def custom_generate_reply(question, original_question, state, stopping_strings=None, is_chat=False):
    yield "Hello"
    yield "Hello world"

def custom_tokenized_length(prompt):
    return 10_000
''')
    write_extension(tmp_path, "second", '''
def custom_generate_chat_prompt(user_input, state, **kwargs):
    return "PROMPT-SECOND"

def custom_generate_reply(question, original_question, state, stopping_strings=None, is_chat=False):
    yield "second"
''')
    from modules.core.extensions import ExtensionManager

    saved = ctx.extensions
    ctx.extensions = ExtensionManager(tmp_path)
    try:
        ctx.extensions.enable(ctx, ["first", "second"])
        history = [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]
        prepared = prepare_chat(ctx, history, Turn(user_message="Q"), ChatSettings(), GREEDY)
        assert prepared.request.prompt == "PROMPT-FIRST Q"
        assert prepared.plan.dropped_turns == 2  # custom_tokenized_length said nothing fits
        generation = run_generation(ctx, prepared)
        deltas = list(generation)
        assert generation.text == "Hello world" and [d.text for d in deltas[:2]] == ["Hello", " world"]
        assert deltas[-1].finish_reason == "stop"
    finally:
        ctx.extensions = saved


def test_a_raising_custom_reply_falls_back_to_the_model(tmp_path, ctx):
    write_extension(tmp_path, "bad_reply", '''
def custom_generate_reply(question, original_question, state, stopping_strings=None, is_chat=False):
    raise RuntimeError("no reply today")
    yield ""
''')
    from modules.core.extensions import ExtensionManager

    saved = ctx.extensions
    ctx.extensions = ExtensionManager(tmp_path)
    try:
        ctx.extensions.enable(ctx, ["bad_reply"])
        generation = run_generation(ctx, prepare_text(ctx, "Numbers: one", GREEDY))
        list(generation)
        plain = "".join(d.text for d in ctx.engine.generate(
            __import__("modules.core.engine", fromlist=["GenerationRequest"]).GenerationRequest(
                prompt="Numbers: one", params=GREEDY)))
        assert generation.text == plain
        assert [(n.extension, n.hook) for n in generation.notices] == [("bad_reply", "custom_generate_reply")]
    finally:
        ctx.extensions = saved


def test_stable_surface_inside_a_hook(tmp_path, ctx):
    write_extension(tmp_path, "surface", '''
from modules import extension_api as corral

seen = {}

def input_modifier(string, state, is_chat=False):
    seen["history"] = corral.current_history()
    seen["state"] = corral.current_state()
    seen["name"] = corral.model_name()
    seen["settings"] = corral.model_settings()
    seen["ids"] = corral.encode("hello")
    seen["text"] = corral.decode(seen["ids"])
    seen["generated"] = corral.generate("Numbers: one", max_new_tokens=4, do_sample=False)
    return string
''')
    from modules.core.extensions import ExtensionManager

    saved = ctx.extensions
    ctx.extensions = ExtensionManager(tmp_path)
    try:
        ctx.extensions.enable(ctx, ["surface"])
        history = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]
        prepare_chat(ctx, history, Turn(user_message="Q"), ChatSettings(), GREEDY, state={"chat_id": 3})
        seen = ctx.extensions.get("surface").module.seen
        assert [m["content"] for m in seen["history"]] == ["hi", "yo"]
        assert seen["state"]["chat_id"] == 3 and seen["state"]["max_new_tokens"] == 12
        assert seen["name"] == "tiny-llama" and seen["settings"]["context_length"] == ctx.engine.context_length
        assert seen["ids"] == ctx.engine.backend.encode("hello") and "hello" in seen["text"]
        assert isinstance(seen["generated"], str) and seen["generated"]
    finally:
        ctx.extensions = saved


def test_flags_then_settings_file_give_the_hook_order(tmp_path):
    from app import build_config, parse_args

    settings = tmp_path / "settings.yaml"
    settings.write_text("extensions: [gamma, alpha]\nalpha-level: 3\n", encoding="utf-8")
    config = build_config(parse_args(["--extensions", "beta", "alpha", "--settings", str(settings)]), tmp_path)
    assert config.extensions == ["beta", "alpha", "gamma"]
    assert config.settings["alpha-level"] == 3


def test_the_session_tab_applies_hooks_at_once_and_says_when_a_restart_is_needed(ctx, tmp_path):
    from modules.core.config import read_settings_file
    from modules.ui.extensions_ui import apply_selection, status_markdown

    saved_path = ctx.config.settings_path
    ctx.config.settings_path = tmp_path / "settings.yaml"
    try:
        message = apply_selection(ctx, ["flexible"], had_ui=set())
        assert ctx.extensions.enabled == ["flexible"] and "Restart" not in message
        assert prepare_text(ctx, "abc", GREEDY).request.prompt == "ABC"  # applied without a restart
        message = apply_selection(ctx, ["flexible", "recorder", "needs_pkg"], had_ui=set())
        assert ctx.extensions.enabled == ["flexible", "recorder"]
        assert "Restart Corral to see the controls" in message and "Recorder" in message
        assert "needs_pkg" in status_markdown(ctx) and "pip install -r" in status_markdown(ctx)
        assert read_settings_file(ctx.config.settings_path)["extensions"] == ["flexible", "recorder"]
    finally:
        ctx.extensions.enable(ctx, [])
        ctx.config.settings_path = saved_path


def test_the_exact_prompt_view_shows_what_the_chat_sends_hooks_included(ctx):
    """The UI's "show the exact prompt" builds the turn with the chat's own prepare, on the stored chat."""
    from modules.core.conversation import Conversation, TurnSetup
    from modules.ui.prompt_panel import exact_prompt

    conv = Conversation(ctx, "local")
    chat_id = conv.new_chat(ChatSettings())
    ctx.store.add_message("local", chat_id, "user", "first question", visible="first question")
    ctx.store.add_message("local", chat_id, "assistant", "first answer", visible="first answer")
    setup = TurnSetup(ChatSettings(), GREEDY)
    assert ctx.extensions.enable(ctx, ["flexible"]) == ["flexible"]
    try:
        shown = exact_prompt(ctx, "local", chat_id, [], "tell me", setup)
        sent = prepare_chat(ctx, [{"role": "user", "content": "first question"},
                                  {"role": "assistant", "content": "first answer"}],
                            Turn(user_message="tell me"), ChatSettings(), GREEDY)
    finally:
        ctx.extensions.enable(ctx, [])
    assert "TELL ME" in shown.request.prompt and "first answer" in shown.request.prompt  # input_modifier applied
    assert (shown.request.prompt, shown.request.input_ids) == (sent.request.prompt, sent.request.input_ids)
    assert shown.request.input_ids and ctx.engine.backend.decode(shown.request.input_ids).count("TELL ME") == 1
