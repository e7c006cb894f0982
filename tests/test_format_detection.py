"""Which format a model gets, and why: name rules in models/config.yaml, own templates, fallback.

The table of names is written from the reference ("Which model gets which format",
/work/shared/reference/prompt-formats.md) with names as users have them on disk. The second half
loads a tiny model copied under such names and checks the format and its reason where users see
them: the engine's prompt, /v1/internal/model/info, /v1/internal/chat-prompt and the Model tab.
"""
from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from modules.core.config import AppConfig, LoaderOptions
from modules.core.context import Context, build_context
from modules.core.errors import TemplateError
from modules.core.generation import format_for_loaded_model
from modules.core.model_rules import MODEL_KEYS, config_for_model, format_rule, loader_option_names
from tiny_models import build_tiny_llama

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "models" / "config.yaml"

DETECTED = [
    # Vicuna v1.1 (v1.1, v1.3, v1.5; written 1.1 by TheBloke) and later WizardLM
    ("TheBloke_vicuna-7B-1.1-HF", "Vicuna-v1.1"),
    ("lmsys_vicuna-13b-v1.5", "Vicuna-v1.1"),
    ("lmsys_vicuna-7b-v1.3", "Vicuna-v1.1"),
    ("lmsys_vicuna-13b-v1.5-16k", "Vicuna-v1.1"),
    ("vicuna-13b-v1.5.Q4_K_M.gguf", "Vicuna-v1.1"),
    ("TheBloke_vicuna-7B-v1.5-GGUF", "Vicuna-v1.1"),
    ("WizardLM_WizardLM-13B-V1.2", "Vicuna-v1.1"),
    ("WizardLM_WizardLM-30B-V1.0", "Vicuna-v1.1"),
    ("TheBloke_wizardLM-13B-1.0-fp16", "Vicuna-v1.1"),
    # Vicuna v0: no version, or v0
    ("eachadea_vicuna-13b", "Vicuna-v0"),
    ("lmsys_vicuna-7b-delta-v0", "Vicuna-v0"),
    ("vicuna-13b.q4_1.gguf", "Vicuna-v0"),
    # the rest of the 2023 family
    ("CarperAI_stable-vicuna-13b-delta", "stable-vicuna"),
    ("TheBloke_stable-vicuna-13B-GGUF", "stable-vicuna"),
    ("timdettmers_guanaco-33b-merged", "guanaco"),
    ("TheBloke_guanaco-65B-GPTQ", "guanaco"),
    ("TheBloke_koala-13B-HF", "Koala"),
    ("young-geng_koala", "Koala"),
    ("wizardlm-7b-v1.0", "WizardLM"),
    ("TheBloke_wizardLM-7B-HF", "WizardLM"),
    ("chavinlo_alpaca-native", "Alpaca"),
    ("stanford_alpaca-7b", "Alpaca"),
    ("tloen_alpaca-lora-7b", "Alpaca-LoRA"),
    ("chansung_alpaca-lora-13b", "Alpaca-LoRA"),
    ("alpaca_lora_7b.gguf", "Alpaca-LoRA"),
    ("OpenAssistant_oasst-sft-7-llama-30b-xor", "OpenAssistant"),
    ("OpenAssistant_oasst-sft-6-llama-30b-xor", "OpenAssistant"),
    ("OpenAssistant_oasst-sft-4-pythia-12b-epoch-3.5", "OpenAssistant"),
    ("oasst-sft-1-pythia-12b", "OpenAssistant"),
    ("meta-llama_Llama-2-7b-chat-hf", "LLaMA-2-chat"),
    ("TheBloke_Llama-2-7B-Chat-GGUF", "LLaMA-2-chat"),
    ("llama-2-13b-chat.Q4_K_M.gguf", "LLaMA-2-chat"),
    ("llama2-70b-chat", "LLaMA-2-chat"),
    # base models: a plain transcript, never Alpaca
    ("huggyllama_llama-7b", "Plain-transcript"),
    ("decapoda-research_llama-7b-hf", "Plain-transcript"),
    ("decapoda-research_llama-65b-hf", "Plain-transcript"),
    ("meta-llama_Llama-2-7b-hf", "Plain-transcript"),
    ("llama-2-13b.Q4_0.gguf", "Plain-transcript"),
    ("openlm-research_open_llama_7b", "Plain-transcript"),
]
UNMATCHED = ["SmolLM2-135M-Instruct", "my-finetune", "codellama-7b-instruct", "mistral-7b.Q4_K_M.gguf"]


