"""models/config.yaml: settings by model name -- instruction format, stop strings, special tokens, loader options.

Each key of the file is a regular expression matched (``re.match``) against the lower-cased name of
a model's folder or GGUF file as it is on disk (``TheBloke_vicuna-7B-1.1-HF``,
``vicuna-13b-v1.5.Q4_K_M.gguf``). Every rule that matches contributes its settings, merged in file
order, so a later rule wins. Every setting is checked here, so a typo is an error naming the rule
instead of a setting silently ignored.
"""
from __future__ import annotations

import copy
import re
from functools import lru_cache
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import yaml

from modules.core.config import LoaderOptions
from modules.core.errors import TemplateError

FORMAT_KEY = "instruction_format"
STOPS_KEY = "stop_strings"
SKIP_SPECIAL_KEY = "skip_special_tokens"
MODEL_KEYS = (FORMAT_KEY, STOPS_KEY, SKIP_SPECIAL_KEY)


@dataclass
class Rule:
    pattern: str
    settings: dict[str, Any]


def loader_option_names() -> list[str]:
    return sorted(f.name for f in fields(LoaderOptions))


def _check_setting(path: Path, pattern: str, key: str, value: Any) -> None:
    where = f"{path}, rule {pattern!r}"
    if key == FORMAT_KEY and not (isinstance(value, str) and value.strip()):
        raise TemplateError(f"{where}: {FORMAT_KEY} must name a file in instruction-templates/ (e.g. Vicuna-v1.1).")
    if key == STOPS_KEY and not (isinstance(value, list) and all(isinstance(s, str) and s for s in value)):
        raise TemplateError(f"{where}: {STOPS_KEY} must be a list of non-empty texts, e.g. ['\\nUSER:'].")
    if key == SKIP_SPECIAL_KEY and not isinstance(value, bool):
        raise TemplateError(f"{where}: {SKIP_SPECIAL_KEY} must be true or false, not {value!r}.")


def _checked_rule(path: Path, pattern: Any, settings: Any) -> Rule:
    if not isinstance(settings, dict):
        raise TemplateError(f"{path}: the settings for pattern {pattern!r} must be a mapping of key: value.")
    try:
        re.compile(str(pattern))
    except re.error as err:
        raise TemplateError(f"{path}: pattern {pattern!r} is not a valid regular expression ({err}).") from None
    options = set(loader_option_names())
    unknown = sorted(str(k) for k in settings if k not in MODEL_KEYS and k not in options)
    if unknown:
        raise TemplateError(
            f"{path}, rule {pattern!r}: unknown setting(s) {', '.join(unknown)}. Allowed: "
            f"{', '.join(MODEL_KEYS)}, or a loader option ({', '.join(sorted(options))}). Fix that file.")
    for key, value in settings.items():
        _check_setting(path, str(pattern), key, value)
    return Rule(str(pattern), dict(settings))


def read_rules(config_path: Path) -> list[Rule]:
    """The rules of ``config_path`` in file order; a missing file has none, a malformed one is an error.

    Parsed again only when the file's size or time changes: models are listed, and their format
    explained, on every API lookup and chat turn.
    """
    path = Path(config_path)
    try:
        stat = path.stat()
    except OSError:
        return []
    if not path.is_file():
        return []
    return list(_parsed_rules(path, stat.st_mtime_ns, stat.st_size))


@lru_cache(maxsize=8)
def _parsed_rules(path: Path, mtime_ns: int, size: int) -> tuple[Rule, ...]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, UnicodeDecodeError, yaml.YAMLError, RecursionError) as err:
        raise TemplateError(f"{path} could not be read as YAML: {err}. Fix that file.") from None
    if not isinstance(data, dict):
        raise TemplateError(f"{path} must map name patterns (regular expressions) to settings.")
    return tuple(_checked_rule(path, pattern, settings) for pattern, settings in data.items())


def matching_rules(config_path: Path, model_name: str) -> list[Rule]:
    """The rules whose pattern matches ``model_name`` (lower-cased), in file order."""
    name = model_name.lower()
    return [rule for rule in read_rules(config_path) if re.match(rule.pattern, name)]


def config_for_model(config_path: Path, model_name: str) -> dict:
    """Merge the settings of every rule that matches ``model_name``; a later rule wins."""
    merged: dict[str, Any] = {}
    for rule in matching_rules(config_path, model_name):
        merged.update(copy.deepcopy(rule.settings))  # parsed rules are shared: callers get their own values
    return merged


def format_rule(config_path: Path, model_name: str) -> str | None:
    """The pattern of the rule that chose ``model_name``'s instruction format (the last match that sets one).

    Only explains a choice already made when the model was listed: a file broken since then gives None.
    """
    try:
        rules = matching_rules(config_path, model_name)
    except TemplateError:
        return None
    chosen = None
    for rule in rules:
        if FORMAT_KEY in rule.settings:
            chosen = rule.pattern
    return chosen
