"""HTTP to an OpenAI-compatible server: JSON calls and server-sent-event streams that Stop can cut.

Kept apart from the loader so the loader reads as "what to send", this file as "how".
"""
from __future__ import annotations

import json
import socket
import threading
from typing import Any, Iterator

import httpx

from modules.core.errors import RemoteServerError

DONE = "[DONE]"
# Reading waits for the next token: a busy server may queue a request for a long time.
STREAM_TIMEOUT = httpx.Timeout(connect=10.0, read=600.0, write=30.0, pool=10.0)
CALL_TIMEOUT = httpx.Timeout(10.0)
LIST_TIMEOUT = httpx.Timeout(3.0)  # listing models for the UI must not hang it


def base_url(url: str) -> str:
    """``http://host:8000``, ``http://host:8000/`` and ``http://host:8000/v1`` all mean the same server."""
    url = url.strip().rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise RemoteServerError(f"The remote URL {url!r} must start with http:// or https:// "
                                "(for example --remote-url http://127.0.0.1:8000).")
    return url[:-3].rstrip("/") if url.endswith("/v1") else url


def error_text(response: httpx.Response) -> str:
    """The server's own error message (OpenAI ``{"error": {"message"}}``, FastAPI ``detail``, or text)."""
    try:
        body = response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        return response.text[:500] or response.reason_phrase
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])
        if isinstance(error, str):
            return error
        if body.get("detail"):
            return str(body["detail"])
        if body.get("message"):
            return str(body["message"])
    return json.dumps(body)[:500]


class RemoteServer:
    """One server: its base URL, its key, a connection pool."""

    def __init__(self, url: str, key: str | None = None, timeout: httpx.Timeout = CALL_TIMEOUT) -> None:
        self.url = base_url(url)
        self.headers = {"Authorization": f"Bearer {key}"} if key else {}
        self.client = httpx.Client(headers=self.headers, timeout=timeout)

    def close(self) -> None:
        self.client.close()

    def get(self, path: str) -> Any:
        return self._call("GET", path, None)

    def post(self, path: str, body: dict) -> Any:
        return self._call("POST", path, body)

    def try_get(self, path: str) -> Any:
        """GET that answers None instead of raising (for optional endpoints a server may lack)."""
        try:
            return self.get(path)
        except RemoteServerError:
            return None

    def _call(self, method: str, path: str, body: dict | None) -> Any:
        try:
            response = self.client.request(method, self.url + path, json=body)
        except httpx.HTTPError as err:
            raise RemoteServerError(f"The remote server at {self.url} did not answer ({err or type(err).__name__}). "
                                    "Check that it is running and that --remote-url is right.") from None
        if response.status_code != 200:
            hint = " Give its API key with --remote-key." if response.status_code in (401, 403) else ""
            raise RemoteServerError(f"The remote server at {self.url} answered {method} {path} with "
                                    f"HTTP {response.status_code}: {error_text(response)}{hint}")
        try:
            return response.json()
        except json.JSONDecodeError:
            raise RemoteServerError(f"The remote server at {self.url} sent something that is not JSON for "
                                    f"{method} {path}. Is --remote-url an OpenAI-compatible server?") from None

    def events(self, path: str, body: dict, cancel: threading.Event) -> Iterator[dict]:
        """POST ``body`` and yield the JSON of each ``data:`` event until ``[DONE]``, the end, or ``cancel``.

        Setting ``cancel`` shuts the socket down at once, so Stop closes the stream even
        while the server is still thinking about its next token.
        """
        try:
            with self.client.stream("POST", self.url + path, json=body, timeout=STREAM_TIMEOUT) as response:
                if response.status_code != 200:
                    response.read()
                    raise RemoteServerError(f"The remote server at {self.url} refused the generation "
                                            f"(HTTP {response.status_code}): {error_text(response)}")
                with _ShutdownOnCancel(response, cancel):
                    yield from _data_events(response, cancel)
        except httpx.HTTPError as err:
            if cancel.is_set():
                return  # our own shutdown of the socket
            raise RemoteServerError(f"The remote server at {self.url} broke off the reply "
                                    f"({err or type(err).__name__}). Check the server's log.") from None


def _data_events(response: httpx.Response, cancel: threading.Event) -> Iterator[dict]:
    for line in response.iter_lines():
        if cancel.is_set():
            return
        if not line.startswith("data:"):
            continue  # comments (": ping"), event names, blank separators
        data = line[5:].strip()
        if data == DONE:
            return
        try:
            event = json.loads(data)
        except json.JSONDecodeError:
            continue
        if isinstance(event, dict) and event.get("error"):
            error = event["error"]
            message = error.get("message") if isinstance(error, dict) else str(error)
            raise RemoteServerError(f"The remote server reported an error while generating: {message}")
        if isinstance(event, dict):
            yield event


class _ShutdownOnCancel:
    """While active, a watcher thread shuts the response's socket down when ``cancel`` is set."""

    def __init__(self, response: httpx.Response, cancel: threading.Event) -> None:
        self.response, self.cancel = response, cancel
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._watch, name="remote-stream-cancel", daemon=True)

    def __enter__(self) -> "_ShutdownOnCancel":
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.done.set()

    def _watch(self) -> None:
        while not self.done.is_set():
            if self.cancel.wait(0.05):
                if not self.done.is_set():
                    self._shutdown()
                return

    def _shutdown(self) -> None:
        stream = self.response.extensions.get("network_stream")
        sock = stream.get_extra_info("socket") if stream is not None else None
        if sock is None:
            return
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass  # already closed
