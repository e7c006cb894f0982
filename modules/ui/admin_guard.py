"""Who may load, unload and download models from the web UI: the same rule on the UI port as on the API.

Gradio serves every event of the page as an HTTP endpoint (``/gradio_api/call/model_load``...),
so hiding a button protects nothing: the check runs inside the event. The rule:

- a browser on the server machine itself (loopback) may always;
- from the network, with ``--admin-key`` set, nobody may (use the API with the admin key);
- from the network, without sign-in (``--gradio-auth``), nobody may: anyone could reach the port;
- from the network, a signed-in user may.
"""
from __future__ import annotations

import ipaddress
import logging
from typing import Any

from modules.core.config import ServerOptions

log = logging.getLogger(__name__)


def is_loopback(host: str | None) -> bool:
    if not host:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return False


def signed_in_server(server: ServerOptions) -> bool:
    return bool(server.gradio_auth or server.gradio_auth_path)


def admin_refusal(server: ServerOptions, request: Any, action: str) -> str | None:
    """None when ``request`` may ``action`` (load/unload/download); else the sentence to show."""
    client = getattr(getattr(request, "client", None), "host", None)
    if is_loopback(client) and not server.share:
        return None
    if server.admin_key:
        why = ("this server keeps model management behind its --admin-key: use the API with that key "
               "(POST /v1/internal/model/load), or open the UI on the server machine itself")
    elif not signed_in_server(server):
        why = ("the UI is reachable from the network without sign-in; start the server with "
               "--gradio-auth USER:PASSWORD, or open the UI on the server machine itself")
    else:
        return None
    log.warning("Refused to %s for %s: %s.", action, client or "an unknown client", why)
    return f"⛔ Not allowed to {action} from {client or 'this address'}: {why}."


def listen_warning(server: ServerOptions) -> str | None:
    """The loud start-up warning when the UI is open to the network without sign-in (None otherwise)."""
    if (is_loopback(server.host) and not server.share) or signed_in_server(server):
        return None
    where = "a public share link" if server.share else f"{server.host}:{server.listen_port}"
    return ("\n" + "!" * 78 + f"\n  The web UI listens on {where} WITHOUT sign-in: anyone who can reach it can\n"
            "  read and write the chats on it. Model loading, unloading and downloads are refused\n"
            "  to browsers on other machines. Add --gradio-auth USER:PASSWORD to require sign-in.\n"
            + "!" * 78)
