"""The Model, Download, Parameters, Notebook, Characters and Session tabs, driven as a browser would.

One app is built in-process on tiny models (and the default model where a real chat template
or a slow enough generation matters), launched on a free loopback port and driven through
gradio_client. The download runs against a fake hub on 127.0.0.1 (tests/fake_hub.py).
"""
from __future__ import annotations

import base64
import io
import json
import os
import shutil
import socket
import threading
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from fake_hub import FakeHub, FakeRepo, repo_from_folder
from api_helpers import watch_generations
from tiny_models import build_tiny_llama

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

from gradio_client import Client, handle_file  # noqa: E402

from modules.core.config import AppConfig  # noqa: E402
from modules.core.context import build_context  # noqa: E402
from modules.core.download import DownloadCancelled, download_model  # noqa: E402
from modules.core.engine import GenerationRequest  # noqa: E402
from modules.core.presets import PresetLibrary  # noqa: E402
from modules.core.registry import describe_folder, estimate_memory, estimate_memory_bytes  # noqa: E402
from modules.ui.app_ui import build_ui  # noqa: E402
from modules.ui.characters_tab import store_of  # noqa: E402
from modules.ui.model_tab import estimate_text  # noqa: E402
from modules.ui.parameters_tab import initial_params  # noqa: E402
from modules.ui.state import SAMPLER_KEYS  # noqa: E402

SMOL = "SmolLM2-135M-Instruct"
# The start-up settings: greedy, long replies that never stop at EOS (so Stop has something to stop).
START_SETTINGS = {"do_sample": False, "max_new_tokens": 400, "ban_eos_token": True, "seed": 1}


@dataclass
class App:
    ctx: object
    client: Client
    root: Path
    url: str
    shared: object = None  # the session's loaded default model (session_model.SharedModel)

    def call(self, api_name: str, *leading: object, **by_label: object) -> object:
        """Call an endpoint: ``leading`` values first, then any parameter by its component's label
        (the part before " ("), the rest at the components' current values."""
        params = self.client.view_api(return_format="dict", print_info=False)["named_endpoints"][api_name]["parameters"]
        args = list(leading)
        for param in params[len(leading):]:
            label = param.get("label", "").split(" (")[0]
            args.append(by_label.pop(label) if label in by_label else param.get("parameter_default"))
        assert not by_label, f"no parameter labelled {sorted(by_label)} on {api_name}"
        return self.client.predict(*args, api_name=api_name)

    def load(self, name: str) -> str:
        if self.ctx.models.loaded_name == name:
            return f"**{name}** is loaded"
        if name == SMOL and self.shared is not None:
            # The Model tab's loading is tested on the tiny models; the default model is the session's, lent.
            self.shared.lend(self.ctx)
            return f"**{name}** is loaded"
        return self.call("/model_load", name)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def app(tmp_path_factory, default_model_dir: Path, default_model, repo_root: Path):
    root = tmp_path_factory.mktemp("ui")
    models = root / "models"
    build_tiny_llama(models / "tiny-a")
    build_tiny_llama(models / "tiny-b", seed=1)
    (models / SMOL).symlink_to(default_model_dir, target_is_directory=True)
    shutil.copytree(repo_root / "presets", root / "presets")
    shutil.copytree(repo_root / "instruction-templates", root / "instruction-templates")
    config = AppConfig(models_dir=models, presets_dir=root / "presets", templates_dir=root / "instruction-templates",
                       user_data_dir=root / "user_data", settings_path=root / "settings.yaml",
                       settings=dict(START_SETTINGS))
    ctx = build_context(config)
    demo = build_ui(ctx)
    port = _free_port()
    demo.queue(default_concurrency_limit=8).launch(server_name="127.0.0.1", server_port=port,
                                                   prevent_thread_lock=True, quiet=True, show_error=True)
    url = f"http://127.0.0.1:{port}"
    client = Client(url, verbose=False)
    try:
        yield App(ctx, client, root, url, default_model)
    finally:
        demo.close()
        ctx.models.unload()


# --- Model ------------------------------------------------------------------------------------------


