"""Instruction formats: plain YAML files of sandboxed Jinja, their resolution order, stop strings.

A format is a Jinja template rendered over ``messages`` (``role``: system | user | assistant,
``content``), ``add_generation_prompt``, ``bos_token`` and ``eos_token`` -- the same variables a
Hugging Face chat template sees, so a model's own ``chat_template`` and a user's file are one kind
of thing. Templates may come from downloaded model files, so they only ever run in Jinja's
immutable sandbox.
"""
from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Any, NoReturn

import jinja2
import yaml
from jinja2.exceptions import SecurityError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from modules.core.errors import TemplateError
from modules.core.model_rules import config_for_model  # noqa: F401 -- long-standing import path for callers
from modules.core.paths import file_in

FALLBACK_FORMAT = "Plain-transcript"  # no own template, no rule: a plain chat transcript, never a fine-tune's format
MODEL_SOURCE = "model"
_KIND = "instruction format"
_KEYS = ("instruction_template", "stop_strings")
_CHATML_MARKERS = ("<|im_start|>", "<|im_end|>")


@dataclass
class InstructionFormat:
    name: str
    template: str  # Jinja source
    stop_strings: list[str]
    source: str  # file path, or "model" for a model's own chat template
    reason: str = ""  # why this format was chosen (set by resolve_format), shown to the user


# --- the sandbox -------------------------------------------------------------------------------


class _StrictSandbox(ImmutableSandboxedEnvironment):
    """The immutable sandbox, but an unsafe attribute is refused at once.

    Jinja's default answers ``''.__class__`` with a silent empty Undefined; refusing loudly
    makes a probing template fail with a message instead of rendering something odd.
    """

    def unsafe_undefined(self, obj: Any, attribute: str) -> NoReturn:
        raise SecurityError(f"access to attribute {attribute!r} of {type(obj).__name__!r} object is unsafe")


def _raise_exception(message: str) -> NoReturn:
    """What HF chat templates call to refuse a conversation (e.g. roles that do not alternate)."""
    raise jinja2.exceptions.TemplateError(message)


def _tojson(value: Any, indent: int | None = None, ensure_ascii: bool = False, sort_keys: bool = False) -> str:
    # Jinja's own tojson HTML-escapes its output, which corrupts prompts; chat templates expect plain JSON.
    return json.dumps(value, indent=indent, ensure_ascii=ensure_ascii, sort_keys=sort_keys)


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(fmt)


