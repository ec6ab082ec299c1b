"""The model server as one ASGI application: Open Inference Protocol v2 plus ``/predict``.

Routes: ``GET /v2/health/live``, ``/v2/health/ready``, ``/v2``, ``/v2/models/{name}``,
``/v2/models/{name}/ready``, ``POST /v2/models/{name}/infer``, ``/v2/models/{name}/predict``
(the same under ``/v2/models/{name}/versions/{version}/...``), ``GET /metrics`` and
``GET /v2/openapi.json`` (an OpenAPI 3 document of all of them). With a token, every route but
health, readiness and the OpenAPI document answers 401 to a request without
``Authorization: Bearer TOKEN``.

The server is live as soon as it listens and ready once the model is loaded and warmed up. A
request that is wrong in any way gets a 4xx whose ``{"error": ...}`` names the problem; a full
queue gets 503 with ``Retry-After``. A 5xx means a bug in cauce, and is logged as one.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import orjson

import cauce
from cauce.serve._batcher import Batcher
from cauce.serve._codec import decode_infer, encode_infer, loads
from cauce.serve._format import LoadedModel
from cauce.serve._http import (
    Disconnected,
    Receive,
    Response,
    Scope,
    Send,
    error_response,
    header,
    json_response,
    read_body,
)
from cauce.serve._loading import load_for_serving
from cauce.serve._metrics import ServeMetrics
from cauce.serve._openapi import openapi
from cauce.serve._records import ignored_header, raw_schema
from cauce.serve._spec import ModelSpec, read_spec
from cauce.serve.api import InvalidInput, QueueFull, ServeSettings

__all__ = ["ServeApp"]

log = logging.getLogger(__name__)

_RETRY = (b"retry-after", b"1")
_BINARY = (b"content-type", b"application/octet-stream")
_EXTENSIONS = ["binary_tensor_data", "predict_records", "metrics"]


class _NotReady(Exception):
    pass


class _WrongMethod(InvalidInput):
    def __init__(self, message: str, allowed: str) -> None:
        super().__init__(message, status=405)
        self.allowed = allowed


def _endpoint(scope: Scope, name: str, method: str, allowed: str) -> None:
    """Name the endpoint (a metrics label); 405 if the method is not the one it takes."""
    scope["cauce.endpoint"] = name
    if method not in allowed.split(", "):
        use = allowed.replace(", ", " or ")
        raise _WrongMethod(f"method {method} is not allowed on {scope['path']}; use {use}", allowed)


def _is_open(parts: list[str]) -> bool:
    """Whether a path is open without the token: health, readiness (for probes) and the
    OpenAPI document."""
    if parts in (["v2", "health", "live"], ["v2", "health", "ready"], ["v2", "openapi.json"]):
        return True
    return (
        parts[:2] == ["v2", "models"]
        and parts[-1] == "ready"
        and (len(parts) == 4 or (len(parts) == 6 and parts[3] == "versions"))
    )


class ServeApp:
    """ASGI app serving one model directory. ``on_fatal`` is called if the model cannot load.

    With ``background=True`` (one process), the app answers as soon as it starts: live, and
    not ready until the model is loaded. With ``background=False`` (a worker among several),
    its startup loads the model, so that the worker takes no connection before it is ready
    while the others serve.
    """

    def __init__(
        self,
        settings: ServeSettings,
        *,
        on_fatal: Callable[[BaseException], None] | None = None,
        background: bool = True,
    ) -> None:
        self.settings = settings
        self._background = background
        self.spec: ModelSpec = read_spec(settings.model_dir)
        self.metrics = ServeMetrics(self.spec.name, settings.max_batch_size)
        self.model: LoadedModel | None = None
        self.failure: BaseException | None = None
        self.accepted = 0
        self.answered = 0
        self._on_fatal = on_fatal
        self._batcher: Batcher | None = None
        self._loading: asyncio.Task[None] | None = None
        self._output_names = [t.name for t in self.spec.outputs]
        self._datatypes = {t.name: t.datatype for t in self.spec.outputs}
        self._name_version = (self.spec.name, self.spec.version)
        self._metadata = orjson.dumps(self.spec.metadata())
        self._raw_schema = orjson.dumps(raw_schema(self.spec))
        pre = self.spec.preprocessing
        self._raw_features = tuple(pre.features) if pre is not None else ()
        self._openapi = orjson.dumps(openapi(self.spec, token=bool(settings.token)))
        self._token = settings.token.encode() if settings.token else None

    @property
    def ready(self) -> bool:
        return self.model is not None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await self._http(scope, receive, send)
        elif scope["type"] == "lifespan":
            await self._lifespan(receive, send)

    # -- lifespan ---------------------------------------------------------------------------

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self._batcher = Batcher(
                    self._run,
                    max_batch_size=self.settings.max_batch_size,
                    max_delay=self.settings.max_delay_ms / 1000.0,
                    max_queue=self.settings.max_queue,
                    observer=self.metrics,
                )
                self._batcher.start()
                self._loading = asyncio.get_running_loop().create_task(self._load())
                if not self._background:
                    await self._loading
                    if self.failure is not None:
                        await send(
                            {"type": "lifespan.startup.failed", "message": str(self.failure)}
                        )
                        return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self._shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return

    def _run(self, inputs: dict[str, np.ndarray[Any, Any]]) -> dict[str, np.ndarray[Any, Any]]:
        assert self.model is not None  # the batcher only runs once the model is loaded
        return self.model.run(inputs)

    async def _load(self) -> None:
        assert self._batcher is not None
        try:
            # On the model's own thread, so that torch's thread settings apply where it runs.
            model = await self._batcher.on_model_thread(lambda: load_for_serving(self.settings))
        except Exception as exc:
            self.failure = exc
            # said once: by the caller that stops, by uvicorn (lifespan.startup.failed carries
            # it), or here when neither does
            if self._on_fatal is not None and self._background:
                self._on_fatal(exc)
            elif self._background:
                log.error("cannot serve %s: %s", self.settings.model_dir, exc)
            return
        self.model = model

    async def _shutdown(self) -> None:
        if self._loading is not None and not self._loading.done():
            self._loading.cancel()
        if self._batcher is not None:
            await self._batcher.drain(self.settings.grace_s)
            await self._batcher.stop()
        log.info(
            "stopped: %d inference requests accepted, %d answered", self.accepted, self.answered
        )

    # -- HTTP -------------------------------------------------------------------------------

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        try:
            if self._token is not None and not self._authorized(scope):
                self.metrics.error("unauthorized")
                response = error_response(
                    401,
                    "this server needs a token: send the header Authorization: Bearer TOKEN",
                    (b"www-authenticate", b'Bearer realm="cauce"'),
                )
            else:
                response = await self._route(scope, receive)
        except InvalidInput as exc:
            self.metrics.error("too_large" if exc.status == 413 else "bad_request")
            allow = [(b"allow", exc.allowed.encode())] if isinstance(exc, _WrongMethod) else []
            response = error_response(exc.status, str(exc), *allow)
        except QueueFull as exc:
            self.metrics.error("queue_full")
            response = error_response(
                503, str(exc), (b"retry-after", str(exc.retry_after).encode())
            )
        except _NotReady:
            self.metrics.error("not_ready")
            why = f"failed to load: {self.failure}" if self.failure else "is loading"
            response = error_response(503, f"model {self.spec.name!r} {why}", _RETRY)
        except Disconnected:
            return
        except Exception:
            log.exception("error serving %s %s", scope["method"], scope["path"])
            self.metrics.error("internal")
            response = error_response(500, "internal error (logged by the server)")
        await response.send(send)
        if scope.get("cauce.accepted"):
            self.answered += 1
        self.metrics.answered(
            scope.get("cauce.endpoint", "other"), response.status, time.perf_counter() - started
        )

    def _authorized(self, scope: Scope) -> bool:
        if _is_open(scope["path"].strip("/").split("/")):
            return True
        value = header(scope, b"authorization") or b""
        scheme, _, given = value.partition(b" ")
        assert self._token is not None
        # compare_digest: the time taken does not tell how much of a guess was right
        return scheme.lower() == b"bearer" and hmac.compare_digest(given.strip(), self._token)

    async def _route(self, scope: Scope, receive: Receive) -> Response:
        method: str = scope["method"]
        parts = scope["path"].strip("/").split("/")
        no_route = f"no route {scope['path']!r}"
        if parts == ["metrics"]:
            _endpoint(scope, "metrics", method, "GET")
            headers = [(b"content-type", self.metrics.content_type.encode())]
            return Response(200, self.metrics.exposition(), headers)
        if parts[0] != "v2":
            return error_response(404, no_route)
        rest = parts[1:]
        if not rest:
            _endpoint(scope, "server_metadata", method, "GET")
            doc = {"name": "cauce", "version": cauce.__version__, "extensions": _EXTENSIONS}
            return json_response(200, doc)
        if rest == ["health", "live"]:
            _endpoint(scope, "live", method, "GET")
            return json_response(200, {"live": True})
        if rest == ["openapi.json"]:
            _endpoint(scope, "openapi", method, "GET")
            return Response(200, self._openapi, [(b"content-type", b"application/json")])
        if rest == ["health", "ready"]:
            _endpoint(scope, "ready", method, "GET")
            return json_response(200 if self.ready else 503, {"ready": self.ready})
        if len(rest) < 2 or rest[0] != "models":
            return error_response(404, no_route)
        name, action = rest[1], rest[2:]
        if len(action) >= 2 and action[0] == "versions":
            if action[1] != self.spec.version:
                return error_response(
                    404,
                    f"model {name!r} has no version {action[1]!r}; it has {self.spec.version!r}",
                )
            action = action[2:]
        if name != self.spec.name:
            return error_response(
                404, f"unknown model {name!r}; this server serves {self.spec.name!r}"
            )
        if not action:
            _endpoint(scope, "model_metadata", method, "GET")
            return Response(200, self._metadata, [(b"content-type", b"application/json")])
        if action == ["ready"]:
            _endpoint(scope, "model_ready", method, "GET")
            return json_response(200 if self.ready else 503, {"name": name, "ready": self.ready})
        if action == ["infer"]:
            _endpoint(scope, "infer", method, "POST")
            return await self._infer(scope, receive)
        if action == ["predict"]:
            _endpoint(
                scope, "predict_schema" if method == "GET" else "predict", method, "GET, POST"
            )
            if method == "GET":
                return Response(200, self._raw_schema, [(b"content-type", b"application/json")])
            return await self._predict(scope, receive)
        return error_response(404, no_route)

    def _accept(self, scope: Scope) -> tuple[LoadedModel, Batcher]:
        """Count a request the model will answer; the batcher expects it (or ``forget``)."""
        model, batcher = self.model, self._batcher
        if model is None or batcher is None:
            raise _NotReady
        self.accepted += 1
        scope["cauce.accepted"] = True
        batcher.expect()
        return model, batcher

    async def _infer(self, scope: Scope, receive: Receive) -> Response:
        model, batcher = self._accept(scope)
        try:
            body = await read_body(scope, receive, self.settings.max_body_bytes)
            raw_length = header(scope, b"inference-header-content-length")
            length = None
            if raw_length is not None:
                if not raw_length.isdigit():
                    raise InvalidInput("Inference-Header-Content-Length must be a number")
                length = int(raw_length)
            request = decode_infer(
                body,
                length,
                self.spec.inputs,
                self._output_names,
                self._name_version,
                raw=self._raw_features,
            )
            model.check_codes(request.inputs)  # names, datatypes and shapes: checked by decode
        except BaseException:
            batcher.forget()
            raise
        outputs = await batcher.submit(request.inputs, request.rows)
        payload, json_length = encode_infer(
            self.spec.name, self.spec.version, request, outputs, self._datatypes
        )
        if json_length is None:
            return Response(200, payload, [(b"content-type", b"application/json")])
        return Response(
            200, payload, [_BINARY, (b"inference-header-content-length", str(json_length).encode())]
        )

    async def _predict(self, scope: Scope, receive: Receive) -> Response:
        model, batcher = self._accept(scope)
        try:
            records = loads(await read_body(scope, receive, self.settings.max_body_bytes))
            ignored: set[str] = set()
            inputs = model.preprocess(records, ignored)
            rows = model.check(inputs)
        except BaseException:
            batcher.forget()
            raise
        outputs = await batcher.submit(inputs, rows)
        extra = [ignored_header(ignored)] if ignored else []
        return json_response(
            200,
            {
                "model_name": self.spec.name,
                "model_version": self.spec.version,
                "outputs": {name: outputs[name] for name in self._output_names},
            },
            *extra,
        )
