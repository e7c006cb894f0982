"""Loader options checked before anything is unloaded: a refused load must leave the working model alone.

Each loader checks its own options again while loading; these checks are the ones that need no
file and no library, so :class:`~modules.core.models.ModelManager` can run them first.
"""
from __future__ import annotations

from dataclasses import fields
from typing import Any

from modules.core.config import LoaderOptions
from modules.core.errors import ModelLoadError

DTYPES = ("auto", "bfloat16", "float16", "float32")
CHOICES: dict[str, tuple[str, ...]] = {
    "loader": ("auto", "transformers", "llama.cpp", "remote"),
    "dtype": DTYPES,
    "compute_dtype": DTYPES,
    "quant_type": ("nf4", "fp4"),
    "fast_decode": ("auto", "on", "off"),
}
MINIMUM = {"n_ctx": 0, "n_threads": 0, "n_gpu_layers": -1, "n_batch": 1}
MAX_INT = 2**31 - 1


def _type_problem(name: str, annotation: str, value: Any) -> str | None:
    """Why ``value`` does not fit the field's annotation (``bool``, ``int``, ``str | None``, ``list[str]``)."""
    if value is None and "None" in annotation:
        return None
    if annotation == "bool":
        ok, wanted = isinstance(value, bool), "true or false"
    elif annotation == "int":
        ok, wanted = isinstance(value, int) and not isinstance(value, bool), "a whole number"
    elif annotation.startswith("list"):
        ok, wanted = isinstance(value, list) and all(isinstance(v, str) for v in value), "a list of texts"
    else:
        ok, wanted = isinstance(value, str), "a text"
    return None if ok else f"{name} must be {wanted}, not {value!r}"


def option_problems(options: LoaderOptions) -> list[str]:
    """Every option value that cannot work, each as a sentence naming the option."""
    problems = []
    for f in fields(options):
        value = getattr(options, f.name)
        problem = _type_problem(f.name, str(f.type), value)
        if problem:
            problems.append(problem)
        elif f.name in CHOICES and value not in CHOICES[f.name]:
            problems.append(f"{f.name} {value!r} is unknown: choose {', '.join(CHOICES[f.name])}")
        elif f.name in MINIMUM and not MINIMUM[f.name] <= value <= MAX_INT:
            problems.append(f"{f.name} must be a whole number from {MINIMUM[f.name]} to {MAX_INT}, not {value!r}")
    if options.load_in_4bit is True and options.load_in_8bit is True:
        problems.append("choose either 4-bit or 8-bit loading, not both")
    return problems


def check_options(name: str, options: LoaderOptions) -> None:
    """Raise one error listing every unusable option, before the loaded model is touched."""
    problems = option_problems(options)
    if problems:
        raise ModelLoadError(f"Cannot load {name}: {'; '.join(problems)}. The loaded model was kept.")
