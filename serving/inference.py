"""``fireman serve``: the registry's production model online, over the Open Inference Protocol V2.

The server is live as soon as it listens and ready once a production version is loaded and checked
(``fireman.common.model``, the scorer's own loading and checks). The ``ModelWatcher`` of the scorer
polls the ``production`` alias and loads a new version off the request path; the swap happens between
two model calls, so every request is answered by exactly one version, which its response names.

Requests go through one model call at a time: while a call is running, the requests that arrive queue
and go into the next call together (at most ``max_rows`` rows). Much of a call's cost is per call,
not per row (a forest visits every tree each time), so under load this keeps the cost per request
low, without making a lone request wait for company.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, replace
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import numpy as np
from fastapi import FastAPI, Request, Response
from starlette.exceptions import HTTPException

from fireman.common.http_server import BodyRejected, json_response, read_body, running, uvicorn_config
from fireman.common.model import Registry, ServingModel, predict_in_one_thread, trees_in_turn
from fireman.common.schema import FEATURE_NAMES
from fireman.serving.codec import ColumnMap, model_columns
from fireman.serving.oip import (
    BINARY_HEADER,
    FEATURES_INPUT,
    OUTPUTS,
    WIDTH,
    InferRequest,
    ProtocolError,
    encode_response,
    error_body,
    parse_request,
)
from fireman.serving.reload import ModelWatcher, switch_message
from fireman.serving.settings import ServeSettings

log = logging.getLogger(__name__)

SERVER_NAME = "fireman"
PLATFORM = "sklearn"
EXTENSIONS = ["binary_tensor_data"]


@dataclass(frozen=True)
class Loaded:
    """A servable version and the columns of the request matrix it reads, in its feature order."""

    model: ServingModel
    columns: ColumnMap


def prepare_for_requests(model: ServingModel) -> ServingModel:
    """Prepare a checked version for per-request scoring (a request has a few rows, a batch thousands).

    A forest at the end of a pipeline is scored tree after tree (``TreesInTurn``). Any other model
    keeps its own ``predict_proba`` but in one thread: an estimator trained with ``n_jobs=-1`` hands
    every call to a thread per core, which for a request's few rows costs more than it saves (the
    training defaults' forest, one row: 38 ms against 14 ms in one thread, measured here). Either way
    this process's copy changes, not the scorer's. It runs where requests are scored, at the first
    request after a switch (a one-off delay: the check scores 256 rows both ways).
    """
    estimator = model.estimator
    # First, so that the check below scores in this thread too, without joblib's thread pool.
    predict_in_one_thread(estimator)
    trees = trees_in_turn(estimator, len(model.feature_order), model.version)
    if trees is not None:
        return replace(model, estimator=trees)
    return model


class Served:
    """The version this server answers with, kept current by the scorer's watcher."""

    def __init__(self, settings: ServeSettings, registry: Registry) -> None:
        self.settings = settings
        self.registry = registry
        # fireman serve writes no InfluxDB: the watcher logs a refused version itself, which is enough
        # for a request/response service (the scorer records model_events for the stream).
        self.watcher = ModelWatcher(
            registry,
            settings.reload_interval_s,
            emit=lambda _point: None,
            observer="fireman serve",
            waiting="is not ready",
        )
        self._loaded: Loaded | None = None
        self._stop = threading.Event()
        self._first: threading.Thread | None = None

    def start(self) -> None:
        """Look for the first version on a thread: the server is live (not ready) meanwhile."""
        self._first = threading.Thread(target=self._wait_for_first, name="first-model", daemon=True)
        self._first.start()

    def _wait_for_first(self) -> None:
        model = self.watcher.wait_for_first(self._stop)
        if model is None or self._stop.is_set():  # stopped while the first version was loading
            return
        self._use(model)
        self.watcher.start(model.version)

    def current(self) -> Loaded | None:
        """The version to answer with now; takes a newly checked one if the watcher has it."""
        fresh = self.watcher.take_pending()
        if fresh is not None:
            # Prepared here, in the thread that scores requests, not on the watcher's thread: the check
            # scoring beside a request's scoring on another thread deadlocked `fireman serve` in CI's
            # closed-loop test (every thread asleep on a lock, version 1 answering for good).
            self._use(fresh)
        return self._loaded

    def _use(self, model: ServingModel) -> None:
        previous = self._loaded
        prepared = prepare_for_requests(model)
        self._loaded = Loaded(prepared, model_columns(prepared.feature_order))
        log.info("%s", switch_message(model, previous.model if previous else None))

    def not_ready(self) -> str:
        mlflow = self.settings.mlflow
        return (
            f"no production model loaded yet: waiting for registered model {mlflow.model_name!r} to have "
            f"a servable version under alias {mlflow.production_alias!r} (see the server's log)"
        )

    def stop(self) -> None:
        self._stop.set()
        if self._first is not None:
            self._first.join(timeout=30)
        self.watcher.stop()


