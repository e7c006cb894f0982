"""Serving the API from the app's own process: flags, and uvicorn in a background thread.

Importing this module is cheap (no FastAPI, no uvicorn): app.py calls
:func:`add_api_arguments` while parsing flags, long before anything is served.
"""
from __future__ import annotations

import argparse
import logging
import socket
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from modules.core.config import ServerOptions
from modules.core.errors import CorralError

if TYPE_CHECKING:
    from modules.core.context import Context

log = logging.getLogger(__name__)

START_TIMEOUT = 30.0


def add_api_arguments(parser: argparse.ArgumentParser) -> None:
    """The API and remote-backend flags (defaults None: the settings file may set them)."""
    group = parser.add_argument_group("API and remote backend")
    group.add_argument("--api", action="store_true", default=None,
                       help="serve the OpenAI-compatible API from this process")
    group.add_argument("--api-port", type=int, help="API port (default 5000); 127.0.0.1 unless --listen")
    group.add_argument("--api-key", help="require 'Authorization: Bearer KEY' on every API request")
    group.add_argument("--admin-key", help="also require this key to load or unload models over the API")
    group.add_argument("--api-max-request-bytes", dest="max_request_bytes", type=int,
                       help="refuse API request bodies larger than this (default 1048576: 1 MiB) with 413")
    group.add_argument("--api-max-prompt-tokens", dest="max_prompt_tokens", type=int,
                       help="refuse API prompts longer than this many tokens (default 0: up to the model's context); "
                            "on a slow CPU a small cap keeps one client from holding the model for minutes")
    group.add_argument("--remote-url", help="an OpenAI-compatible server to use as the model (with --loader remote), "
                                            "e.g. http://127.0.0.1:8000 for vLLM")
    group.add_argument("--remote-key", help="API key of the remote server")


@dataclass
class ApiHandle:
    """A running API server: where it listens, and how to stop it."""

    host: str
    port: int
    server: Any  # uvicorn.Server
    thread: threading.Thread

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::") else self.host
        return f"http://{host}:{self.port}"

    def stop(self, timeout: float = 10.0) -> None:
        """Ask uvicorn to finish and wait for its thread (running streams are cancelled)."""
        self.server.should_exit = True
        self.thread.join(timeout)


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as err:
        sock.close()
        raise CorralError(f"The API cannot listen on {host}:{port} ({err.strerror or err}). "
                          "Another program may use that port: choose another with --api-port.") from None
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def start_api(ctx: Context, options: ServerOptions | None = None) -> ApiHandle:
    """Serve the API on ``options.host``:``options.api_port`` (0: any free port) in a daemon thread."""
    import uvicorn

    from modules.api.app import create_api

    options = options or ctx.config.server
    if options.host not in ("127.0.0.1", "localhost", "::1") and not options.api_key:
        log.warning("The API listens on %s without --api-key: anyone on the network can use it.", options.host)
    sock = _bind(options.host, options.api_port)
    port = sock.getsockname()[1]
    config = uvicorn.Config(create_api(ctx, options), log_level="warning", access_log=False,
                            timeout_graceful_shutdown=2)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="corral-api", daemon=True)
    thread.start()
    deadline = time.monotonic() + START_TIMEOUT
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            raise CorralError(f"The API server did not start on {options.host}:{port}. See the log above.")
        time.sleep(0.02)
    handle = ApiHandle(host=options.host, port=port, server=server, thread=thread)
    log.info("API at %s/v1 (OpenAI-compatible).", handle.url)
    return handle
