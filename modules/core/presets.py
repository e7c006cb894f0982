"""Presets: sparse YAML files over the neutral sampler defaults."""
from __future__ import annotations

from dataclasses import fields
from pathlib import Path
from typing import Any

import yaml

from modules.core.errors import PresetError
from modules.core.paths import file_in
from modules.core.sampling import SamplerParams, param_problem

# Names users know from other tools, accepted in preset files.
ALIASES = {"mirostat": "mirostat_mode", "tfs_z": "tfs", "repeat_penalty": "repetition_penalty",
           "repeat_last_n": "repetition_penalty_range", "max_tokens": "max_new_tokens"}


def params_from_dict(values: dict[str, Any], source: str) -> SamplerParams:
    """Merge ``values`` over the neutral defaults; unknown keys and wrong types are errors naming ``source``."""
    types = {f.name: f.type for f in fields(SamplerParams)}
    merged: dict[str, Any] = {}
    for raw_key, value in values.items():
        key = ALIASES.get(str(raw_key), str(raw_key))
        if key not in types:
            raise PresetError(f"{source}: unknown parameter {raw_key!r}. Known: {', '.join(sorted(types))}.")
        merged[key] = _coerce(key, value, getattr(SamplerParams(), key), source)
    params = SamplerParams().replace(**merged)
    problem = param_problem(params)
    if problem:
        raise PresetError(f"{source}: {problem[1]}.")
    return params


def _coerce(key: str, value: Any, default: Any, source: str) -> Any:
    try:
        if isinstance(default, bool):
            if not isinstance(value, bool):
                raise TypeError("expected true or false")
            return value
        if isinstance(default, int):
            if isinstance(value, bool) or float(value) != int(float(value)):
                raise TypeError("expected a whole number")
            return int(value)
        if isinstance(default, float):
            if isinstance(value, bool):
                raise TypeError("expected a number")
            return float(value)
        if isinstance(default, list):
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise TypeError("expected a list of strings")
            return value
        if isinstance(default, dict):
            if not isinstance(value, dict):
                raise TypeError("expected a mapping")
            return {int(k): float(v) for k, v in value.items()}
    except (TypeError, ValueError, OverflowError) as err:
        raise PresetError(f"{source}: {key} = {value!r} is not valid ({err}).") from None
    return value


class PresetLibrary:
    """presets/*.yaml: list, load, save, delete."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def names(self) -> list[str]:
        if not self.folder.is_dir():
            return []
        return sorted((p.stem for p in self.folder.glob("*.yaml")), key=str.lower)

    def load(self, name: str) -> SamplerParams:
        path = file_in(self.folder, name, ".yaml", "preset")
        if not path.is_file():
            raise PresetError(f"No preset called {name!r} in {self.folder}. Presets: {', '.join(self.names())}.")
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except UnicodeDecodeError as err:
            raise PresetError(f"Preset file {path} is not UTF-8 text ({err}). Save it as UTF-8.") from None
        except (yaml.YAMLError, RecursionError) as err:  # RecursionError: nesting deeper than the parser goes
            raise PresetError(f"Preset file {path} is not valid YAML: {err or 'nested too deeply'}") from None
        if not isinstance(data, dict):
            raise PresetError(f"Preset file {path} must map parameter names to values.")
        return params_from_dict(data, f"Preset file {path}")

    def save(self, name: str, params: SamplerParams) -> Path:
        """Write only what differs from the neutral defaults (stop strings and limits stay out)."""
        path = file_in(self.folder, name, ".yaml", "preset")
        values = {k: v for k, v in params.non_neutral().items()
                  if k not in {"stop", "logit_bias", "truncation_length"}}
        self.folder.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(values, sort_keys=False) if values else "{}\n", encoding="utf-8")
        return path

    def delete(self, name: str) -> None:
        path = file_in(self.folder, name, ".yaml", "preset")
        if not path.is_file():
            raise PresetError(f"No preset called {name!r}.")
        path.unlink()