@dataclass
class _Waiting:
    request: InferRequest
    version: str | None  # the version the URL asked for, if any
    answer: asyncio.Future[tuple[ServingModel, list[int], list[float]]]


class Batcher:
    """One model call at a time; requests that arrive during a call go together into the next one."""

    def __init__(self, served: Served, max_rows: int) -> None:
        self.served = served
        self.max_rows = max_rows
        self._queue: list[_Waiting] = []
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="model-calls")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def score(
        self, request: InferRequest, version: str | None
    ) -> tuple[ServingModel, list[int], list[float]]:
        answer = asyncio.get_running_loop().create_future()
        self._queue.append(_Waiting(request, version, answer))
        self._wakeup.set()
        return await answer

    async def _run(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._queue:
                await self._answer(self._take())

    async def _answer(self, batch: list[_Waiting]) -> None:
        """Score a batch; if its call fails, every request on its own, so only a failing one fails."""
        try:
            await self._call(batch)
        except Exception as exc:  # answer, and keep serving: a waiting request must not hang
            if len(batch) > 1:
                # The call merged requests of different clients: one client's rows the model cannot
                # take must not fail the others'.
                log.warning(
                    "a model call of %d requests failed (%s); scoring each on its own", len(batch), exc
                )
                for waiting in batch:
                    await self._answer([waiting])
                return
            log.exception("a model call failed")
            _fail(batch[0], ProtocolError(500, f"scoring failed: {exc}"))

    def _take(self) -> list[_Waiting]:
        """The queued requests, oldest first, up to max_rows rows (always at least one request)."""
        taken, rows = 0, 0
        for waiting in self._queue:
            size = len(waiting.request.matrix)
            if taken and rows + size > self.max_rows:
                break
            taken, rows = taken + 1, rows + size
        batch, self._queue = self._queue[:taken], self._queue[taken:]
        return batch

    async def _call(self, batch: list[_Waiting]) -> None:
        loaded = self.served.current()  # one version for the whole call
        if loaded is None:
            for waiting in batch:
                _fail(waiting, ProtocolError(503, self.served.not_ready()))
            return
        model = loaded.model
        scored = []
        for waiting in batch:
            if waiting.version is not None and waiting.version != model.version:
                _fail(waiting, _not_served(model, waiting.version))
            elif not waiting.answer.done():  # a client that went away is not scored
                scored.append(waiting)
        if not scored:
            return
        matrices = [waiting.request.matrix for waiting in scored]
        matrix = matrices[0] if len(matrices) == 1 else np.concatenate(matrices)
        matrix = loaded.columns.apply(matrix)
        predictions, probabilities = await asyncio.to_thread(model.score, matrix)
        start = 0
        for waiting in scored:
            end = start + len(waiting.request.matrix)
            if not waiting.answer.done():
                waiting.answer.set_result((model, predictions[start:end], probabilities[start:end]))
            start = end


def _fail(waiting: _Waiting, error: ProtocolError) -> None:
    if not waiting.answer.done():
        waiting.answer.set_exception(error)


def _not_served(model: ServingModel, asked: str) -> ProtocolError:
    return ProtocolError(
        404,
        f"version {asked} of model {model.lineage.model_name!r} is not served here: "
        f"the production alias points at version {model.version}",
    )


def _server_version() -> str:
    try:
        return version("fireman")
    except PackageNotFoundError:
        return "unknown"


def create_app(settings: ServeSettings, registry: Registry | None = None) -> FastAPI:
    """The inference app; the model watcher and the model-call loop live with the app's lifespan."""
    own_registry = registry is None
    registry = registry or Registry(settings.mlflow)
    served = Served(settings, registry)
    batcher = Batcher(served, settings.max_rows)
    model_name = settings.mlflow.model_name
    server_metadata = {"name": SERVER_NAME, "version": _server_version(), "extensions": EXTENSIONS}

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        served.start()
        batcher.start()
        try:
            yield
        finally:
            await batcher.stop()
            await asyncio.to_thread(served.stop)
            if own_registry:
                registry.close()

    app = FastAPI(title="fireman serve (Open Inference Protocol V2)", version="2", lifespan=lifespan)
    app.state.served = served

    def error(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
        return Response(error_body(message), status, headers, media_type="application/json")

    @app.exception_handler(ProtocolError)
    async def protocol_error(_: Request, exc: ProtocolError) -> Response:
        return error(exc.status, exc.message, {"Retry-After": "1"} if exc.status == 503 else None)

    @app.exception_handler(BodyRejected)
    async def body_rejected(_: Request, exc: BodyRejected) -> Response:
        return error(exc.status, exc.message)

    @app.exception_handler(HTTPException)
    async def http_error(_: Request, exc: HTTPException) -> Response:
        # Unknown paths and methods answer in the protocol's error shape too.
        return error(exc.status_code, str(exc.detail))

    def ready_model(name: str, model_version: str | None = None) -> ServingModel:
        """The served version for a request naming ``name`` (and a version); 404 or 503 otherwise."""
        if name != model_name:
            raise ProtocolError(404, f"unknown model {name!r}: this server serves {model_name!r}")
        loaded = served.current()
        if loaded is None:
            raise ProtocolError(503, served.not_ready())
        if model_version is not None and model_version != loaded.model.version:
            raise _not_served(loaded.model, model_version)
        return loaded.model

    @app.get("/v2/health/live")
    async def live() -> Response:
        return json_response(200, {"live": True})

    @app.get("/v2/health/ready")
    async def ready() -> Response:
        if served.current() is None:
            return json_response(503, {"ready": False, "error": served.not_ready()}, {"Retry-After": "1"})
        return json_response(200, {"ready": True})

    @app.get("/v2")
    async def server() -> Response:
        return json_response(200, server_metadata)

    def model_metadata(model: ServingModel) -> dict[str, Any]:
        lineage = model.lineage
        return {
            "name": lineage.model_name,
            "versions": [lineage.model_version],
            "platform": PLATFORM,
            "inputs": [{"name": FEATURES_INPUT, "datatype": "FP64", "shape": [-1, WIDTH]}],
            "outputs": [
                {"name": name, "datatype": datatype, "shape": [-1]} for name, (datatype, _) in OUTPUTS.items()
            ],
            # Not in the protocol's schema (clients ignore it): the lineage, and the per-feature form.
            "parameters": {
                "run_id": lineage.run_id,
                "alias": settings.mlflow.production_alias,
                "feature_inputs": f"{FEATURE_NAMES[0]}..{FEATURE_NAMES[-1]}, FP64 [-1] each",
            },
        }

    @app.get("/v2/models/{name}")
    async def metadata(name: str) -> Response:
        return json_response(200, model_metadata(ready_model(name)))

    @app.get("/v2/models/{name}/versions/{model_version}")
    async def version_metadata(name: str, model_version: str) -> Response:
        return json_response(200, model_metadata(ready_model(name, model_version)))

    @app.get("/v2/models/{name}/ready")
    async def model_ready(name: str) -> Response:
        model = ready_model(name)
        return json_response(200, {"name": name, "version": model.version, "ready": True})

    @app.get("/v2/models/{name}/versions/{model_version}/ready")
    async def version_ready(name: str, model_version: str) -> Response:
        ready_model(name, model_version)
        return json_response(200, {"name": name, "version": model_version, "ready": True})

    async def infer(request: Request, name: str, model_version: str | None) -> Response:
        ready_model(name, model_version)  # 404 and 503 before the body is read
        encoding = request.headers.get("content-encoding", "identity").strip().lower()
        if encoding != "identity":
            raise ProtocolError(415, f"Content-Encoding {encoding!r} is not supported; send the body as is")
        body = await read_body(request, settings.max_body_bytes)
        parsed = parse_request(body, request.headers.get(BINARY_HEADER), settings.max_rows)
        model, predictions, probabilities = await batcher.score(parsed, model_version)
        content, headers = encode_response(parsed, model.lineage, predictions, probabilities)
        media = "application/octet-stream" if headers else "application/json"
        return Response(content, 200, headers, media_type=media)

    @app.post("/v2/models/{name}/infer")
    async def infer_latest(request: Request, name: str) -> Response:
        """Score rows with the production version; the response names the version that answered."""
        return await infer(request, name, None)

    @app.post("/v2/models/{name}/versions/{model_version}/infer")
    async def infer_version(request: Request, name: str, model_version: str) -> Response:
        """Score rows with this version, if it is the one in production (404 otherwise)."""
        return await infer(request, name, model_version)

    return app


def serve(settings: ServeSettings) -> None:
    """Run the inference server in the foreground until SIGINT/SIGTERM."""
    import uvicorn

    uvicorn.Server(_config(settings)).run()


def _config(settings: ServeSettings, registry: Registry | None = None) -> Any:
    return uvicorn_config(create_app(settings, registry), settings.host, settings.port, settings.access_log)


@contextlib.contextmanager
def serving(settings: ServeSettings, registry: Registry | None = None) -> Iterator[str]:
    """The inference server on a background thread (tests); yields its base URL."""
    with running(_config(settings, registry), "inference server") as url:
        yield url
