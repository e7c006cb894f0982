"""Finding and importing extensions: ``extensions/NAME/script.py``, its params, its setup().

An extension is imported as the module ``extensions.NAME.script`` inside a
package ``extensions.NAME`` whose path is the extension's folder, so both
``from .helper import x`` and ``from extensions.NAME.helper import x`` work, as
authors of that ecosystem write them. Importing is the one process-wide thing
here (``sys.modules``); everything else lives on the :class:`LoadedExtension`.
"""
from __future__ import annotations

import importlib.util
import sys
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from modules.core.errors import BadNameError
from modules.core.extensions.report import ExtensionError, describe
from modules.core.paths import check_name

PACKAGE = "extensions"

# Every hook of the convention (see extensions/README.md for signatures and order).
HOOKS = ("setup", "ui", "custom_css", "custom_js", "history_modifier", "state_modifier",
         "chat_input_modifier", "input_modifier", "bot_prefix_modifier", "tokenizer_modifier",
         "custom_tokenized_length", "logits_processor_modifier", "output_modifier",
         "custom_generate_chat_prompt", "custom_generate_reply")


@dataclass
class LoadedExtension:
    """An imported extension: its module, and what the UI needs to show it."""

    name: str
    module: types.ModuleType
    folder: Path

    @property
    def params(self) -> dict[str, Any]:
        params = getattr(self.module, "params", None)
        return params if isinstance(params, dict) else {}

    @property
    def display_name(self) -> str:
        return str(self.params.get("display_name") or self.name)

    @property
    def is_tab(self) -> bool:
        return bool(self.params.get("is_tab", False))

    def hook(self, name: str) -> Callable[..., Any] | None:
        fn = getattr(self.module, name, None)
        return fn if callable(fn) else None


def available_extensions(folder: Path | None) -> list[str]:
    """Every sub-folder with a ``script.py``, sorted by name."""
    if folder is None or not folder.is_dir():
        return []
    return sorted(p.name for p in folder.iterdir() if (p / "script.py").is_file() and p.name.isidentifier())


def load_extension(folder: Path, name: str, settings: dict[str, Any]) -> LoadedExtension:
    """Import ``folder/name/script.py``, apply ``NAME-PARAM`` settings, run ``setup()``.

    Raises :class:`ExtensionError` with a message that says what to do.
    """
    try:
        check_name(name, "extension")  # a folder name in extensions/: never '..', a path, or too long
    except BadNameError as err:
        raise ExtensionError(str(err)) from None
    home = folder / name
    script = home / "script.py"
    if not script.is_file():
        known = ", ".join(available_extensions(folder)) or "none"
        raise ExtensionError(f"There is no extension {name!r} (no {script}). Available: {known}.")
    module = _import_script(name, home, script)
    override_params(module, name, settings)
    extension = LoadedExtension(name, module, home)
    setup = extension.hook("setup")
    if setup is not None:
        try:
            setup()
        except Exception as err:  # noqa: BLE001 - an extension's bug must not stop the app
            raise ExtensionError(f"Extension {name!r} failed in setup(): {describe(err)}") from err
    return extension


def override_params(module: types.ModuleType, name: str, settings: dict[str, Any]) -> dict[str, Any]:
    """Settings keys ``NAME-PARAM`` replace ``params[PARAM]``; returns what was applied."""
    params = getattr(module, "params", None)
    if not isinstance(params, dict):
        return {}
    prefix = f"{name}-"
    applied = {key[len(prefix):]: value for key, value in settings.items()
               if isinstance(key, str) and key.startswith(prefix) and len(key) > len(prefix)}
    params.update(applied)
    return applied


def _import_script(name: str, home: Path, script: Path) -> types.ModuleType:
    package = _ensure_package(name, home)
    module_name = f"{package}.script"
    spec = importlib.util.spec_from_file_location(module_name, script)
    if spec is None or spec.loader is None:
        raise ExtensionError(f"Extension {name!r}: {script} could not be read as Python.")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except ModuleNotFoundError as err:
        _forget(package)
        if (err.name or "").startswith(PACKAGE + "."):  # its own file is missing, not a package
            raise ExtensionError(f"Extension {name!r} failed while importing: {describe(err)}") from err
        raise ExtensionError(missing_package_message(name, home, err)) from err
    except Exception as err:  # noqa: BLE001 - SyntaxError, a raising import, anything
        _forget(package)
        raise ExtensionError(f"Extension {name!r} failed while importing: {describe(err)} "
                             f"Fix {script} or disable the extension.") from err
    return module


def missing_package_message(name: str, home: Path, err: ModuleNotFoundError) -> str:
    """The message for an extension whose import needs a package that is not installed."""
    missing = err.name or str(err)
    requirements = home / "requirements.txt"
    if requirements.is_file():
        command = f"pip install -r {_shown_path(requirements)}"
    else:
        command = f"pip install {missing.split('.')[0]}"
    return (f"Extension {name!r} needs the Python package {missing!r}, which is not installed. "
            f"Install it with: {command} (in Corral's environment), then restart Corral.")


def _shown_path(path: Path) -> str:
    """``extensions/NAME/requirements.txt`` when under the working folder, else the full path."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def _ensure_package(name: str, home: Path) -> str:
    """Register ``extensions`` and ``extensions.NAME`` as packages rooted at the extension folder."""
    root = sys.modules.get(PACKAGE)
    if root is None or not hasattr(root, "__path__"):
        root = types.ModuleType(PACKAGE)
        root.__path__ = []  # type: ignore[attr-defined]
        sys.modules[PACKAGE] = root
    parent = str(home.parent)
    if parent not in list(root.__path__):
        root.__path__ = [*root.__path__, parent]  # type: ignore[attr-defined]
    package_name = f"{PACKAGE}.{name}"
    package = types.ModuleType(package_name)
    package.__path__ = [str(home)]  # type: ignore[attr-defined]
    package.__package__ = package_name
    init = home / "__init__.py"
    package.__file__ = str(init) if init.is_file() else None
    sys.modules[package_name] = package
    setattr(root, name, package)
    return package_name


def _forget(package: str) -> None:
    """Drop a half-imported extension's modules so a later retry starts clean."""
    for key in [k for k in sys.modules if k == package or k.startswith(package + ".")]:
        del sys.modules[key]
