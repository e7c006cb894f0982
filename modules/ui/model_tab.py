"""The Model tab: pick a model in models/, its loader options, load / unload / reload with progress.

Choosing a model in the dropdown loads it. Loading runs as its own event with its own
concurrency slot, so chats, the notebook and the other tabs keep answering meanwhile.
Before a load, the tab shows what the model will need at 16, 8 and 4 bits.
"""
from __future__ import annotations

import logging
import re
from typing import Any

import gradio as gr

from modules.core.config import LoaderOptions
from modules.core.context import Context
from modules.core.errors import CorralError
from modules.core.generation import format_for_loaded_model
from modules.core.loaders import LOADERS
from modules.core.loaders.memory import process_rss
from modules.core.registry import ModelInfo, estimate_memory
from modules.ui.admin_guard import admin_refusal
from modules.ui.progress import run_reporting

log = logging.getLogger(__name__)

OPTION_KEYS = ("loader", "dtype", "load_in_4bit", "quant_type", "compute_dtype", "use_double_quant",
               "load_in_8bit", "cpu", "gpu_memory", "cpu_memory", "trust_remote_code",
               "n_ctx", "n_gpu_layers", "n_threads")
DTYPE_CHOICES = ["auto", "bfloat16", "float16", "float32"]
LOAD_CONCURRENCY = "model-load"  # one load at a time, outside the default queue slots


# --- text for the tab (plain functions, tested directly) ------------------------------------------


def gigabytes(n: int) -> str:
    """Bytes for people: 13.5 GB, 270 MB, 0.4 MB."""
    if n >= 1e8:
        return f"{n / 1e9:.1f} GB"
    return f"{n / 1e6:.0f} MB" if n >= 1e7 else f"{n / 1e6:.1f} MB"


def status_text(ctx: Context) -> str:
    """What is loaded, how, and the memory it takes."""
    current = ctx.models.current
    backend = ctx.engine.backend
    if current is None or backend is None:
        return "No model is loaded. Choose one above."
    info = backend.info
    how = " · ".join(x for x in (current.loader, info.dtype, info.quantization, info.device) if x)
    return (f"**{current.info.name}** is loaded ({how}) in {current.seconds:.1f} s · "
            f"context {info.context_length} tokens · model memory {gigabytes(info.memory_bytes)} "
            f"(the whole app: {gigabytes(process_rss())})\n\n{format_text(ctx)}")


def format_text(ctx: Context) -> str:
    """The prompt format the loaded model gets and why (own template, name rule, your choice, or nothing matched)."""
    try:
        fmt = format_for_loaded_model(ctx, ctx.config.instruction_format)
    except CorralError as err:
        return f"⚠️ Prompt format: {err}"
    return (f"Prompt format: **{fmt.name}** — {fmt.reason}. Change it per chat in the Parameters tab, "
            "or per model in models/config.yaml.")


def parameter_count(n: int) -> str:
    return f"{n / 1e9:.2f} B" if n >= 1e9 else f"{n / 1e6:.1f} M"


def estimate_text(info: ModelInfo | None, context_tokens: int = 2048) -> str:
    """Memory needed at 16, 8 and 4 bits (weights, then with a context cache), before loading."""
    if info is None:
        return ""
    if info.problem:
        return f"⚠️ {info.problem}"
    size = f"{gigabytes(info.size_bytes)} on disk"
    if not info.parameters:
        return f"{info.name}: {size}; its parameter count is unknown, so no memory estimate."
    head = f"**{info.name}**: {parameter_count(info.parameters)} parameters, {size}"
    if info.kind == "gguf":
        return f"{head}, quantized as {info.quantization or 'GGUF'}: it needs about its file size plus the context cache."
    tokens = min(context_tokens, info.context_length or context_tokens)
    rows = []
    for bits in (16, 8, 4):
        est = estimate_memory(info, bits, tokens)
        rows.append(f"| {bits}-bit | {gigabytes(est.weights)} | {gigabytes(est.total)} |")
    return "\n".join([head, "", f"| | weights | with a {tokens}-token context |", "|---|---|---|", *rows])


