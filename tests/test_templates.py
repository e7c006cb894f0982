"""Instruction formats: exact prompt strings per format, resolution order, sandboxing, safe names.

The expected prompts are written out by hand from docs' reference table
(/work/shared/reference/prompt-formats.md), never computed from the templates under test.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from modules.core.errors import BadNameError, TemplateError
from modules.core.templates import (
    FormatLibrary,
    InstructionFormat,
    config_for_model,
    format_from_model,
    render,
    render_continuation,
    render_impersonation,
    resolve_format,
)

ROOT = Path(__file__).resolve().parents[1]
FORMATS_DIR = ROOT / "instruction-templates"
CONFIG = ROOT / "models" / "config.yaml"

TURNS = [
    {"role": "user", "content": "U1"},
    {"role": "assistant", "content": "A1"},
    {"role": "user", "content": "U2"},
    {"role": "assistant", "content": "A2"},
    {"role": "user", "content": "U3"},
]
SYSTEM = [{"role": "system", "content": "SYS"}]

VICUNA0_SYS = (
    "A chat between a curious human and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the human's questions.\n\n"
)
VICUNA11_SYS = (
    "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions.\n\n"
)

# format -> (prompt with the default system text, prompt with system message "SYS")
EXPECTED = {
    "Alpaca": (
        "Below is an instruction that describes a task. Write a response that appropriately completes the request.\n\n"
        "### Instruction:\nU1\n\n### Response:\nA1\n\n"
        "### Instruction:\nU2\n\n### Response:\nA2\n\n"
        "### Instruction:\nU3\n\n### Response:\n",
        "SYS\n\n"
        "### Instruction:\nU1\n\n### Response:\nA1\n\n"
        "### Instruction:\nU2\n\n### Response:\nA2\n\n"
        "### Instruction:\nU3\n\n### Response:\n",
    ),
    "Vicuna-v0": (
        VICUNA0_SYS + "### Human: U1\n### Assistant: A1\n### Human: U2\n### Assistant: A2\n### Human: U3\n### Assistant:",
        "SYS\n\n### Human: U1\n### Assistant: A1\n### Human: U2\n### Assistant: A2\n### Human: U3\n### Assistant:",
    ),
    "Vicuna-v1.1": (
        VICUNA11_SYS + "USER: U1\nASSISTANT: A1</s>\nUSER: U2\nASSISTANT: A2</s>\nUSER: U3\nASSISTANT:",
        "SYS\n\nUSER: U1\nASSISTANT: A1</s>\nUSER: U2\nASSISTANT: A2</s>\nUSER: U3\nASSISTANT:",
    ),
    "Koala": (
        "BEGINNING OF CONVERSATION: USER: U1 GPT:A1</s>USER: U2 GPT:A2</s>USER: U3 GPT:",
        "SYS USER: U1 GPT:A1</s>USER: U2 GPT:A2</s>USER: U3 GPT:",
    ),
    "WizardLM": (
        "U1\n\n### Response:A1\n\n</s>U2\n\n### Response:A2\n\n</s>U3\n\n### Response:",
        # WizardLM has no system rendering: the system message is not written.
        "U1\n\n### Response:A1\n\n</s>U2\n\n### Response:A2\n\n</s>U3\n\n### Response:",
    ),
    "OpenAssistant": (
        "<|prompter|>U1<|endoftext|><|assistant|>A1<|endoftext|>"
        "<|prompter|>U2<|endoftext|><|assistant|>A2<|endoftext|>"
        "<|prompter|>U3<|endoftext|><|assistant|>",
        "SYS<|prompter|>U1<|endoftext|><|assistant|>A1<|endoftext|>"
        "<|prompter|>U2<|endoftext|><|assistant|>A2<|endoftext|>"
        "<|prompter|>U3<|endoftext|><|assistant|>",
    ),
    "LLaMA-2-chat": (
        "[INST] <<SYS>>\nAnswer the questions.\n<</SYS>>\n\nU1 [/INST] A1 </s><s>[INST] U2 [/INST] A2 </s><s>[INST] U3 [/INST] ",
        "[INST] <<SYS>>\nSYS\n<</SYS>>\n\nU1 [/INST] A1 </s><s>[INST] U2 [/INST] A2 </s><s>[INST] U3 [/INST] ",
    ),
    "ChatML": (
        "<|im_start|>user\nU1<|im_end|>\n<|im_start|>assistant\nA1<|im_end|>\n"
        "<|im_start|>user\nU2<|im_end|>\n<|im_start|>assistant\nA2<|im_end|>\n"
        "<|im_start|>user\nU3<|im_end|>\n<|im_start|>assistant\n",
        "<|im_start|>system\nSYS<|im_end|>\n"
        "<|im_start|>user\nU1<|im_end|>\n<|im_start|>assistant\nA1<|im_end|>\n"
        "<|im_start|>user\nU2<|im_end|>\n<|im_start|>assistant\nA2<|im_end|>\n"
        "<|im_start|>user\nU3<|im_end|>\n<|im_start|>assistant\n",
    ),
}

CHATML_SOURCE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


@pytest.fixture(scope="module")
def library() -> FormatLibrary:
    return FormatLibrary(FORMATS_DIR)


def _write(folder: Path, name: str, text: str) -> None:
    (folder / f"{name}.yaml").write_text(text, encoding="utf-8")


def test_library_lists_all_eight_formats(library: FormatLibrary) -> None:
    assert library.names() == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_three_turns_with_default_system_text(library: FormatLibrary, name: str) -> None:
    assert render(library.get(name), TURNS, add_generation_prompt=True) == EXPECTED[name][0]


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_three_turns_with_system_message(library: FormatLibrary, name: str) -> None:
    assert render(library.get(name), SYSTEM + TURNS, add_generation_prompt=True) == EXPECTED[name][1]


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_every_format_has_stop_strings(library: FormatLibrary, name: str) -> None:
    fmt = library.get(name)
    assert fmt.stop_strings and all(isinstance(s, str) and s for s in fmt.stop_strings)
    assert fmt.source == str(FORMATS_DIR / f"{name}.yaml")


def test_stop_strings_open_the_next_user_turn(library: FormatLibrary) -> None:
    assert "\n### Instruction:" in library.get("Alpaca").stop_strings
    assert "\n### Human:" in library.get("Vicuna-v0").stop_strings
    assert "\nUSER:" in library.get("Vicuna-v1.1").stop_strings
    assert "</s>" in library.get("Vicuna-v1.1").stop_strings
    assert "<|im_end|>" in library.get("ChatML").stop_strings


def test_continuation_vicuna(library: FormatLibrary) -> None:
    fmt = library.get("Vicuna-v1.1")
    got = render_continuation(fmt, TURNS[:3], "Sure, here")
    assert got == VICUNA11_SYS + "USER: U1\nASSISTANT: A1</s>\nUSER: U2\nASSISTANT: Sure, here"


def test_continuation_chatml(library: FormatLibrary) -> None:
    fmt = library.get("ChatML")
    got = render_continuation(fmt, SYSTEM + TURNS[:1], "Sure")
    assert got == "<|im_start|>system\nSYS<|im_end|>\n<|im_start|>user\nU1<|im_end|>\n<|im_start|>assistant\nSure"


def test_impersonation_vicuna(library: FormatLibrary) -> None:
    fmt = library.get("Vicuna-v1.1")
    got = render_impersonation(fmt, TURNS[:2], "Well")
    assert got == VICUNA11_SYS + "USER: U1\nASSISTANT: A1</s>\nUSER: Well"


def test_impersonation_chatml(library: FormatLibrary) -> None:
    fmt = library.get("ChatML")
    got = render_impersonation(fmt, TURNS[:2], "")
    assert got == "<|im_start|>user\nU1<|im_end|>\n<|im_start|>assistant\nA1<|im_end|>\n<|im_start|>user\n"


def test_continuation_of_a_model_template() -> None:
    fmt = format_from_model(CHATML_SOURCE, "<|im_end|>")
    got = render_continuation(fmt, TURNS[:1], "Hel")
    assert got == "<|im_start|>user\nU1<|im_end|>\n<|im_start|>assistant\nHel"


def test_resolution_order(library: FormatLibrary) -> None:
    assert resolve_format(library, "Koala", CHATML_SOURCE, "Vicuna-v0").name == "Koala"
    model = resolve_format(library, None, CHATML_SOURCE, "Vicuna-v0", eos_token="<|endoftext|>")
    assert model.source == "model" and model.template == CHATML_SOURCE
    assert model.stop_strings == ["<|endoftext|>", "<|im_end|>"]
    assert resolve_format(library, None, None, "Vicuna-v0").name == "Vicuna-v0"
    assert resolve_format(library, "", "", None).name == "Alpaca"


def test_model_format_stop_strings() -> None:
    assert format_from_model(CHATML_SOURCE, "<|im_end|>").stop_strings == ["<|im_end|>"]
    assert format_from_model("{{ messages[0]['content'] }}", "</s>").stop_strings == ["</s>"]
    assert format_from_model("{{ messages[0]['content'] }}", "").stop_strings == []


def test_model_template_gets_bos_eos_and_raise_exception() -> None:
    source = (
        "{{ bos_token }}{% for m in messages %}{% if m['role'] == 'system' %}"
        "{{ raise_exception('System role not supported') }}{% endif %}{{ m['content'] }}{{ eos_token }}{% endfor %}"
    )
    fmt = format_from_model(source, "</s>")
    assert render(fmt, TURNS[:2], bos_token="<s>", eos_token="</s>") == "<s>U1</s>A1</s>"
    with pytest.raises(TemplateError, match="System role not supported"):
        render(fmt, SYSTEM + TURNS[:1])


def test_unknown_format_lists_known_names(library: FormatLibrary) -> None:
    with pytest.raises(TemplateError) as info:
        library.get("Nonexistent")
    message = str(info.value)
    assert "Nonexistent" in message
    for name in EXPECTED:
        assert name in message


def test_broken_syntax_names_the_file(tmp_path: Path) -> None:
    _write(tmp_path, "Broken", "instruction_template: |-\n  {% for m in messages %}{{ m['content'] }}\nstop_strings: []\n")
    with pytest.raises(TemplateError) as info:
        FormatLibrary(tmp_path).get("Broken")
    assert str(tmp_path / "Broken.yaml") in str(info.value)
    assert "syntax" in str(info.value)


def test_render_failure_names_the_file(tmp_path: Path) -> None:
    _write(tmp_path, "Raises", "instruction_template: |-\n  {{ raise_exception('no thanks') }}\nstop_strings: []\n")
    fmt = FormatLibrary(tmp_path).get("Raises")
    with pytest.raises(TemplateError) as info:
        render(fmt, TURNS)
    message = str(info.value)
    assert "Instruction format 'Raises'" in message and str(tmp_path / "Raises.yaml") in message
    assert "failed to render" in message and "no thanks" in message


@pytest.mark.parametrize(
    "text, problem",
    [
        ("instruction_template: '{{ x }}'\nstop_strings: [\n", "YAML"),
        ("stop_strings: []\n", "missing key(s): instruction_template"),
        ("instruction_template: 'x'\nstop_strings: []\ncolor: red\n", "unknown key(s): color"),
        ("instruction_template: 'x'\nstop_strings: 5\n", "stop_strings"),
        ("- just a list\n", "mapping"),
    ],
)
def test_malformed_files_name_the_file_and_the_problem(tmp_path: Path, text: str, problem: str) -> None:
    _write(tmp_path, "Bad", text)
    with pytest.raises(TemplateError) as info:
        FormatLibrary(tmp_path).get("Bad")
    assert str(tmp_path / "Bad.yaml") in str(info.value)
    assert problem in str(info.value)


@pytest.mark.parametrize(
    "source",
    [
        "{{ ''.__class__.__mro__ }}",
        "{{ ''.__class__ }}",
        "{{ cycler.__init__.__globals__ }}",
        "{{ messages.append(1) }}",
    ],
)
def test_sandbox_escape_is_refused(source: str) -> None:
    fmt = InstructionFormat(name="evil", template=source, stop_strings=[], source="model")
    with pytest.raises(TemplateError, match="failed to render"):
        render(fmt, [{"role": "user", "content": "hi"}])


@pytest.mark.parametrize("name", ["../evil", "..", "/etc/passwd", "a/b", ".hidden"])
def test_path_names_are_refused(tmp_path: Path, name: str) -> None:
    lib = FormatLibrary(tmp_path / "formats")
    with pytest.raises(BadNameError):
        lib.get(name)
    with pytest.raises(BadNameError):
        lib.save(name, "{{ 1 }}", [])
    with pytest.raises(BadNameError):
        lib.delete(name)
    assert not (tmp_path / "evil.yaml").exists()


def test_save_round_trip_and_delete(tmp_path: Path) -> None:
    lib = FormatLibrary(tmp_path)
    source = "{%- for m in messages -%}\n  {{- m['content'] + ' \\n' -}}\n{%- endfor -%}\n"
    path = lib.save("Mine", source, ["\nUser:", "</s>"])
    assert path == (tmp_path / "Mine.yaml").resolve()
    fmt = lib.get("Mine")
    assert fmt.template == source and fmt.stop_strings == ["\nUser:", "</s>"]
    assert render(fmt, TURNS[:2]) == "U1 \nA1 \n"
    assert lib.names() == ["Mine"]
    lib.delete("Mine")
    assert lib.names() == []
    with pytest.raises(TemplateError, match="Unknown instruction format"):
        lib.delete("Mine")


def test_save_refuses_broken_template(tmp_path: Path) -> None:
    lib = FormatLibrary(tmp_path)
    with pytest.raises(TemplateError, match="syntax"):
        lib.save("Broken", "{% if %}", [])
    assert lib.names() == []


@pytest.mark.parametrize(
    "model, expected",
    [
        ("vicuna-13b-v1.5", "Vicuna-v1.1"),
        ("Vicuna-7B-v1.3", "Vicuna-v1.1"),
        ("vicuna-13b", "Vicuna-v0"),
        ("koala-7b", "Koala"),
        ("llama-2-7b-chat-hf", "LLaMA-2-chat"),
        ("alpaca-native-7b", "Alpaca"),
        ("wizardlm-13b-v1.2", "Vicuna-v1.1"),
        ("wizardlm-7b-v1.0", "WizardLM"),
        ("oasst-sft-6-llama-30b", "OpenAssistant"),
    ],
)
def test_config_for_model(model: str, expected: str) -> None:
    assert config_for_model(CONFIG, model)["instruction_format"] == expected


def test_config_for_model_extras() -> None:
    assert config_for_model(CONFIG, "some-model") == {}
    assert config_for_model(CONFIG, "oasst-sft-6-llama-30b")["skip_special_tokens"] is False
    assert config_for_model(CONFIG.parent / "missing.yaml", "koala-7b") == {}


def test_config_later_match_wins_and_malformed_file(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("'.*a':\n  instruction_format: A\n  n_ctx: 10\n'.*ab':\n  instruction_format: B\n", encoding="utf-8")
    assert config_for_model(path, "xAB") == {"instruction_format": "B", "n_ctx": 10}
    path.write_text("'.*a': [\n", encoding="utf-8")
    with pytest.raises(TemplateError, match="config.yaml"):
        config_for_model(path, "a")
    path.write_text("'(': {instruction_format: A}\n", encoding="utf-8")
    with pytest.raises(TemplateError, match="regular expression"):
        config_for_model(path, "a")
