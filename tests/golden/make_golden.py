"""Greedy reference outputs of plain transformers on the default model, stored as small JSON files.

    installer_files/env/bin/python tests/golden/make_golden.py          # rewrite default_model_greedy.json
    installer_files/env/bin/python tests/golden/make_golden.py --check  # compare, write nothing (exit 1 on change)

Tests compare the engine's greedy output with these files instead of loading a second copy of
the model and running ``generate`` again in every module. ``tests/test_default_model.py``
recomputes them live, once per run, with the functions below, so a file that no longer matches
plain transformers (a new transformers or torch, a changed default model) fails there with the
command above as the fix.

Each case: the prompt text, its ids from the model's own tokenizer (template-written special
tokens parsed, nothing added), and the first ``max_new_tokens`` greedy ids of
``AutoModelForCausalLM.generate`` in float32 on the CPU, cut before the first EOS id.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = Path(__file__).resolve().parent / "default_model_greedy.json"
MODEL_DIR = ROOT / "models" / "SmolLM2-135M-Instruct"

# name -> (chat messages, or raw text; max_new_tokens)
CASES: dict[str, tuple[list[dict[str, str]] | str, int]] = {
    "capital": ([{"role": "user", "content": "What is the capital of France?"}], 24),
    "capital-with-system": ([{"role": "system", "content": "Answer in one sentence."},
                             {"role": "user", "content": "What is the capital of France?"}], 24),
    "colors-raw": ("The three primary colors are", 12),
    "dragon": ([{"role": "user", "content": "Write a very long story about a dragon."}], 16),
}


def prompt_text(tokenizer: Any, source: list[dict[str, str]] | str) -> str:
    """Raw text as is; messages through the model's own chat template with the assistant's opening."""
    if isinstance(source, str):
        return source
    return tokenizer.apply_chat_template(source, tokenize=False, add_generation_prompt=True)


def eos_ids(tokenizer: Any, model: Any) -> set[int]:
    ids = {tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set()
    configured = model.generation_config.eos_token_id
    ids.update(configured if isinstance(configured, list) else [configured] if configured is not None else [])
    return ids


def plain_greedy(tokenizer: Any, model: Any, prompt: str, max_new_tokens: int) -> tuple[list[int], list[int]]:
    """(prompt ids, greedy ids cut before the first EOS) from plain ``generate``."""
    import torch

    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    with torch.inference_mode():
        out = model.generate(torch.tensor([prompt_ids]), attention_mask=torch.ones(1, len(prompt_ids), dtype=torch.long),
                             do_sample=False, max_new_tokens=max_new_tokens, pad_token_id=tokenizer.eos_token_id)
    new = out[0, len(prompt_ids):].tolist()
    stop = eos_ids(tokenizer, model)
    return prompt_ids, new[: next((i for i, t in enumerate(new) if t in stop), len(new))]


def load_plain(model_dir: Path = MODEL_DIR) -> tuple[Any, Any]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    return tokenizer, model


def compute(tokenizer: Any, model: Any) -> dict[str, Any]:
    import torch
    import transformers

    cases = {}
    for name, (source, max_new) in CASES.items():
        prompt = prompt_text(tokenizer, source)
        prompt_ids, ids = plain_greedy(tokenizer, model, prompt, max_new)
        cases[name] = {"source": source, "prompt": prompt, "prompt_ids": prompt_ids, "max_new_tokens": max_new,
                       "ids": ids, "text": tokenizer.decode(ids, skip_special_tokens=True)}
    return {"model": MODEL_DIR.name, "dtype": "float32", "device": "cpu", "transformers": transformers.__version__,
            "torch": torch.__version__, "cases": cases}


def to_json(data: dict[str, Any]) -> str:
    """Indented JSON with each list of ids on one line, so a diff shows which case changed."""
    text = json.dumps(data, indent=1, ensure_ascii=False)
    return re.sub(r"\[\s+(-?\d+(?:,\s+-?\d+)*)\s+\]", lambda m: "[" + re.sub(r"\s+", " ", m.group(1)) + "]", text) + "\n"


def load_golden(path: Path = GOLDEN) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", type=Path, default=MODEL_DIR)
    parser.add_argument("--check", action="store_true", help="compare with the stored file; write nothing")
    args = parser.parse_args(argv)
    if not (args.model_dir / "config.json").is_file():
        print(f"No model at {args.model_dir}: run installer_files/env/bin/python -m modules.core.default_model",
              file=sys.stderr)
        return 2
    fresh = compute(*load_plain(args.model_dir))
    if args.check:
        stored = load_golden()["cases"]
        changed = [name for name, case in fresh["cases"].items() if stored.get(name) != case]
        print("unchanged" if not changed else f"changed: {', '.join(changed)}")
        return 1 if changed else 0
    GOLDEN.write_text(to_json(fresh), encoding="utf-8")
    print(f"wrote {GOLDEN.relative_to(ROOT)}: {', '.join(fresh['cases'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