def test_model_tab_loads_switches_reloads_and_unloads(app: App) -> None:
    assert "16-bit" in app.call("/model_estimate", "tiny-a")
    assert app.call("/model_load", "tiny-a").startswith("**tiny-a** is loaded (transformers")
    assert app.ctx.models.loaded_name == "tiny-a"
    assert app.call("/model_load", "tiny-b").startswith("**tiny-b** is loaded")
    assert app.ctx.models.loaded_name == "tiny-b"
    assert app.call("/model_reload", "tiny-a").startswith("**tiny-b** is loaded")  # reload: the loaded one

    missing = app.call("/model_load", "no-such-model")
    assert missing.startswith("⚠️ No model called 'no-such-model'") and "**tiny-b** is loaded" in missing

    assert app.call("/model_unload") == "No model is loaded. Choose one above."
    assert app.ctx.engine.backend is None

    broken = app.root / "models" / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{not json")
    message = app.call("/model_load", "broken")
    assert message.startswith("⚠️ ") and "is not valid JSON" in message


def test_loading_leaves_the_rest_of_the_ui_answering(app: App) -> None:
    """A load has its own concurrency slot: while it waits, other events are served."""
    with app.ctx.models._lock:  # the load cannot finish while the test holds the manager
        job = app.client.submit("tiny-a", api_name="/model_load")
        assert app.call("/model_estimate", "tiny-b").startswith("**tiny-b**")
        assert app.call("/notebook_count", "hello") == "⚠️ No model is loaded. Choose one on the Model tab (or start with --model NAME)."
        assert not job.done()
    assert job.result(timeout=60).startswith("**tiny-a** is loaded")


def test_estimate_for_a_llama_7b_config(tmp_path: Path) -> None:
    folder = tmp_path / "llama-7b"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 4096,
        "intermediate_size": 11008, "num_attention_heads": 32, "num_hidden_layers": 32,
        "num_key_value_heads": 32, "vocab_size": 32000, "max_position_embeddings": 2048,
        "tie_word_embeddings": False}))
    (folder / "pytorch_model.bin").write_bytes(b"\0" * 16)
    (folder / "tokenizer_config.json").write_text("{}")
    info = describe_folder(folder)
    assert info.problem == "" and info.parameters == 6_738_415_616  # LLaMA-7B's published count
    weights = {bits: estimate_memory(info, bits).weights for bits in (16, 8, 4)}
    assert 12.5e9 < weights[16] < 14e9
    assert 6.5e9 < weights[8] < 7.5e9
    assert 3.6e9 < weights[4] < 4.5e9
    assert estimate_memory(info, 4, double_quant=True).weights < weights[4]
    # The KV cache of LLaMA-7B is 0.5 MiB per token at 16 bits.
    assert estimate_memory_bytes(info, 16, 2048) - estimate_memory_bytes(info, 16, 0) == 2048 * 2**19
    table = estimate_text(info)
    assert "| 16-bit | 13.5 GB |" in table and "| 4-bit | 4.2 GB |" in table


# --- Download -----------------------------------------------------------------------------------------