@pytest.mark.parametrize("name, expected", DETECTED)
def test_detection_by_name_on_disk(name: str, expected: str) -> None:
    assert config_for_model(CONFIG, name).get("instruction_format") == expected
    pattern = format_rule(CONFIG, name)
    assert pattern is not None and re.match(pattern, name.lower())


@pytest.mark.parametrize("name", UNMATCHED)
def test_no_rule_for_other_names(name: str) -> None:
    assert "instruction_format" not in config_for_model(CONFIG, name)
    assert format_rule(CONFIG, name) is None


def test_every_rule_names_an_existing_format() -> None:
    formats = {p.stem for p in (ROOT / "instruction-templates").glob("*.yaml")}
    import yaml

    for pattern, settings in yaml.safe_load(CONFIG.read_text()).items():
        assert settings.get("instruction_format", "ChatML") in formats, pattern


def test_oasst_keeps_special_tokens_visible() -> None:
    assert config_for_model(CONFIG, "OpenAssistant_oasst-sft-7-llama-30b-xor")["skip_special_tokens"] is False
    assert "skip_special_tokens" not in config_for_model(CONFIG, "lmsys_vicuna-13b-v1.5")


def test_the_documented_settings_are_exactly_those_read() -> None:
    header = CONFIG.read_text().split("Allowed settings:")[1].split("\n#\n")[0]
    documented = re.findall(r"^#   ([a-z_]+):", header, flags=re.M)
    assert tuple(documented) == MODEL_KEYS
    assert "any loader option" in header