def options_from_values(values: dict[str, Any]) -> dict[str, Any]:
    """Control values -> LoaderOptions overrides (memory caps typed as text)."""
    out = dict(values)
    gpu = out.get("gpu_memory")
    if isinstance(gpu, str):
        out["gpu_memory"] = [v for v in re.split(r"[\s,]+", gpu.strip()) if v]
    if not out.get("cpu_memory"):
        out["cpu_memory"] = None
    for key in ("n_ctx", "n_gpu_layers", "n_threads"):
        if out.get(key) is not None:
            out[key] = int(out[key])
    return out


def values_from_options(options: LoaderOptions) -> list[Any]:
    """The controls' values (in OPTION_KEYS order) for ``options``."""
    values = []
    for key in OPTION_KEYS:
        value = getattr(options, key)
        if key == "gpu_memory":
            value = " ".join(value)
        elif key == "cpu_memory":
            value = value or ""
        values.append(value)
    return values


def load_model(ctx: Context, name: str | None, values: dict[str, Any], report) -> str:
    """Load ``name`` with these options; the returned status text says what happened."""
    if not name:
        return "Choose a model first."
    try:
        ctx.models.load(name, options_from_values(values), report)
    except CorralError as err:
        return f"⚠️ {err}\n\n{status_text(ctx)}"
    except Exception as err:  # noqa: BLE001 - a loader can fail in ways it did not foresee
        log.exception("Loading %s failed", name)
        return (f"⚠️ Loading {name} failed: {type(err).__name__}: {err}. Try other loader options "
                f"(dtype, 4-bit) or another model; the log has the details.\n\n{status_text(ctx)}")
    return status_text(ctx)


# --- layout ---------------------------------------------------------------------------------------


def _option_controls(defaults: LoaderOptions) -> dict[str, Any]:
    loaders = ["auto", *sorted(LOADERS)]
    c: dict[str, Any] = {}
    with gr.Row():
        c["loader"] = gr.Dropdown(loaders, value=defaults.loader, label="Loader", elem_id="model-loader")
        c["dtype"] = gr.Dropdown(DTYPE_CHOICES, value=defaults.dtype, label="dtype (16-bit loading)")
        c["cpu"] = gr.Checkbox(value=defaults.cpu, label="CPU only")
        c["trust_remote_code"] = gr.Checkbox(value=defaults.trust_remote_code, label="Trust remote code")
    with gr.Row():
        c["load_in_8bit"] = gr.Checkbox(value=defaults.load_in_8bit, label="8-bit (bitsandbytes)")
        c["load_in_4bit"] = gr.Checkbox(value=defaults.load_in_4bit, label="4-bit (bitsandbytes)")
        c["quant_type"] = gr.Radio(["nf4", "fp4"], value=defaults.quant_type, label="4-bit type")
        c["compute_dtype"] = gr.Dropdown(DTYPE_CHOICES, value=defaults.compute_dtype, label="4-bit compute dtype")
        c["use_double_quant"] = gr.Checkbox(value=defaults.use_double_quant, label="Double quantization")
    with gr.Row():
        c["gpu_memory"] = gr.Textbox(" ".join(defaults.gpu_memory), label="GPU memory caps",
                                     placeholder="per GPU, e.g. 10GiB 8GiB")
        c["cpu_memory"] = gr.Textbox(defaults.cpu_memory or "", label="CPU memory cap", placeholder="e.g. 32GiB")
    with gr.Accordion("llama.cpp (GGUF files)", open=False):
        with gr.Row():
            c["n_ctx"] = gr.Number(defaults.n_ctx, precision=0, label="Context (0: the model's)")
            c["n_gpu_layers"] = gr.Number(defaults.n_gpu_layers, precision=0, label="GPU layers (-1: all)")
            c["n_threads"] = gr.Number(defaults.n_threads, precision=0, label="Threads (0: default)")
    return c


