"""OpenAI-shaped errors: ``{"error": {"message", "type", "param", "code"}}`` with the right status."""
from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from modules.core.errors import (BadNameError, CorralError, ModelLoadError, NoModelLoadedError, PresetError,
                                 PromptTooLongError, RemoteServerError, TemplateError)
from modules.core.store.base import NotFoundError

_TYPE_NAMES = {"str", "int", "float", "bool", "list", "dict", "none", "literal"}


class ApiError(Exception):
    """An error answer: raised anywhere in a route, turned into the OpenAI shape by the handler."""

    def __init__(self, status: int, message: str, type_: str = "invalid_request_error",
                 param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type_, param, code

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def response(self) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if self.status == 401 else None
        return JSONResponse(self.body(), status_code=self.status, headers=headers)


def from_corral_error(err: CorralError) -> ApiError:
    """The status a core failure deserves: no model 503, remote server 502, the rest the client's fault."""
    message = str(err)
    if isinstance(err, NoModelLoadedError):
        return ApiError(503, message, "server_error", code="model_not_loaded")
    if isinstance(err, RemoteServerError):
        return ApiError(502, message, "server_error", code="remote_server_error")
    if isinstance(err, ModelLoadError):
        return ApiError(400, message, code="model_load_failed")
    if isinstance(err, PresetError):
        return ApiError(400, message, param="preset", code="invalid_preset")
    if isinstance(err, TemplateError):
        return ApiError(400, message, param="instruction_format", code="invalid_instruction_format")
    if isinstance(err, PromptTooLongError):
        return ApiError(400, message, param=err.param, code="context_length_exceeded")
    if isinstance(err, BadNameError):
        return ApiError(400, message, code="invalid_name")
    if isinstance(err, NotFoundError):  # the store's (characters)
        return ApiError(404, message, code="not_found")
    return ApiError(400, message)


def _param(loc: tuple) -> str | None:
    """``messages.0.role`` from pydantic's location, without union-branch labels such as ``list[str]``."""
    parts = [str(p) for p in loc if not (isinstance(p, str) and ("[" in p or p.lower() in _TYPE_NAMES
                                                                   or p.startswith(("function-", "constrained-"))))]
    return ".".join(parts) or None


def from_validation_error(err: ValidationError) -> ApiError:
    errors = err.errors(include_url=False)
    first = errors[0] if errors else {"type": "", "loc": (), "msg": str(err)}
    if first["type"] == "json_invalid":
        detail = first.get("ctx", {}).get("error", first["msg"])
        return ApiError(400, f"The request body is not valid JSON ({detail}). Send a JSON object.",
                        code="invalid_json")
    param = _param(tuple(first["loc"]))
    if first["type"] == "model_type" and not param:
        return ApiError(400, "The request body must be a JSON object.", code="invalid_json")
    if first["type"] == "missing":
        return ApiError(400, f"Missing required parameter: '{param}'.", param=param, code="missing_required_parameter")
    more = f" ({len(errors) - 1} more problem(s) in the request)" if len(errors) > 1 else ""
    return ApiError(400, f"Invalid value for '{param}': {first['msg']}.{more}", param=param, code="invalid_value")


def install_error_handlers(app: FastAPI) -> None:
    """Every failure leaves as an OpenAI-shaped body (unexpected ones are logged by uvicorn)."""

    @app.exception_handler(ApiError)
    async def _api_error(_: Request, err: ApiError) -> JSONResponse:
        return err.response()

    @app.exception_handler(ValidationError)
    async def _validation(_: Request, err: ValidationError) -> JSONResponse:
        return from_validation_error(err).response()

    @app.exception_handler(RequestValidationError)
    async def _request_validation(_: Request, err: RequestValidationError) -> JSONResponse:
        first = (err.errors() or [{"loc": (), "msg": "invalid request"}])[0]
        param = _param(tuple(p for p in first.get("loc", ()) if p not in ("body", "path", "query")))
        return ApiError(400, f"Invalid value for '{param}': {first.get('msg')}.", param=param,
                        code="invalid_value").response()

    @app.exception_handler(CorralError)
    async def _corral(_: Request, err: CorralError) -> JSONResponse:
        return from_corral_error(err).response()

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, err: StarletteHTTPException) -> JSONResponse:
        message = (f"Unknown endpoint {request.method} {request.url.path}. See the README's API section."
                   if err.status_code in (404, 405) else str(err.detail))
        return ApiError(err.status_code, message, code="unknown_url" if err.status_code == 404 else None).response()

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, err: Exception) -> JSONResponse:
        # Starlette re-raises after this answer, so uvicorn logs the traceback once.
        return ApiError(500, f"The server failed: {type(err).__name__}: {err}. See the server log.",
                        "server_error").response()
