"""The parsers a user can feed, each run through the real code path, with its bad files."""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import yaml

from bench.reliability_files import (CARD, FileCase, Parser, generic_mutations, gguf_mutations, png_card,
                                     png_mutations, yaml_mutations)

ROOT = Path(__file__).resolve().parent.parent


def _cases(mapping: dict[str, bytes]) -> list[FileCase]:
    return [FileCase(kind, data) for kind, data in mapping.items()]


def _write(folder: Path, name: str, data: bytes) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_bytes(data)
    return path


def run_preset(folder: Path, data: bytes) -> Any:
    from modules.core.presets import PresetLibrary

    _write(folder / "presets", "fuzz.yaml", data)
    return PresetLibrary(folder / "presets").load("fuzz")


def run_character(suffix: str):
    def run(folder: Path, data: bytes) -> Any:
        from modules.core.character_cards import parse_character_file
        from modules.core.store import Store

        fields = parse_character_file(f"fuzz{suffix}", data)
        with Store(folder / "characters.db") as store:  # what the Character tab does next
            store.save_character("local", fields["name"], fields["greeting"], fields["context"], fields["picture"])
        return fields
    return run


def run_chat_import(folder: Path, data: bytes) -> Any:
    from modules.core.store import Store
    from modules.ui.chat_history import read_import

    path = _write(folder, "chat.json", data)
    with Store(folder / "chats.db") as store:
        return store.import_chat("local", read_import(str(path)), None)


def run_settings(folder: Path, data: bytes) -> Any:
    import app

    path = _write(folder, "settings.yaml", data)
    config = app.build_config(app.parse_args(["--settings", str(path)]), ROOT)
    from modules.core.load_checks import check_options

    check_options("the settings file", config.loader)  # what loading at start checks next
    return config


def run_template(folder: Path, data: bytes) -> Any:
    from modules.core.templates import FormatLibrary, render

    _write(folder / "formats", "Fuzz.yaml", data)
    fmt = FormatLibrary(folder / "formats").get("Fuzz")
    return render(fmt, [{"role": "user", "content": "Hi"}], bos_token="<s>", eos_token="</s>")


def run_models_config(tiny_model: Path):
    def run(folder: Path, data: bytes) -> Any:
        from modules.core.registry import ModelRegistry

        models = folder / "models"
        if not (models / tiny_model.name).exists():
            shutil.copytree(tiny_model, models / tiny_model.name)
        _write(models, "config.yaml", data)
        return ModelRegistry(models).list()
    return run


def run_gguf(folder: Path, data: bytes) -> Any:
    from modules.core.registry import ModelRegistry

    _write(folder / "gguf", "fuzz.gguf", data)
    return ModelRegistry(folder / "gguf").list()


def run_extension_settings(folder: Path, data: bytes) -> Any:
    """A settings file's ``NAME-PARAM`` keys applied to an extension, which then sets up."""
    from modules.core.config import read_settings_file
    from modules.core.extensions.loader import load_extension

    home = folder / "extensions" / "fuzzext"
    if not home.exists():
        home.mkdir(parents=True)
        (home / "script.py").write_text("params = {'display_name': 'Fuzz', 'level': 1}\n"
                                        "def input_modifier(text, state, is_chat=False):\n    return text\n")
    settings = read_settings_file(_write(folder, "ext-settings.yaml", data))
    return load_extension(folder / "extensions", "fuzzext", settings)


