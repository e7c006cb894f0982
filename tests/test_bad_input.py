"""Bad input: each failure is a clear error naming the file and the problem; the app stays usable."""
from __future__ import annotations

import shutil

import pytest

from modules.core.chat import ChatSettings, Turn
from modules.core.config import AppConfig, LoaderOptions
from modules.core.context import build_context
from modules.core.engine import GenerationRequest
from modules.core.errors import CorralError, ModelLoadError, PresetError, TemplateError
from modules.core.generation import chat_prompt
from modules.core.sampling import SamplerParams
from tiny_models import build_tiny_llama

TEMPLATES = "instruction-templates"


@pytest.fixture(scope="module")
def ctx(tmp_path_factory, repo_root):
    root = tmp_path_factory.mktemp("bad")
    models = root / "models"
    good = build_tiny_llama(models / "good-llama")
    for name in ("no-weights", "bad-config", "torn-weights"):
        shutil.copytree(good, models / name)
    (models / "no-weights" / "model.safetensors").unlink()
    torn = models / "torn-weights" / "model.safetensors"  # the header is whole, the tensors are cut short
    torn.write_bytes(torn.read_bytes()[: torn.stat().st_size // 2])
    (models / "bad-config" / "config.json").write_text('{"architectures": ["LlamaForCausalLM"], "hidden_size": ')
    (models / "not-really.gguf").write_bytes(b"<html>404 Not Found</html>" * 10)
    presets = root / "presets"
    presets.mkdir()
    (presets / "broken.yaml").write_text("temperature: [0.7\n")
    (presets / "typo.yaml").write_text("temprature: 0.7\n")
    (presets / "good.yaml").write_text("temperature: 0.5\n")
    templates = root / "templates"
    shutil.copytree(repo_root / TEMPLATES, templates)
    (templates / "Explodes.yaml").write_text(
        "instruction_template: |-\n  {{ raise_exception('roles must alternate') }}\nstop_strings: []\n")
    config = AppConfig(models_dir=models, presets_dir=presets, templates_dir=templates,
                       loader=LoaderOptions(cpu=True, dtype="float32"))
    return build_context(config)


def answers(ctx) -> None:
    """The loaded model generates."""
    deltas = list(ctx.engine.generate(GenerationRequest(prompt="Hello", params=SamplerParams(max_new_tokens=3))))
    assert deltas[-1].finish_reason in {"stop", "length"} and deltas[-1].completion_tokens > 0


def still_usable(ctx) -> None:
    """After any failure a good model loads and answers."""
    ctx.models.load("good-llama")
    answers(ctx)


def test_listing_survives_every_broken_model(ctx):
    infos = {m.name: m for m in ctx.registry.list()}
    assert set(infos) == {"good-llama", "no-weights", "bad-config", "torn-weights", "not-really.gguf"}
    assert infos["good-llama"].problem == ""
    assert "no weights" in infos["no-weights"].problem
    assert "config.json" in infos["bad-config"].problem and "not valid JSON" in infos["bad-config"].problem
    assert "not a GGUF file" in infos["not-really.gguf"].problem


@pytest.mark.parametrize("name,words", [("no-weights", "no weights"), ("bad-config", "config.json"),
                                        ("not-really.gguf", "not a GGUF file"), ("missing", "No model called")])
def test_loading_a_broken_model_is_a_clear_error(ctx, name, words):
    with pytest.raises(ModelLoadError) as err:
        ctx.models.load(name)
    assert words in str(err.value) and name in str(err.value)
    still_usable(ctx)


def test_a_refused_load_keeps_the_loaded_model(ctx):
    """A model whose files are known to be broken is refused before the working one is touched."""
    ctx.models.load("good-llama")
    backend = ctx.engine.backend
    with pytest.raises(ModelLoadError):
        ctx.models.load("bad-config")
    assert ctx.models.loaded_name == "good-llama" and ctx.engine.backend is backend
    answers(ctx)  # without loading it again


def test_a_load_that_fails_midway_gives_back_the_previous_model(ctx):
    """Weights that only fail while loading: the previous model is loaded again and the error says so (issue 17)."""
    ctx.models.load("good-llama")
    with pytest.raises(ModelLoadError) as err:
        ctx.models.load("torn-weights")
    assert "torn-weights could not be loaded" in str(err.value)
    assert "good-llama" in str(err.value) and "loaded again" in str(err.value)  # which model is loaded now
    assert ctx.models.loaded_name == "good-llama" and ctx.engine.backend is not None
    answers(ctx)  # without loading it again


def test_malformed_preset_names_the_file(ctx):
    with pytest.raises(PresetError) as err:
        ctx.presets.load("broken")
    assert "broken.yaml" in str(err.value) and "not valid YAML" in str(err.value)
    with pytest.raises(PresetError) as err:
        ctx.presets.load("typo")
    assert "typo.yaml" in str(err.value) and "temprature" in str(err.value)
    assert ctx.presets.load("good").temperature == 0.5


def test_unknown_format_and_a_template_that_fails_to_render(ctx):
    ctx.models.load("good-llama")
    with pytest.raises(TemplateError) as err:
        chat_prompt(ctx, [], Turn(user_message="Hi"), ChatSettings(), SamplerParams(), "Nope")
    assert "Nope" in str(err.value) and "Alpaca" in str(err.value)
    with pytest.raises(TemplateError) as err:
        chat_prompt(ctx, [], Turn(user_message="Hi"), ChatSettings(), SamplerParams(), "Explodes")
    assert "Explodes" in str(err.value) and "roles must alternate" in str(err.value)
    still_usable(ctx)


@pytest.mark.parametrize("name", ["../etc/passwd", "/etc/passwd", "..", "a/b", ".hidden"])
def test_names_that_leave_their_folder_are_refused(ctx, name):
    with pytest.raises(CorralError) as err:
        ctx.presets.load(name)
    assert "not allowed" in str(err.value)
    with pytest.raises(CorralError):
        ctx.presets.save(name, SamplerParams())
    with pytest.raises(CorralError):
        ctx.formats.get(name)


def test_template_special_tokens_become_ids_and_bos_is_not_doubled(ctx):
    ctx.models.load("good-llama")
    backend = ctx.engine.backend
    tok = backend.tokenizer
    ids = backend.encode("<s>[INST] hi [/INST] ok </s><s>[INST] again [/INST]")
    assert ids[0] == tok.bos_token_id and ids[1] != tok.bos_token_id
    assert ids.count(tok.eos_token_id) == 1 and ids.count(tok.bos_token_id) == 2
    plain = backend.encode("hello")
    assert plain[0] == tok.bos_token_id and plain.count(tok.bos_token_id) == 1
    eos_at = ids.index(tok.eos_token_id)
    assert ids[eos_at + 1] == tok.bos_token_id