def test_download_from_a_local_hub(app: App, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source = build_tiny_llama(tmp_path / "src", seed=2)
    tiny = repo_from_folder(source)
    tiny.branches["dev"] = "b" * 40
    ggufs = FakeRepo({"m.Q4_0.gguf": b"GGUF" + os.urandom(300), "m.Q8_0.gguf": b"GGUF" + os.urandom(500),
                      "README.md": b"# two quantizations"})
    models = app.ctx.registry.models_dir
    with FakeHub({"tester/tiny-llama": tiny, "tester/ggufs": ggufs}) as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        reports: list[tuple[float, str]] = []
        target = download_model("tester/tiny-llama", "", "", models, lambda f, m: reports.append((f, m)))
        assert target == models / "tester_tiny-llama"
        for name, data in tiny.files.items():
            assert (target / name).read_bytes() == data
        assert not (models / "tester_tiny-llama.partial").exists() and not (target / ".cache").exists()
        fractions = [f for f, _ in reports]
        assert fractions == sorted(fractions) and fractions[-1] == 1.0 and any(0 < f < 1 for f in fractions)
        assert app.ctx.registry.get("tester_tiny-llama").problem == ""

        stopped = threading.Event()
        stopped.set()  # Stop pressed: the first bytes end it; what arrived waits in .partial
        with pytest.raises(DownloadCancelled):
            download_model("tester/tiny-llama", "dev", "", models, lambda f, m: None, stopped)
        assert (models / "tester_tiny-llama_dev.partial").is_dir() and not (models / "tester_tiny-llama_dev").exists()
        assert "tester_tiny-llama_dev.partial" not in app.ctx.registry.names()

        assert "model.safetensors" in app.call("/download_list", "tester/tiny-llama", "", "")
        done = app.call("/download", "https://huggingface.co/tester/tiny-llama/tree/dev", "", "")  # resumes
        assert done.startswith("Downloaded **tester/tiny-llama**") and (models / "tester_tiny-llama_dev").is_dir()
        assert not (models / "tester_tiny-llama_dev.partial").exists()
        assert (models / "tester_tiny-llama_dev" / "model.safetensors").read_bytes() == tiny.files["model.safetensors"]
        assert app.call("/download", "tester/ggufs", "", "m.Q8_0.gguf").startswith("Downloaded **tester/ggufs**")
        assert (models / "m.Q8_0.gguf").read_bytes() == ggufs.files["m.Q8_0.gguf"]
        assert app.call("/download", "tester/ggufs", "", "").startswith(
            "⚠️ This repository holds GGUF files; type the one you want in the File box: m.Q4_0.gguf, m.Q8_0.gguf.")
        assert app.call("/download", "tester/nothing-here", "", "").startswith("⚠️ No repository tester/nothing-here")
        assert app.call("/download", "tester/tiny-llama", "v9", "").startswith("⚠️ tester/tiny-llama has no branch 'v9'")
        assert app.call("/download", "tester/tiny-llama", "", "").startswith("⚠️ ") and "already exists" in \
            app.call("/download", "tester/tiny-llama", "", "")
        for bad in ("../etc", "/abs/path", "tester/../../x"):
            assert "is not a repository id" in app.call("/download", bad, "", "")
        assert "is not a file name" in app.call("/download", "tester/ggufs", "", "../m.Q8_0.gguf")
    assert app.call("/model_load", "tester_tiny-llama").startswith("**tester_tiny-llama** is loaded")


# --- Parameters ---------------------------------------------------------------------------------------


def test_presets_save_load_delete_and_refuse_paths(app: App) -> None:
    presets = app.root / "presets"
    status = app.call("/preset_save", "my preset", temperature=0.55, top_k=33)
    assert status[-1] == "Saved preset **my preset**."
    saved = yaml.safe_load((presets / "my preset.yaml").read_text())
    assert saved["temperature"] == 0.55 and saved["top_k"] == 33 and saved["do_sample"] is False
    assert "stop" not in saved and "truncation_length" not in saved

    values = app.call("/preset_load", "simple-1")
    loaded = dict(zip(SAMPLER_KEYS, values[:-1]))
    assert values[-1] == "Loaded preset **simple-1**."
    assert (loaded["temperature"], loaded["top_p"], loaded["top_k"], loaded["repetition_penalty"]) == (0.7, 0.9, 20, 1.15)
    assert loaded["do_sample"] is True and loaded["max_new_tokens"] == 512  # the preset's neutral values
    mine = dict(zip(SAMPLER_KEYS, app.call("/preset_load", "my preset")[:-1]))
    assert (mine["temperature"], mine["top_k"]) == (0.55, 33)

    assert app.call("/preset_delete", "my preset")[-1] == "Deleted preset **my preset**."
    assert not (presets / "my preset.yaml").exists()
    for bad in ("../evil", "/tmp/evil", "..\\evil"):
        message = app.call("/preset_save", bad)[-1]
        assert message.startswith(f"⚠️ Preset name {bad!r} is not allowed")
    assert app.call("/preset_delete", "../min_p")[-1].startswith("⚠️ Preset name '../min_p' is not allowed")
    assert not list(app.root.glob("evil*")) and (presets / "min_p.yaml").is_file()


# A chat as the Chatbot sends it in Gradio 6: content as a list of parts.
HISTORY = [{"role": "user", "content": [{"type": "text", "text": "Hi"}]},
           {"role": "assistant", "content": [{"type": "text", "text": "Hello! How can I help?"}]}]


def test_instruction_format_editing_and_the_exact_prompt(app: App) -> None:
    app.load(SMOL)
    resolved, name, template, stops, _ = app.call("/format_choose", "")
    assert resolved.startswith("Using **model's own** from the model's own chat template")
    assert name == "" and template == app.ctx.models.current.info.chat_template and "<|im_end|>" in stops

    prompt, info, ids = app.call("/show_prompt", HISTORY, "What is 2+2?")
    assert prompt == ("<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face"
                      "<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello! How can I help?"
                      "<|im_end|>\n<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n")
    # The token ids generation gets: the template's markers as control ids, exactly as the model's tokenizer reads them.
    tokenizer = app.ctx.engine.backend.tokenizer
    assert [int(i) for i in ids.split()] == tokenizer(prompt, add_special_tokens=False)["input_ids"]
    assert info.startswith(f"{len(ids.split())} tokens · stop strings: ") and "'<|im_end|>'" in info
    # No message typed: the prompt that produced the last reply.
    prompt, _, _ = app.call("/show_prompt", HISTORY, "", **{"Instruction format": "ChatML", "System message": "Be brief."})
    assert prompt == "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"

    terse = "{% for m in messages %}{{ m['role'] | upper }}: {{ m['content'] }}\n{% endfor %}" \
            "{% if add_generation_prompt %}ASSISTANT:{% endif %}"
    _, resolved, status = app.call("/format_save", "Terse", terse, "\\nUSER:")
    assert status == "Saved instruction format **Terse**." and resolved.startswith("Using **Terse** from ")
    saved = yaml.safe_load((app.root / "instruction-templates" / "Terse.yaml").read_text())
    assert saved == {"instruction_template": terse, "stop_strings": ["\nUSER:"]}
    prompt, info, _ = app.call("/show_prompt", HISTORY, "What is 2+2?", **{"Instruction format": "Terse"})
    assert prompt == "USER: Hi\nASSISTANT: Hello! How can I help?\nUSER: What is 2+2?\nASSISTANT:"
    assert "'\\nUSER:'" in info

    assert app.call("/format_save", "../evil", terse, "")[-1].startswith("⚠️ Instruction format name '../evil' is not allowed")
    assert "syntax error" in app.call("/format_save", "Broken", "{% for %}", "")[-1]
    assert not (app.root / "instruction-templates" / "Broken.yaml").exists()


# --- Notebook -----------------------------------------------------------------------------------------


def test_notebook_completes_raw_text_like_the_engine(app: App) -> None:
    app.load("tiny-a")
    text, info = app.call("/notebook_generate", "The quick brown")
    assert text.startswith("The quick brown")
    params = initial_params(app.ctx)  # the tab's start-up values: greedy, EOS banned
    request = GenerationRequest(prompt="The quick brown", params=params)
    expected = "".join(d.text for d in app.ctx.engine.generate(request))
    assert text == "The quick brown" + expected and expected
    prompt_tokens = app.ctx.engine.count_tokens("The quick brown")
    assert info.startswith(f"prompt {prompt_tokens} tokens · ") and info.endswith("reached max_new_tokens")
    output, _ = app.call("/notebook_panes", "The quick brown")
    assert output == expected
    assert app.call("/notebook_count", "The quick brown") == f"{prompt_tokens} tokens"


def test_notebook_stop_ends_the_completion(app: App) -> None:
    app.load(SMOL)
    with watch_generations(app.ctx.engine) as watch:
        job = app.client.submit("Once upon a time", *_defaults(app, "/notebook_generate", 1),
                                api_name="/notebook_generate")
        assert watch.started.wait(240)  # the completion is under way: its first token is out
        app.client.predict(api_name="/notebook_stop")
    text, info = job.result(timeout=60)
    new_tokens = int(info.split(" · ")[1].split()[0])
    assert info.endswith("stopped") and 0 < new_tokens < 400 and text.startswith("Once upon a time")


def _defaults(app: App, api_name: str, skip: int) -> list:
    params = app.client.view_api(return_format="dict", print_info=False)["named_endpoints"][api_name]["parameters"]
    return [p.get("parameter_default") for p in params[skip:]]


# --- Characters ---------------------------------------------------------------------------------------


def _png_card(card: dict) -> bytes:
    from PIL import Image
    from PIL.PngImagePlugin import PngInfo

    meta = PngInfo()
    meta.add_text("chara", base64.b64encode(json.dumps(card).encode()).decode())
    out = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 30, 30)).save(out, format="PNG", pnginfo=meta)
    return out.getvalue()


