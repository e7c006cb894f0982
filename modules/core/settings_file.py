"""Writing the settings file (YAML) that app.py reads at the next start.

The file stays sparse and readable: sampler values only where they differ from the chosen
preset, loader options only where they differ from the defaults. Keys the UI does not manage
(server flags, extensions...) are kept as they were. Written atomically: a crash leaves the
old file or the new one, never half of one.
"""
from __future__ import annotations

import os
import tempfile
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

import yaml

from modules.core.chat import DEFAULT_CHAT_INSTRUCT
from modules.core.config import LoaderOptions, read_settings_file
from modules.core.errors import CorralError
from modules.core.sampling import SamplerParams

SAVED_LOADER_KEYS = ("loader", "dtype", "load_in_4bit", "load_in_8bit", "compute_dtype", "quant_type",
                     "use_double_quant", "cpu", "gpu_memory", "cpu_memory", "trust_remote_code",
                     "n_ctx", "n_gpu_layers", "n_threads")
CHAT_SETTING_KEYS = ("preset", "instruction_format", "mode", "system", "chat_instruct_command",
                     "character", "user_name", "user_bio")
UI_KEYS = ("model", "dark_theme")
CHAT_DEFAULTS = {"mode": "instruct", "user_name": "You", "chat_instruct_command": DEFAULT_CHAT_INSTRUCT}
MANAGED = {*SAVED_LOADER_KEYS, *CHAT_SETTING_KEYS, *UI_KEYS, *(f.name for f in fields(SamplerParams))}


def settings_snapshot(*, model: str | None, loader: LoaderOptions, params: SamplerParams,
                      preset_params: SamplerParams, chat: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """What the UI shows now, as settings-file keys (sparse)."""
    out: dict[str, Any] = {}
    if model:
        out["model"] = model
    defaults = LoaderOptions()
    out.update({k: getattr(loader, k) for k in SAVED_LOADER_KEYS if getattr(loader, k) != getattr(defaults, k)})
    out.update({k: v for k, v in chat.items()
                if k in CHAT_SETTING_KEYS and v not in (None, "") and v != CHAT_DEFAULTS.get(k)})
    preset_values = asdict(preset_params)
    out.update({k: v for k, v in asdict(params).items() if v != preset_values[k]})
    out.update({k: v for k, v in extra.items() if k in UI_KEYS and v is not None})
    return out


def merged_with_file(path: Path, snapshot: dict[str, Any]) -> dict[str, Any]:
    """The file's keys the UI does not manage, then the snapshot."""
    existing = read_settings_file(path) if path.is_file() else {}
    return {**{k: v for k, v in existing.items() if k not in MANAGED}, **snapshot}


def write_settings_file(path: Path, data: dict[str, Any]) -> Path:
    """Write ``data`` as YAML to ``path`` atomically (temporary file in the same folder, then rename)."""
    text = "# Corral settings, saved from the Session tab; flags given at start-up override them.\n"
    text += yaml.safe_dump(data, sort_keys=True, allow_unicode=True)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                out.write(text)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except OSError as err:
        raise CorralError(f"The settings could not be saved to {path}: {err}. Check the folder is writable.") from None
    return path