def build(ui) -> None:
    ctx: Context = ui.ctx
    with gr.Row():
        dropdown = gr.Dropdown(ctx.registry.names(), value=ctx.models.loaded_name, label="Model",
                               elem_id="model-dropdown", scale=6,
                               allow_custom_value=True)  # models/ changes under us; the registry answers
        refresh = gr.Button("Refresh", elem_id="model-refresh", scale=1)
    estimate = gr.Markdown(elem_id="model-estimate")
    with gr.Accordion("Loader options", open=True):
        options = _option_controls(ctx.models.defaults)
    with gr.Row():
        load = gr.Button("Load", variant="primary", elem_id="model-load")
        unload = gr.Button("Unload", elem_id="model-unload")
        reload = gr.Button("Reload", elem_id="model-reload")
    status = gr.Markdown(status_text(ctx), elem_id="model-status")
    ui.components.update(model_dropdown=dropdown, model_refresh=refresh, model_status=status,
                         model_estimate=estimate, loader_options=options, model_load=load,
                         model_unload=unload, model_reload=reload)


def wire(ui) -> None:
    ctx: Context = ui.ctx
    c = ui.components
    dropdown, status, estimate = c["model_dropdown"], c["model_status"], c["model_estimate"]
    option_inputs = [c["loader_options"][k] for k in OPTION_KEYS]

    # gr.Progress (like gr.Request) is only filled in for positional parameters, so it comes before *values.
    def load_selected(name: str | None, request: gr.Request, progress=gr.Progress(), *values: Any):
        refusal = admin_refusal(ctx.config.server, request, "load models")
        if refusal:
            yield refusal
            return
        yield f"⏳ Loading {name}…" if name else "Choose a model first."
        if name:
            work = lambda report: load_model(ctx, name, dict(zip(OPTION_KEYS, values)), report)  # noqa: E731
            yield run_reporting(work, progress)

    def reload_current(name: str | None, request: gr.Request, progress=gr.Progress(), *values: Any):
        yield from load_selected(ctx.models.loaded_name or name, request, progress, *values)

    def unload_model(request: gr.Request) -> str:
        refusal = admin_refusal(ctx.config.server, request, "unload models")
        if refusal:
            return refusal
        ctx.models.unload()
        return status_text(ctx)

    def options_for(name: str | None) -> list[Any]:
        """Defaults with models/config.yaml's settings for this model, shown before it loads."""
        try:
            return values_from_options(ctx.models.options_for(ctx.registry.get(name)))
        except CorralError:
            return [gr.update()] * len(OPTION_KEYS)

    def show_estimate(name: str | None) -> str:
        try:
            return estimate_text(ctx.registry.get(name)) if name else ""
        except CorralError as err:
            return f"⚠️ {err}"

    def refresh_list(name: str | None):
        names = ctx.registry.names()
        return gr.update(choices=names, value=name if name in names else ctx.models.loaded_name)

    slot = dict(concurrency_id=LOAD_CONCURRENCY, concurrency_limit=1)
    dropdown.input(options_for, dropdown, option_inputs, queue=False, api_visibility="private").then(
        load_selected, [dropdown, *option_inputs], status, api_visibility="private", **slot)
    dropdown.change(show_estimate, dropdown, estimate, api_name="model_estimate")
    c["model_refresh"].click(refresh_list, dropdown, dropdown, api_name="model_refresh")
    c["model_load"].click(load_selected, [dropdown, *option_inputs], status, api_name="model_load", **slot)
    c["model_reload"].click(reload_current, [dropdown, *option_inputs], status, api_name="model_reload", **slot)
    c["model_unload"].click(unload_model, None, status, api_name="model_unload", **slot)
    app = c.get("app")
    if app is not None:  # each page load shows what is loaded now, not at start-up
        app.load(lambda: (status_text(ctx), gr.update(value=ctx.models.loaded_name)), None,
                 [status, dropdown], api_visibility="private")