def test_characters_create_import_use_and_delete(app: App, tmp_path: Path) -> None:
    store = store_of(app.ctx)
    assert app.call("/character_save", "Ava", "Hello, I am Ava.", "{{char}} is a cheerful guide.", None)[-1] == "Saved **Ava**."
    name, greeting, context, picture, _ = app.call("/character_show", "Ava")
    assert (name, greeting, context, picture) == ("Ava", "Hello, I am Ava.", "{{char}} is a cheerful guide.", None)
    from PIL import Image

    Image.new("RGB", (12, 10), (10, 120, 200)).save(tmp_path / "ava.png")
    assert app.call("/character_save", "Ava", "Hello, I am Ava.", "{{char}} is a cheerful guide.",
                    handle_file(str(tmp_path / "ava.png")))[-1] == "Saved **Ava**."
    with Image.open(io.BytesIO(store.get_character("local", "Ava")["picture"])) as stored:
        assert stored.size == (12, 10) and stored.convert("RGB").getpixel((3, 3)) == (10, 120, 200)

    (tmp_path / "Bob.yaml").write_text("name: Bob\ngreeting: Hey there.\ncontext: Bob fixes bikes.\n")
    (tmp_path / "cleo.json").write_text(json.dumps({"spec": "chara_card_v2", "data": {
        "name": "Cleo", "first_mes": "Meow.", "description": "A cat.", "personality": "curious"}}))
    png = _png_card({"name": "Dot", "first_mes": "Beep.", "description": "A small robot."})
    (tmp_path / "dot.png").write_bytes(png)
    for file, imported in (("Bob.yaml", "Bob"), ("cleo.json", "Cleo"), ("dot.png", "Dot")):
        assert app.call("/character_import", handle_file(str(tmp_path / file)))[-1] == f"Imported **{imported}**."
    assert store.get_character("local", "Bob")["context"] == "Bob fixes bikes."
    cleo = store.get_character("local", "Cleo")
    assert (cleo["greeting"], cleo["context"]) == ("Meow.", "A cat.\n\nCleo's personality: curious")
    dot = store.get_character("local", "Dot")
    assert (dot["greeting"], dot["context"], dot["picture"]) == ("Beep.", "A small robot.", png)
    assert app.call("/character_show", "Dot")[3] is not None  # the card is the picture

    (tmp_path / "bad.json").write_text("[1, 2]")
    assert app.call("/character_import", handle_file(str(tmp_path / "bad.json")))[-1].startswith("⚠️ Character file 'bad.json'")
    assert app.call("/character_save", "../evil", "", "", None)[-1].startswith("⚠️ Character name '../evil' is not allowed")

    assert app.call("/profile_save", "Sam", "A tester.") == "Saved your profile."
    assert store.get_settings("local")["user_name"] == "Sam"
    app.load("tiny-a")
    prompt, _, _ = app.call("/show_prompt", [], "Hi", Mode="chat", **{"Character": "Ava", "Your name": "Sam"})
    assert prompt == "Ava is a cheerful guide.\nSam: Hi\nAva:"

    assert app.call("/character_delete", "Bob")[-1] == "Deleted **Bob**."
    assert [c["name"] for c in store.list_characters("local")] == ["Ava", "Cleo", "Dot"]


