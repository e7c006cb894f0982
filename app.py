"""Corral: start the web UI (and the API when asked) with one model loaded."""
from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from modules.api.server import add_api_arguments
from modules.core.config import AppConfig, LoaderOptions, ServerOptions, read_settings_file
from modules.core.errors import CorralError

log = logging.getLogger("corral")


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="app.py", description="Corral: chat with LLaMA-family models in your browser.")
    p.add_argument("--model", help="model name in models/ (default: SmolLM2-135M-Instruct)")
    p.add_argument("--no-model", action="store_true", help="start without loading a model")
    p.add_argument("--models-dir", type=Path, help="folder of models (default: models/)")
    p.add_argument("--loader", choices=["auto", "transformers", "llama.cpp", "remote"], default=None)
    p.add_argument("--dtype", choices=["auto", "bfloat16", "float16", "float32"], default=None)
    p.add_argument("--load-in-4bit", action="store_true", default=None, help="4-bit through bitsandbytes")
    p.add_argument("--load-in-8bit", action="store_true", default=None, help="8-bit through bitsandbytes")
    p.add_argument("--compute-dtype", choices=["auto", "bfloat16", "float16", "float32"], default=None)
    p.add_argument("--quant-type", choices=["nf4", "fp4"], default=None)
    p.add_argument("--use-double-quant", action="store_true", default=None)
    p.add_argument("--cpu", action="store_true", default=None, help="run on the CPU even if a GPU is present")
    p.add_argument("--gpu-memory", nargs="+", help="memory cap per GPU, e.g. 10GiB 8GiB")
    p.add_argument("--cpu-memory", help="CPU memory cap for offloaded layers, e.g. 32GiB")
    p.add_argument("--trust-remote-code", action="store_true", default=None,
                   help="run code shipped with a model (off unless you trust its source)")
    p.add_argument("--fast-decode", choices=["auto", "on", "off"], default=None,
                   help="static KV cache + torch.compile decoding (auto: on CUDA only; off: the normal loop)")
    p.add_argument("--n-ctx", type=int, help="llama.cpp: context length (default: the model's, up to 8192)")
    p.add_argument("--threads", dest="n_threads", type=int, help="llama.cpp: CPU threads (default: physical cores)")
    p.add_argument("--n-gpu-layers", type=int, help="llama.cpp: layers on the GPU (default -1: all, where the build has GPU support)")
    p.add_argument("--n-batch", type=int, help="llama.cpp: prompt batch size (default 512)")
    p.add_argument("--no-mmap", dest="use_mmap", action="store_false", default=None, help="llama.cpp: read the file into memory instead of mapping it")
    p.add_argument("--mlock", dest="use_mlock", action="store_true", default=None, help="llama.cpp: lock the model in RAM (no swapping)")
    p.add_argument("--preset", help="sampler preset from presets/")
    p.add_argument("--instruction-format", help="instruction format from instruction-templates/")
    p.add_argument("--listen", action="store_true", default=None, help="listen on the network (default 127.0.0.1 only)")
    p.add_argument("--listen-host", help="address to listen on")
    p.add_argument("--listen-port", type=int, help="web UI port (default 7860)")
    p.add_argument("--extensions", nargs="+", metavar="NAME",
                   help="extensions from extensions/ to enable, in hook order (added to the settings file's list)")
    p.add_argument("--settings", type=Path, help="settings file (YAML); default user_data/settings.yaml if present")
    p.add_argument("--user-data-dir", type=Path, help="folder for the chat database and settings (default user_data/)")
    p.add_argument("--gradio-auth", action="append", metavar="USER:PASS",
                   help="sign-in for the web UI; repeat for more users (each sees only their own chats)")
    p.add_argument("--gradio-auth-path", metavar="FILE", help="file of user:password lines for the web UI sign-in")
    add_api_arguments(p)
    return p.parse_args(argv)


LOADER_FLAGS = ("loader", "dtype", "load_in_4bit", "load_in_8bit", "compute_dtype", "quant_type",
                "use_double_quant", "cpu", "gpu_memory", "cpu_memory", "trust_remote_code",
                "n_ctx", "n_threads", "n_gpu_layers", "n_batch", "use_mmap", "use_mlock")
LOADER_FLAGS += ("remote_url", "remote_key")
LOADER_FLAGS += ("fast_decode",)
SERVER_FLAGS = ("listen", "listen_host", "listen_port", "api", "api_port", "api_key", "admin_key",
                "gradio_auth", "gradio_auth_path", "max_request_bytes", "max_prompt_tokens")