def test_config_later_match_wins_and_loader_options_pass(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("'.*a':\n  instruction_format: A\n  n_ctx: 10\n'.*ab':\n  instruction_format: B\n"
                    "  stop_strings: [\"\\nQ:\"]\n  skip_special_tokens: false\n", encoding="utf-8")
    assert config_for_model(path, "xAB") == {"instruction_format": "B", "n_ctx": 10, "stop_strings": ["\nQ:"],
                                              "skip_special_tokens": False}
    assert format_rule(path, "xAB") == ".*ab" and format_rule(path, "xA") == ".*a"
    assert config_for_model(tmp_path / "missing.yaml", "koala-7b") == {}


@pytest.mark.parametrize("text, problem", [
    ("'.*a': [\n", "could not be read as YAML"),
    ("'(': {instruction_format: A}\n", "regular expression"),
    ("'.*a': {instruction_fromat: A}\n", "unknown setting(s) instruction_fromat"),
    ("'.*a': {stop_strings: '\\nQ:'}\n", "stop_strings must be a list"),
    ("'.*a': {skip_special_tokens: 'no'}\n", "skip_special_tokens must be true or false"),
    ("'.*a': {instruction_format: ''}\n", "instruction_format must name a file"),
    ("'.*a': 5\n", "must be a mapping"),
])
def test_a_malformed_config_names_the_file_and_the_rule(tmp_path: Path, text: str, problem: str) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(TemplateError) as info:
        config_for_model(path, "a")
    assert str(path) in str(info.value) and problem in str(info.value)
    assert format_rule(path, "a") is None  # explaining a past choice never fails


def test_unknown_setting_error_lists_what_is_allowed(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("'.*a': {colour: red}\n", encoding="utf-8")
    with pytest.raises(TemplateError) as info:
        config_for_model(path, "a")
    for key in (*MODEL_KEYS, *loader_option_names()):
        assert key in str(info.value)


# --- through a loaded model ------------------------------------------------------------------------

NAMES = {
    "vicuna": "lmsys_vicuna-13b-v1.5",
    "base": "huggyllama_llama-7b",
    "unknown": "my-finetune",
    "own": "TheBloke_vicuna-7B-1.1-HF",  # named like a Vicuna, but it brings its own template
    "stops": "acme_custom-stops-7b",
}
OWN_TEMPLATE = "{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }}\n{% endfor %}[assistant]"


@pytest.fixture(scope="module")
def ctx(tmp_path_factory) -> Context:
    root = tmp_path_factory.mktemp("detect")
    models = root / "models"
    build_tiny_llama(root / "tiny")
    for name in NAMES.values():
        shutil.copytree(root / "tiny", models / name)
    (models / NAMES["own"] / "chat_template.jinja").write_text(OWN_TEMPLATE, encoding="utf-8")
    (models / "config.yaml").write_text(CONFIG.read_text() + "'.*custom-stops':\n  stop_strings: [\"\\nQ:\"]\n  n_ctx: 77\n")
    config = AppConfig(loader=LoaderOptions(dtype="float32", cpu=True), models_dir=models,
                       user_data_dir=root / "user", characters_dir=root / "user" / "characters",
                       extensions_dir=root / "user" / "extensions")
    return build_context(config)


def _load(ctx: Context, key: str) -> None:
    if ctx.models.loaded_name != NAMES[key]:
        ctx.models.load(NAMES[key])


@pytest.mark.parametrize("key, name, reason", [
    ("vicuna", "Vicuna-v1.1", "models/config.yaml rule '.*vicuna.*(?<![0-9])1[._][135](?![0-9])' matches "
                              "'lmsys_vicuna-13b-v1.5'"),
    ("base", "Plain-transcript", "models/config.yaml rule '(.*[_-])?llama-?2?[-_]\\d+b' matches 'huggyllama_llama-7b'"),
    ("own", "model's own", "the model's own chat template"),
])
def test_loaded_model_format_and_reason(ctx: Context, key: str, name: str, reason: str) -> None:
    _load(ctx, key)
    fmt = format_for_loaded_model(ctx)
    assert (fmt.name, fmt.reason) == (name, reason)
    assert format_for_loaded_model(ctx, "Koala").reason == "chosen by you (Koala)"


def test_nothing_matched_is_said(ctx: Context) -> None:
    _load(ctx, "unknown")
    fmt = format_for_loaded_model(ctx)
    assert fmt.name == "Plain-transcript" and fmt.reason.startswith("nothing matched: plain transcript")


def test_model_info_and_chat_prompt_show_the_reason(ctx: Context) -> None:
    from fastapi.testclient import TestClient

    from modules.api.app import create_api

    _load(ctx, "vicuna")
    with TestClient(create_api(ctx)) as http:
        info = http.get("/v1/internal/model/info").json()
        assert info["instruction_format"] == "Vicuna-v1.1" and "'.*vicuna" in info["format_reason"]
        messages = [{"role": "user", "content": "U1"}, {"role": "assistant", "content": "A1"},
                    {"role": "user", "content": "U2"}]
        # a short reply leaves the tiny model's 256-token context room for the whole history
        shown = http.post("/v1/internal/chat-prompt", json={"messages": messages, "max_tokens": 8}).json()
        assert shown["dropped_turns"] == 0
        assert shown["prompt"] == ("A chat between a curious user and an artificial intelligence assistant. The "
                                   "assistant gives helpful, detailed, and polite answers to the user's questions. "
                                   "USER: U1 ASSISTANT: A1</s>USER: U2 ASSISTANT:")
        assert shown["format_reason"] == info["format_reason"]
        assert {" USER:", "\nUSER:"} <= set(shown["stop_strings"])
        chosen = http.post("/v1/internal/chat-prompt", json={"messages": messages, "instruction_format": "guanaco",
                                                           "max_tokens": 8})
        assert chosen.json()["prompt"] == "### Human: U1 ### Assistant: A1 ### Human: U2 ### Assistant:"
        assert chosen.json()["format_reason"] == "chosen by you (guanaco)"


def test_the_models_stop_strings_from_config_are_used(ctx: Context) -> None:
    from fastapi.testclient import TestClient

    from modules.api.app import create_api

    _load(ctx, "stops")
    assert "\nQ:" in format_for_loaded_model(ctx).stop_strings
    with TestClient(create_api(ctx)) as http:
        shown = http.post("/v1/internal/chat-prompt", json={"messages": [{"role": "user", "content": "hi"}]}).json()
        assert "\nQ:" in shown["stop_strings"] and "\nYou:" in shown["stop_strings"]


def test_loader_options_from_config_are_used(ctx: Context) -> None:
    assert ctx.models.options_for(ctx.registry.get(NAMES["stops"])).n_ctx == 77
    assert ctx.models.options_for(ctx.registry.get(NAMES["vicuna"])).n_ctx == 0


def test_model_tab_shows_format_and_reason(ctx: Context) -> None:
    from modules.ui.model_tab import status_text

    _load(ctx, "unknown")
    text = status_text(ctx)
    assert "Prompt format: **Plain-transcript** — nothing matched: plain transcript" in text
    _load(ctx, "vicuna")
    assert "Prompt format: **Vicuna-v1.1** — models/config.yaml rule" in status_text(ctx)