@lru_cache(maxsize=1)
def _environment() -> jinja2.Environment:
    """One sandbox, configured the way HF chat templates expect (trim/lstrip blocks, loop controls)."""
    env = _StrictSandbox(trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"])
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    return env


@lru_cache(maxsize=128)
def _compile(source: str) -> jinja2.Template:
    """Compiled templates, cached by their source text (files are re-read, compiling is not redone)."""
    return _environment().from_string(source)


def _compiled(fmt: InstructionFormat) -> jinja2.Template:
    try:
        return _compile(fmt.template)
    except jinja2.TemplateSyntaxError as err:
        raise TemplateError(
            f"Instruction format '{fmt.name}' ({fmt.source}) has a template syntax error on line "
            f"{err.lineno}: {err.message}. Fix the template in that file or choose another format."
        ) from None


# --- rendering ---------------------------------------------------------------------------------


def render(
    fmt: InstructionFormat,
    messages: list[dict],
    add_generation_prompt: bool = True,
    bos_token: str = "",
    eos_token: str = "",
) -> str:
    """The prompt text for ``messages`` in format ``fmt``."""
    template = _compiled(fmt)
    try:
        return template.render(
            messages=messages,
            add_generation_prompt=add_generation_prompt,
            bos_token=bos_token,
            eos_token=eos_token,
        )
    except Exception as err:  # noqa: BLE001 -- a template can fail in any way; the user must see which one
        raise TemplateError(
            f"Instruction format '{fmt.name}' ({fmt.source}) failed to render: {err}. "
            "Fix the template or choose another instruction format."
        ) from None


# --- formats from files and from models ---------------------------------------------------------


def _parse_format_file(name: str, path: Path) -> InstructionFormat:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as err:
        raise TemplateError(f"Instruction format '{name}' ({path}) could not be read: {err}.") from None
    except (yaml.YAMLError, RecursionError) as err:  # RecursionError: nesting deeper than the parser goes
        raise TemplateError(f"Instruction format '{name}' ({path}) is not valid YAML: {err}. Fix that file.") from None
    if not isinstance(data, dict):
        raise TemplateError(
            f"Instruction format '{name}' ({path}) must be a YAML mapping with the keys {', '.join(_KEYS)}."
        )
    missing = [k for k in _KEYS if k not in data]
    unknown = sorted(str(k) for k in data if k not in _KEYS)
    if missing or unknown:
        parts = ([f"missing key(s): {', '.join(missing)}"] if missing else []) + (
            [f"unknown key(s): {', '.join(unknown)}"] if unknown else []
        )
        raise TemplateError(
            f"Instruction format '{name}' ({path}) has {'; '.join(parts)}. "
            f"Allowed keys are exactly: {', '.join(_KEYS)} (use 'stop_strings: []' for none)."
        )
    template, stops = data["instruction_template"], data["stop_strings"]
    if not isinstance(template, str):
        raise TemplateError(f"Instruction format '{name}' ({path}): instruction_template must be text.")
    fmt = InstructionFormat(name=name, template=template, stop_strings=_check_stops(name, str(path), stops), source=str(path))
    _compiled(fmt)
    return fmt


def _check_stops(name: str, source: str, stops: Any) -> list[str]:
    if stops is None:
        return []
    if not isinstance(stops, list) or not all(isinstance(s, str) and s for s in stops):
        raise TemplateError(
            f"Instruction format '{name}' ({source}): stop_strings must be a list of non-empty texts, e.g. ['</s>']."
        )
    return list(stops)


class _BlockDumper(yaml.SafeDumper):
    """Writes multi-line text as a ``|`` block so saved templates stay readable and editable."""


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_BlockDumper.add_representer(str, _represent_str)


class FormatLibrary:
    """The instruction formats in one folder, one ``NAME.yaml`` file each, read on every request."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)

    def names(self) -> list[str]:
        if not self.folder.is_dir():
            return []
        return sorted(p.stem for p in self.folder.glob("*.yaml") if p.is_file() and not p.name.startswith("."))

    def _path(self, name: str) -> Path:
        return file_in(self.folder, name, ".yaml", _KIND)

    def _existing(self, name: str) -> Path:
        path = self._path(name)
        if not path.is_file():
            known = ", ".join(self.names()) or "(none)"
            raise TemplateError(
                f"Unknown instruction format '{name}': there is no {path}. Known formats: {known}. "
                "Choose one of those or add that file."
            )
        return path

    def get(self, name: str) -> InstructionFormat:
        path = self._existing(name)
        return _parse_format_file(path.stem, path)

    def save(self, name: str, template: str, stop_strings: list[str]) -> Path:
        """Validate (compile) the template and stop strings, then write the file atomically."""
        path = self._path(name)
        if not isinstance(template, str):
            raise TemplateError(f"Instruction format '{path.stem}' ({path}): the template must be text.")
        fmt = InstructionFormat(path.stem, template, _check_stops(path.stem, str(path), stop_strings), str(path))
        _compiled(fmt)
        text = yaml.dump(
            {"instruction_template": template, "stop_strings": fmt.stop_strings},
            Dumper=_BlockDumper, sort_keys=False, allow_unicode=True, width=10_000,
        )
        self.folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.folder, prefix=".", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                out.write(text)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return path

    def delete(self, name: str) -> None:
        self._existing(name).unlink()


def format_from_model(chat_template: str, eos_token: str, name: str = "model's own") -> InstructionFormat:
    """A model's own chat template as a format; it stops at the EOS text and, for ChatML, at ``<|im_end|>``."""
    stops = [eos_token] if eos_token else []
    if any(marker in chat_template for marker in _CHATML_MARKERS) and "<|im_end|>" not in stops:
        stops.append("<|im_end|>")
    fmt = InstructionFormat(name=name, template=chat_template, stop_strings=stops, source=MODEL_SOURCE)
    _compiled(fmt)
    return fmt


def resolve_format(
    library: FormatLibrary,
    user_choice: str | None,
    model_chat_template: str | None,
    config_format: str | None,
    eos_token: str = "",
    *,
    rule: str | None = None,
    model_name: str = "",
    extra_stops: list[str] | None = None,
) -> InstructionFormat:
    """The format to use and, in its ``reason``, why.

    Order: the user's choice, the model's own chat template, the instruction_format that
    models/config.yaml gives this model (``rule``: the pattern that matched ``model_name``), then a
    plain transcript. ``extra_stops`` (the model's own stop_strings from models/config.yaml) are
    added to whichever format is chosen.
    """
    if user_choice:
        fmt, reason = library.get(user_choice), f"chosen by you ({user_choice})"
    elif model_chat_template and model_chat_template.strip():
        fmt, reason = format_from_model(model_chat_template, eos_token), "the model's own chat template"
    elif config_format:
        fmt = library.get(config_format)
        reason = (f"models/config.yaml rule '{rule}' matches '{model_name.lower()}'" if rule
                  else "this model's settings")
    else:
        fmt = library.get(FALLBACK_FORMAT)
        reason = ("nothing matched: plain transcript (the model has no chat template of its own and no "
                  "models/config.yaml rule matches its name; choose a format or add a rule)")
    fmt.reason = reason
    fmt.stop_strings = [*fmt.stop_strings, *(s for s in extra_stops or [] if s not in fmt.stop_strings)]
    return fmt