def parsers(tiny_model: Path, tiny_gguf: bytes) -> list[Parser]:
    preset = {"temperature": 0.7, "top_p": 0.9, "top_k": 40, "repetition_penalty": 1.1, "min_p": 0.05,
              "stop": ["###"], "logit_bias": {5: 1.0}, "seed": 3, "max_new_tokens": 64, "do_sample": True}
    character = {"name": "Ada", "greeting": "Hello", "context": "Ada is a mathematician."}
    export = {"format": "corral-chat", "title": "t", "mode": "instruct",
              "messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]}
    webui = {"internal": [["Hi", "Hello"]], "visible": [["Hi", "Hello"]]}
    settings = {"dtype": "float32", "preset": "min_p", "listen_port": 7860, "extensions": ["x"], "api_port": 5000,
                "instruction_format": "Alpaca", "cpu": True, "n_ctx": 0, "load_in_4bit": False, "quant_type": "nf4"}
    template = {"instruction_template": "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}",
                "stop_strings": ["user:"]}
    template_traps = {
        "jinja-syntax-error": b"instruction_template: '{% for %}'\n",
        "jinja-read-file": b"instruction_template: \"{{ ''.__class__.__mro__[1].__subclasses__() }}\"\n",
        "jinja-import": b"instruction_template: \"{% import 'os' as os %}\"\n",
        "jinja-include": b"instruction_template: \"{% include '/etc/passwd' %}\"\n",
        "jinja-globals": b"instruction_template: \"{{ self.__init__.__globals__ }}\"\n",
        "jinja-cycler": b"instruction_template: \"{{ cycler.__init__.__globals__.os }}\"\n",
        "jinja-huge-loop": b"instruction_template: \"{% for i in range(10**9) %}x{% endfor %}\"\n",
        "jinja-raise": b"instruction_template: \"{{ raise_exception('no') }}\"\n",
        "jinja-undefined-call": b"instruction_template: \"{{ nothing() }}\"\n",
        "stop-strings-not-list": b"instruction_template: 'x'\nstop_strings: 5\n",
    }
    config = b"SmolLM:\n  instruction_format: ChatML\n.*:\n  dtype: float32\n"
    config_traps = {"bad-regex": b"'[':\n  dtype: float32\n", "rule-not-mapping": b".*: 5\n",
                    "bad-loader-option": b".*:\n  dtype: junk\n", "unknown-setting": b".*:\n  warp: 9\n",
                    "catastrophic-regex": b"'(a+)+$':\n  dtype: float32\n"}
    return [
        Parser("preset", run_preset, _cases({**generic_mutations(yaml.safe_dump(preset).encode()),
                                             **yaml_mutations(preset)})),
        Parser("character-yaml", run_character(".yaml"),
               _cases({**generic_mutations(yaml.safe_dump(character).encode()), **yaml_mutations(character)})),
        Parser("character-json", run_character(".json"),
               _cases({k: json.dumps(yaml.safe_load(v) if not k.startswith(("top", "python", "billion",
                                                                               "tab", "unclosed", "binary",
                                                                               "deep", "dup", "huge", "inf",
                                                                               "nan")) else None).encode()
                       for k, v in yaml_mutations(character).items()}
                      | generic_mutations(json.dumps(character).encode()))),
        Parser("character-png", run_character(".png"),
               _cases({**png_mutations(), **{f"png-{k}": v for k, v in generic_mutations(png_card(CARD)).items()}})),
        Parser("chat-import", run_chat_import, _cases({
            **generic_mutations(json.dumps(export).encode()),
            **{f"webui-{k}": v for k, v in generic_mutations(json.dumps(webui).encode()).items()},
            **{f"export-{k}": json.dumps({**export, k: v}).encode() for k, v in
               {"messages": "x", "mode": "junk", "format": 5, "title": ["x"]}.items()},
            **{f"message-{k}": json.dumps({**export, "messages": [v]}).encode() for k, v in
               {"null": None, "text": "x", "no-role": {"content": "x"}, "bad-role": {"role": "x", "content": "y"},
                "content-list": {"role": "user", "content": [1]}}.items()},
            "webui-ragged": json.dumps({"internal": [["a"]], "visible": [[1, 2, 3]]}).encode(),
            "webui-not-pairs": json.dumps({"internal": "x", "visible": None}).encode(),
            "json-list": b"[1, 2]", "json-deep": b"[" * 100_000 + b"]" * 100_000})),
        Parser("settings", run_settings, _cases({**generic_mutations(yaml.safe_dump(settings).encode()),
                                                 **yaml_mutations(settings)})),
        Parser("instruction-template", run_template, _cases({**generic_mutations(yaml.safe_dump(template).encode()),
                                                             **yaml_mutations(template), **template_traps})),
        Parser("models-config", run_models_config(tiny_model),
               _cases({**generic_mutations(config), **yaml_mutations({"SmolLM": {"instruction_format": "ChatML"}}),
                       **config_traps})),
        Parser("gguf-header", run_gguf, _cases(gguf_mutations(tiny_gguf))),
        Parser("extension-settings", run_extension_settings,
               _cases(yaml_mutations({"fuzzext-level": 2, "fuzzext-display_name": "x"}))),
    ]