def build_config(args: argparse.Namespace, root: Path) -> AppConfig:
    """Settings file first, flags over it."""
    config = AppConfig()
    if args.user_data_dir:
        config.user_data_dir = args.user_data_dir
    settings_path = args.settings or (config.user_data_dir / "settings.yaml")
    settings = read_settings_file(settings_path) if (args.settings or settings_path.is_file()) else {}
    config.settings, config.settings_path = settings, settings_path
    loader_values = {k: settings[k] for k in LOADER_FLAGS if k in settings}
    loader_values.update({k: getattr(args, k) for k in LOADER_FLAGS if getattr(args, k) is not None})
    config.loader = LoaderOptions().merged(loader_values)
    server_values = {k: settings[k] for k in SERVER_FLAGS if k in settings}
    server_values.update({k: getattr(args, k) for k in SERVER_FLAGS if getattr(args, k) is not None})
    config.server = ServerOptions(**server_values)
    config.model = args.model or settings.get("model")
    config.no_model = args.no_model
    config.preset = args.preset or settings.get("preset", config.preset)
    config.instruction_format = args.instruction_format or settings.get("instruction_format")
    config.extensions = extension_names(args.extensions, settings.get("extensions"))
    if args.models_dir:
        config.models_dir = args.models_dir
    return config


def extension_names(flags: list[str] | None, from_file: object) -> list[str]:
    """--extensions first (in their order), then the settings file's ``extensions:`` list."""
    if from_file is not None and not isinstance(from_file, list):
        raise CorralError("The settings file's 'extensions' must be a list of names, e.g. extensions: [example].")
    return list(dict.fromkeys([*(flags or []), *(str(n) for n in from_file or [])]))


def progress_printer(fraction: float, message: str) -> None:
    print(f"\r[{'#' * int(fraction * 30):<30}] {fraction:4.0%} {message:<40}", end="", flush=True)
    if fraction >= 1.0:
        print()


def remote_startup_model(config: AppConfig) -> str | None:
    """With --loader remote: --model, else the first model the server lists (None if it cannot be reached)."""
    from modules.core.loaders.remote_loader import first_remote_model

    if config.model or config.no_model:
        return None if config.no_model else config.model
    try:
        return first_remote_model(config.loader)
    except CorralError as err:
        log.error("%s", err)
        return None


def passive_waiting_threads() -> None:
    """OMP_WAIT_POLICY=PASSIVE unless the environment says otherwise; before torch is imported.

    torch's (and llama.cpp's) OpenMP threads otherwise spin while they wait; with the UI, the API
    and a browser on the same few cores they steal each other's time. bench/engine.py on 2 cores
    at load average ~10: 2.3-7.0 tokens/s passive against 0.8-0.9 spinning. OMP_WAIT_POLICY=ACTIVE
    keeps the spinning (a machine that does nothing else may gain a little single-stream speed).
    """
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def main(argv: list[str]) -> int:
    passive_waiting_threads()  # first: nothing has imported torch yet
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    from modules.core.context import build_context, startup_model_name
    from modules.ui.auth import load_credentials

    try:
        config = build_config(parse_args(argv), Path(__file__).resolve().parent)
        credentials = load_credentials(config.server.gradio_auth, config.server.gradio_auth_path)
    except CorralError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    ctx = build_context(config)
    name = remote_startup_model(config) if config.loader.loader == "remote" else startup_model_name(ctx)
    if name:
        try:
            ctx.models.load(name, progress=progress_printer)
        except CorralError as err:
            print()
            log.error("%s The app starts without a model; pick one on the Model tab.", err)
    else:
        log.warning("No model in %s. Run the start script to fetch the default model.", config.models_dir)
    if config.extensions:
        enabled = ctx.extensions.enable(ctx, config.extensions)
        log.info("Extensions enabled: %s", ", ".join(enabled) or "none")
    from modules.ui.app_ui import CSS, JS, build_ui
    from modules.ui.extensions_ui import page_css, page_js

    demo = build_ui(ctx)
    server = config.server
    from modules.ui.admin_guard import listen_warning

    warning = listen_warning(server)
    if warning:
        log.warning("%s", warning)
    if server.api:
        from modules.api.server import start_api

        try:
            start_api(ctx)
        except CorralError as err:
            log.error("%s", err)
            return 2
    log.info("Open http://%s:%d in your browser.", "127.0.0.1" if server.host == "0.0.0.0" else server.host,
             server.listen_port)
    demo.queue(default_concurrency_limit=8).launch(server_name=server.host, server_port=server.listen_port,
                                                   css=CSS + page_css(ctx), js=page_js(ctx, JS), auth=credentials,
                                                   inbrowser=False, show_error=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
