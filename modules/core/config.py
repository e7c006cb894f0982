"""Typed settings, parsed once (flags + settings file) and passed down.

Nothing here reads ``sys.argv`` or the environment at import time; ``app.py``
builds an :class:`AppConfig` and hands it to :func:`modules.core.context.build_context`.
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from modules.core.errors import CorralError

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_MODEL_NAME = "SmolLM2-135M-Instruct"


@dataclass
class LoaderOptions:
    """How to load one model. Every field maps to a flag and a UI control."""

    loader: str = "auto"  # auto | transformers | llama.cpp | remote
    dtype: str = "auto"  # auto | bfloat16 | float16 | float32
    load_in_8bit: bool = False
    load_in_4bit: bool = False
    quant_type: str = "nf4"  # nf4 | fp4
    compute_dtype: str = "auto"  # auto | bfloat16 | float16 | float32
    use_double_quant: bool = False
    cpu: bool = False
    gpu_memory: list[str] = field(default_factory=list)  # per GPU, e.g. ["10GiB", "8GiB"]
    cpu_memory: str | None = None  # e.g. "32GiB": cap for CPU offload
    trust_remote_code: bool = False
    # llama.cpp
    n_ctx: int = 0  # 0: the model's own context length
    n_threads: int = 0  # 0: library default
    n_gpu_layers: int = -1  # -1: all where the build supports a GPU
    n_batch: int = 512
    use_mmap: bool = True
    use_mlock: bool = False
    # fast decoding path (static cache + torch.compile) on CUDA
    fast_decode: str = "auto"  # auto | on | off
    # remote
    remote_url: str | None = None
    remote_key: str | None = None

    def merged(self, overrides: dict[str, Any]) -> "LoaderOptions":
        """A copy with ``overrides`` applied; unknown keys are an error naming them."""
        known = {f.name for f in fields(self)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise CorralError(f"Unknown loader option(s): {', '.join(unknown)}. Known: {', '.join(sorted(known))}.")
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        data.update(overrides)
        return LoaderOptions(**data)


@dataclass
class ServerOptions:
    listen: bool = False
    listen_host: str | None = None
    listen_port: int = 7860
    share: bool = False
    gradio_auth: list[str] = field(default_factory=list)
    gradio_auth_path: str | None = None
    api: bool = False
    api_port: int = 5000
    api_key: str | None = None
    admin_key: str | None = None
    max_request_bytes: int = 1024 * 1024  # larger API request bodies are refused (413)
    max_prompt_tokens: int = 0  # longer API prompts are refused (400); 0: only the model's context limits

    @property
    def host(self) -> str:
        """127.0.0.1 unless the user asked to listen on the network."""
        if self.listen_host:
            return self.listen_host
        return "0.0.0.0" if self.listen else "127.0.0.1"


@dataclass
class AppConfig:
    model: str | None = None  # None: the default model
    loader: LoaderOptions = field(default_factory=LoaderOptions)
    server: ServerOptions = field(default_factory=ServerOptions)
    models_dir: Path = ROOT / "models"
    presets_dir: Path = ROOT / "presets"
    templates_dir: Path = ROOT / "instruction-templates"
    characters_dir: Path = ROOT / "characters"
    extensions_dir: Path = ROOT / "extensions"
    user_data_dir: Path = ROOT / "user_data"
    settings_path: Path | None = None
    settings: dict[str, Any] = field(default_factory=dict)  # the settings file, as read
    extensions: list[str] = field(default_factory=list)
    preset: str = "min_p"
    instruction_format: str | None = None  # None: resolved per model
    no_model: bool = False  # start without loading any model


def read_settings_file(path: Path) -> dict[str, Any]:
    """Read a YAML settings file; a clear error names the file and the problem."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except FileNotFoundError:
        raise CorralError(f"Settings file {path} does not exist.") from None
    except UnicodeDecodeError as err:
        raise CorralError(f"Settings file {path} is not UTF-8 text ({err}). Save it as UTF-8.") from None
    except (yaml.YAMLError, RecursionError) as err:  # RecursionError: nesting deeper than the parser goes
        raise CorralError(f"Settings file {path} is not valid YAML: {err or 'nested too deeply'}") from None
    if not isinstance(data, dict):
        raise CorralError(f"Settings file {path} must hold a mapping of setting: value, not {type(data).__name__}.")
    return data