# --- Session ------------------------------------------------------------------------------------------


def test_settings_are_saved_and_read_back_at_the_next_start(app: App, repo_root: Path) -> None:
    import app as app_module

    path = app.root / "settings.yaml"
    path.write_text("listen_port: 7999\ntemperature: 3.0\n")  # a server flag the UI leaves alone
    status = app.call("/settings_save", True, "tiny-a", **{
        "4-bit": True, "4-bit type": "fp4", "temperature": 0.42, "Mode": "chat", "System message": "Be brief."})
    assert status.startswith("Saved ") and str(path) in status

    config = app_module.build_config(app_module.parse_args(["--settings", str(path)]), repo_root)
    assert config.model == "tiny-a" and config.preset == "min_p" and config.server.listen_port == 7999
    assert config.loader.load_in_4bit is True and config.loader.quant_type == "fp4"
    assert config.settings["dark_theme"] is True and config.settings["mode"] == "chat"
    assert config.settings["system"] == "Be brief."
    # Sparse: the preset's own values and the defaults are not repeated; changed values are.
    assert config.settings["temperature"] == 0.42 and "min_p" not in config.settings
    assert "user_name" not in config.settings and "chat_instruct_command" not in config.settings
    restarted = SimpleNamespace(config=config, presets=PresetLibrary(app.root / "presets"))
    params = initial_params(restarted)
    assert (params.temperature, params.min_p, params.max_new_tokens, params.do_sample) == (0.42, 0.05, 400, False)
    assert not list(path.parent.glob(".settings.yaml.*"))  # no temporary file left behind
