"""Instruction formats: exact prompt strings per format, resolution order, sandboxing, safe names.

The expected prompts are written out by hand from the reference table
(/work/shared/reference/prompt-formats.md, itself written from each family's training code),
never computed from the templates under test. Detection by model name is in
test_format_detection.py; stop strings through the engine in test_format_stops.py.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from modules.core.errors import BadNameError, TemplateError
from modules.core.prompt_render import continuation_segments, impersonation_segments
from modules.core.prompt_tokens import joined
from modules.core.streaming import StopStringFilter
from modules.core.templates import (
    FALLBACK_FORMAT,
    FormatLibrary,
    InstructionFormat,
    format_from_model,
    render,
    resolve_format,
)

ROOT = Path(__file__).resolve().parents[1]


def render_continuation(fmt: InstructionFormat, messages: list[dict], partial: str) -> str:
    return joined(continuation_segments(fmt, messages, partial))


def render_impersonation(fmt: InstructionFormat, messages: list[dict], partial: str) -> str:
    return joined(impersonation_segments(fmt, messages, partial))

FORMATS_DIR = ROOT / "instruction-templates"

ONE = [{"role": "user", "content": "U1"}]
TWO = [{"role": "user", "content": "U1"}, {"role": "assistant", "content": "A1"}, {"role": "user", "content": "U2"}]
SYSTEM = [{"role": "system", "content": "SYS"}]

VICUNA11_SYS = ("A chat between a curious user and an artificial intelligence assistant. "
                "The assistant gives helpful, detailed, and polite answers to the user's questions.")
VICUNA0_SYS = ("A chat between a curious human and an artificial intelligence assistant. "
               "The assistant gives helpful, detailed, and polite answers to the human's questions.")
ALPACA_SYS = ("Below is an instruction that describes a task. "
              "Write a response that appropriately completes the request.")

# format -> (one turn, one turn with system "SYS", two turns, two turns with system "SYS"),
# each ending with the generation prompt. OpenAssistant is rendered with the LLaMA EOS "</s>".
EXPECTED = {
    "Vicuna-v1.1": (
        VICUNA11_SYS + " USER: U1 ASSISTANT:",
        "SYS USER: U1 ASSISTANT:",
        VICUNA11_SYS + " USER: U1 ASSISTANT: A1</s>USER: U2 ASSISTANT:",
        "SYS USER: U1 ASSISTANT: A1</s>USER: U2 ASSISTANT:",
    ),
    "Vicuna-v0": (
        VICUNA0_SYS + "\n\n### Human: U1\n### Assistant:",
        "SYS\n\n### Human: U1\n### Assistant:",
        VICUNA0_SYS + "\n\n### Human: U1\n### Assistant: A1\n### Human: U2\n### Assistant:",
        "SYS\n\n### Human: U1\n### Assistant: A1\n### Human: U2\n### Assistant:",
    ),
    "Koala": (
        "BEGINNING OF CONVERSATION: USER: U1 GPT:",
        "BEGINNING OF CONVERSATION: SYS USER: U1 GPT:",
        "BEGINNING OF CONVERSATION: USER: U1 GPT: A1</s>USER: U2 GPT:",
        "BEGINNING OF CONVERSATION: SYS USER: U1 GPT: A1</s>USER: U2 GPT:",
    ),
    "Alpaca": (
        ALPACA_SYS + "\n\n### Instruction:\nU1\n\n### Response:",
        "SYS\n\n### Instruction:\nU1\n\n### Response:",
        ALPACA_SYS + "\n\n### Instruction:\nU1\n\n### Response:A1</s>### Instruction:\nU2\n\n### Response:",
        "SYS\n\n### Instruction:\nU1\n\n### Response:A1</s>### Instruction:\nU2\n\n### Response:",
    ),
    "Alpaca-LoRA": (
        ALPACA_SYS + "\n\n### Instruction:\nU1\n\n### Response:\n",
        "SYS\n\n### Instruction:\nU1\n\n### Response:\n",
        ALPACA_SYS + "\n\n### Instruction:\nU1\n\n### Response:\nA1</s>### Instruction:\nU2\n\n### Response:\n",
        "SYS\n\n### Instruction:\nU1\n\n### Response:\nA1</s>### Instruction:\nU2\n\n### Response:\n",
    ),
    "WizardLM": (
        "U1\n\n### Response:",
        "SYS\n\nU1\n\n### Response:",
        "U1\n\n### Response:A1</s>U2\n\n### Response:",
        "SYS\n\nU1\n\n### Response:A1</s>U2\n\n### Response:",
    ),
    "OpenAssistant": (
        "<|prompter|>U1</s><|assistant|>",
        "<|system|>SYS</s><|prompter|>U1</s><|assistant|>",
        "<|prompter|>U1</s><|assistant|>A1</s><|prompter|>U2</s><|assistant|>",
        "<|system|>SYS</s><|prompter|>U1</s><|assistant|>A1</s><|prompter|>U2</s><|assistant|>",
    ),
    "LLaMA-2-chat": (
        "<s>[INST] U1 [/INST]",
        "<s>[INST] <<SYS>>\nSYS\n<</SYS>>\n\nU1 [/INST]",
        "<s>[INST] U1 [/INST] A1 </s><s>[INST] U2 [/INST]",
        "<s>[INST] <<SYS>>\nSYS\n<</SYS>>\n\nU1 [/INST] A1 </s><s>[INST] U2 [/INST]",
    ),
    "guanaco": (
        "### Human: U1 ### Assistant:",
        "SYS ### Human: U1 ### Assistant:",
        "### Human: U1 ### Assistant: A1 ### Human: U2 ### Assistant:",
        "SYS ### Human: U1 ### Assistant: A1 ### Human: U2 ### Assistant:",
    ),
    "stable-vicuna": (
        "### Human: U1\n### Assistant:",
        "SYS\n\n### Human: U1\n### Assistant:",
        "### Human: U1\n### Assistant: A1\n### Human: U2\n### Assistant:",
        "SYS\n\n### Human: U1\n### Assistant: A1\n### Human: U2\n### Assistant:",
    ),
    "ChatML": (
        "<|im_start|>user\nU1<|im_end|>\n<|im_start|>assistant\n",
        "<|im_start|>system\nSYS<|im_end|>\n<|im_start|>user\nU1<|im_end|>\n<|im_start|>assistant\n",
        "<|im_start|>user\nU1<|im_end|>\n<|im_start|>assistant\nA1<|im_end|>\n"
        "<|im_start|>user\nU2<|im_end|>\n<|im_start|>assistant\n",
        "<|im_start|>system\nSYS<|im_end|>\n<|im_start|>user\nU1<|im_end|>\n<|im_start|>assistant\nA1<|im_end|>\n"
        "<|im_start|>user\nU2<|im_end|>\n<|im_start|>assistant\n",
    ),
    "Plain-transcript": (
        "You: U1\nAssistant:",
        "SYS\nYou: U1\nAssistant:",
        "You: U1\nAssistant: A1\nYou: U2\nAssistant:",
        "SYS\nYou: U1\nAssistant: A1\nYou: U2\nAssistant:",
    ),
}
CASES = {"one turn": ONE, "one turn with system": SYSTEM + ONE, "two turns": TWO, "two turns with system": SYSTEM + TWO}

# A reply that runs on into the user's next turn, in each form the model writes it -> what is shown.
STOP_FORMS = {
    "Vicuna-v1.1": ["Paris. USER: and", "Paris.\nUSER: and"],
    "Vicuna-v0": ["Paris.\n### Human: and", "Paris. ### Human: and", "Paris.### Human: and"],
    "stable-vicuna": ["Paris.\n### Human: and", "Paris. ### Human: and", "Paris.### Human: and"],
    "guanaco": ["Paris.\n### Human: and", "Paris. ### Human: and", "Paris.### Human: and"],
    "Alpaca": ["Paris.\n\n### Instruction:\nand", "Paris.### Instruction:\nand"],
    "Alpaca-LoRA": ["Paris.\n\n### Instruction:\nand", "Paris. ### Instruction:\nand"],
    "Koala": ["Paris. USER: and", "Paris.\nUSER: and"],
    "OpenAssistant": ["Paris.<|prompter|>and"],
    "ChatML": ["Paris.<|im_end|>\n<|im_start|>user"],
    "LLaMA-2-chat": ["Paris. [INST] and", "Paris.[INST] and"],
    "WizardLM": ["Paris.\n\n### Response: and"],
    "Plain-transcript": ["Paris.\nYou: and"],
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


def test_library_lists_every_format_of_the_reference(library: FormatLibrary) -> None:
    assert library.names() == sorted(EXPECTED)
    assert set(STOP_FORMS) == set(EXPECTED)


@pytest.mark.parametrize("case", range(4), ids=list(CASES))
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_prompt_is_byte_exact(library: FormatLibrary, name: str, case: int) -> None:
    messages = list(CASES.values())[case]
    got = render(library.get(name), messages, add_generation_prompt=True, bos_token="<s>", eos_token="</s>")
    assert got == EXPECTED[name][case]


def test_openassistant_on_pythia_closes_turns_with_its_eos(library: FormatLibrary) -> None:
    fmt = library.get("OpenAssistant")
    got = render(fmt, SYSTEM + TWO, bos_token="<|endoftext|>", eos_token="<|endoftext|>")
    assert got == ("<|system|>SYS<|endoftext|><|prompter|>U1<|endoftext|><|assistant|>A1<|endoftext|>"
                   "<|prompter|>U2<|endoftext|><|assistant|>")
    # A backend that does not know its EOS text gets LLaMA's, the family this format is mostly used on.
    assert render(fmt, ONE) == "<|prompter|>U1</s><|assistant|>"


def test_llama2_chat_strips_contents_as_meta_does(library: FormatLibrary) -> None:
    messages = [{"role": "system", "content": "SYS"}, {"role": "user", "content": "  U1 \n"},
                {"role": "assistant", "content": "\n A1  "}, {"role": "user", "content": " U2 "}]
    got = render(library.get("LLaMA-2-chat"), messages)
    assert got == "<s>[INST] <<SYS>>\nSYS\n<</SYS>>\n\n  U1 [/INST] A1 </s><s>[INST] U2 [/INST]"
    no_system = render(library.get("LLaMA-2-chat"), messages[1:])
    assert no_system == "<s>[INST] U1 [/INST] A1 </s><s>[INST] U2 [/INST]"


def test_an_empty_system_message_means_the_default(library: FormatLibrary) -> None:
    empty = [{"role": "system", "content": ""}] + ONE
    assert render(library.get("Vicuna-v1.1"), empty) == EXPECTED["Vicuna-v1.1"][0]
    assert render(library.get("LLaMA-2-chat"), empty) == EXPECTED["LLaMA-2-chat"][0]


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_file_and_header_say_what_the_template_does(library: FormatLibrary, name: str) -> None:
    fmt = library.get(name)
    assert fmt.stop_strings and all(isinstance(s, str) and s for s in fmt.stop_strings)
    assert fmt.source == str(FORMATS_DIR / f"{name}.yaml")
    header = [line for line in (FORMATS_DIR / f"{name}.yaml").read_text().splitlines() if line.startswith("#")]
    text = "\n".join(header)
    assert "Only two keys are allowed" in text and "typed by a user stay text" in text
    writes_bos = "'<s>" in fmt.template
    assert writes_bos == (name == "LLaMA-2-chat")  # the others leave BOS to the tokenizer, once
    assert ("does not write it" in text) != writes_bos


@pytest.mark.parametrize("name", sorted(STOP_FORMS))
def test_a_reply_is_cut_before_each_form_of_the_next_turn(library: FormatLibrary, name: str) -> None:
    stops = library.get(name).stop_strings
    for reply in STOP_FORMS[name]:
        for step in (1, 3, len(reply)):  # streamed a character at a time, in small pieces, and whole
            shown, gate = "", StopStringFilter(stops)
            for start in range(0, len(reply), step):
                shown += gate.push(reply[start:start + step])
            shown += gate.flush()
            assert shown == "Paris.", (name, reply, step)
            assert gate.stopped_by is not None


def test_stop_strings_named_by_the_reference(library: FormatLibrary) -> None:
    def stops(name: str) -> list[str]:
        return library.get(name).stop_strings

    assert {" USER:", "\nUSER:"} <= set(stops("Vicuna-v1.1"))
    assert " USER:" in stops("Koala")
    for name in ("Vicuna-v0", "stable-vicuna", "guanaco"):
        assert {"\n### Human:", " ### Human:", "### Human:"} <= set(stops(name))
    assert "### Instruction:" in stops("Alpaca") and "### Instruction:" in stops("Alpaca-LoRA")
    assert "<|prompter|>" in stops("OpenAssistant")
    assert "<|im_end|>" in stops("ChatML")
    assert "\nYou:" in stops("Plain-transcript")


def test_continuation_vicuna(library: FormatLibrary) -> None:
    got = render_continuation(library.get("Vicuna-v1.1"), TWO, "Sure, here")
    assert got == VICUNA11_SYS + " USER: U1 ASSISTANT: A1</s>USER: U2 ASSISTANT: Sure, here"


def test_continuation_llama2_chat(library: FormatLibrary) -> None:
    got = render_continuation(library.get("LLaMA-2-chat"), SYSTEM + ONE, "Sure")
    assert got == "<s>[INST] <<SYS>>\nSYS\n<</SYS>>\n\nU1 [/INST] Sure"


def test_continuation_chatml(library: FormatLibrary) -> None:
    got = render_continuation(library.get("ChatML"), SYSTEM + ONE, "Sure")
    assert got == "<|im_start|>system\nSYS<|im_end|>\n<|im_start|>user\nU1<|im_end|>\n<|im_start|>assistant\nSure"


def test_impersonation_vicuna(library: FormatLibrary) -> None:
    got = render_impersonation(library.get("Vicuna-v1.1"), TWO[:2], "Well")
    assert got == VICUNA11_SYS + " USER: U1 ASSISTANT: A1</s>USER: Well"


def test_impersonation_chatml(library: FormatLibrary) -> None:
    got = render_impersonation(library.get("ChatML"), TWO[:2], "")
    assert got == "<|im_start|>user\nU1<|im_end|>\n<|im_start|>assistant\nA1<|im_end|>\n<|im_start|>user\n"


def test_continuation_of_a_model_template() -> None:
    fmt = format_from_model(CHATML_SOURCE, "<|im_end|>")
    got = render_continuation(fmt, ONE, "Hel")
    assert got == "<|im_start|>user\nU1<|im_end|>\n<|im_start|>assistant\nHel"


def test_resolution_order_and_reasons(library: FormatLibrary) -> None:
    chosen = resolve_format(library, "Koala", CHATML_SOURCE, "Vicuna-v0")
    assert chosen.name == "Koala" and chosen.reason == "chosen by you (Koala)"
    own = resolve_format(library, None, CHATML_SOURCE, "Vicuna-v0", eos_token="<|endoftext|>")
    assert own.source == "model" and own.template == CHATML_SOURCE
    assert own.stop_strings == ["<|endoftext|>", "<|im_end|>"] and own.reason == "the model's own chat template"
    ruled = resolve_format(library, None, None, "Vicuna-v1.1", rule=".*vicuna.*1[._]5", model_name="LMSYS_vicuna-13b-v1.5")
    assert ruled.name == "Vicuna-v1.1"
    assert ruled.reason == "models/config.yaml rule '.*vicuna.*1[._]5' matches 'lmsys_vicuna-13b-v1.5'"
    fallback = resolve_format(library, "", "", None)
    assert fallback.name == FALLBACK_FORMAT == "Plain-transcript"
    assert fallback.reason.startswith("nothing matched: plain transcript")


def test_the_models_own_stop_strings_join_any_format(library: FormatLibrary) -> None:
    extra = ["\nUser:", " USER:"]  # one new, one the format already has
    ruled = resolve_format(library, None, None, "Vicuna-v1.1", extra_stops=extra)
    assert ruled.stop_strings == ["</s>", " USER:", "\nUSER:", "\nUser:"]
    chosen = resolve_format(library, "ChatML", None, None, extra_stops=extra)
    assert chosen.stop_strings == ["<|im_end|>", "<|im_start|>", "\nUser:", " USER:"]
    # the file is not changed by it
    assert library.get("Vicuna-v1.1").stop_strings == ["</s>", " USER:", "\nUSER:"]


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
    assert render(fmt, TWO[:2], bos_token="<s>", eos_token="</s>") == "<s>U1</s>A1</s>"
    with pytest.raises(TemplateError, match="System role not supported"):
        render(fmt, SYSTEM + ONE)


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
        render(fmt, TWO)
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
    assert render(fmt, TWO[:2]) == "U1 \nA1 \n"
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
