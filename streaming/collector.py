"""The HTTP collector: validates posted events and labels and answers 202 once Kafka has them.

Handlers read the raw body and validate it in one pydantic-core call (see ``fireman.streaming.payloads``),
so malformed JSON (400), bad fields (422) and oversized bodies (413) are told apart and named, and a
request is either accepted whole or rejected before anything is sent.
"""

from __future__ import annotations

import contextlib
import hmac
import os
import random
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.openapi.utils import get_openapi
from pydantic import TypeAdapter

from fireman.common.http_server import BodyRejected, uvicorn_config
from fireman.common.http_server import json_response as _json
from fireman.common.http_server import read_body as read_limited_body
from fireman.common.http_server import running as serve_in_thread
from fireman.common.metrics import MULTIPROCESS_DIR, exposition
from fireman.common.runtime import freeze_heap
from fireman.common.schema import LabelIn
from fireman.streaming.clock import SensorClock
from fireman.streaming.payloads import (
    EventBody,
    PayloadError,
    Record,
    event_record,
    label_record,
    parse_events,
    parse_labels,
    parse_legacy,
)
from fireman.streaming.publisher import ConfluentPublisher, KafkaUnavailable
from fireman.streaming.settings import CollectorSettings

# The version (4) and RFC 4122 variant bits of a random UUID.
_UUID4_BITS = (0x4 << 76) | (0x2 << 62)
_UUID4_MASK = ~((0xF << 76) | (0x3 << 62)) & ((1 << 128) - 1)


def _uuid4_factory() -> Callable[[], str]:
    """Random UUID4 strings at twice the speed of ``str(uuid.UUID(int=..., version=4))``.

    uuid4() reads os.urandom per id, a syscall that released the GIL to kafka-python's sender thread
    (20% of that profile). Ids must be unique, not secret: a PRNG seeded from urandom will do.
    """
    rng = random.Random(os.urandom(32))

    def new_id() -> str:
        h = f"{(rng.getrandbits(128) & _UUID4_MASK) | _UUID4_BITS:032x}"
        return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"

    return new_id


# Why a request was turned away, by the status the collector answers it with.
REJECT_REASONS = {
    400: "malformed_json",
    401: "unauthorized",
    413: "too_large",
    422: "invalid_field",
    503: "kafka_unavailable",
}


class CollectorMetrics:
    """The collector's ``/metrics``: requests by route and status, rejects by reason, publish latency.

    A registry per app, so several collectors in one process (tests, benches) keep their own counts.
    """

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Histogram

        self.registry = CollectorRegistry()
        self.requests = Counter(
            "fireman_collector_requests",
            "Write requests, by route and HTTP status.",
            ["route", "status"],
            registry=self.registry,
        )
        self.rejects = Counter(
            "fireman_collector_rejects",
            "Requests turned away, by reason.",
            ["reason"],
            registry=self.registry,
        )
        self.records = Counter(
            "fireman_collector_records",
            "Events and labels acknowledged by Kafka, by topic.",
            ["topic"],
            registry=self.registry,
        )
        self.publish_seconds = Histogram(
            "fireman_collector_publish_seconds",
            "From a request's records handed to the producer to every Kafka acknowledgement.",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 15.0),
            registry=self.registry,
        )

    def answered(self, route: str, status: int) -> None:
        self.requests.labels(route, str(status)).inc()
        reason = REJECT_REASONS.get(status)
        if reason is not None:
            self.rejects.labels(reason).inc()


# The request bodies' models go with the app's own, under components/schemas.
SCHEMA_REF = "#/components/schemas/{model}"


def _request_body(schema: dict[str, Any], description: str) -> dict[str, Any]:
    content = {"application/json": {"schema": schema}}
    return {"requestBody": {"required": True, "description": description, "content": content}}


def create_app(settings: CollectorSettings) -> FastAPI:
    """The collector app; its Kafka producer lives (and is flushed) with the app's lifespan."""
    publisher = ConfluentPublisher(settings)
    clock = SensorClock()
    new_id = _uuid4_factory()
    token = settings.token.get_secret_value().encode() if settings.token else None
    topics = settings.kafka
    wire_format = settings.kafka.measurement_format

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        import asyncio

        await asyncio.to_thread(publisher.start)
        freeze_heap()
        try:
            yield
        finally:
            await asyncio.to_thread(publisher.close)

    app = FastAPI(title="fireman collector", version="1", lifespan=lifespan)
    app.state.publisher = publisher
    metrics = app.state.metrics = CollectorMetrics()

    @app.exception_handler(PayloadError)
    async def payload_error(request: Request, exc: PayloadError) -> Response:
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        metrics.answered(request.url.path, exc.status)
        return _json(exc.status, exc.body(), headers)

    @app.exception_handler(KafkaUnavailable)
    async def kafka_unavailable(request: Request, exc: KafkaUnavailable) -> Response:
        metrics.answered(request.url.path, 503)
        return _json(503, {"detail": str(exc)}, {"Retry-After": "1"})

    def authorize(request: Request) -> None:
        if token is None:
            return
        header = request.headers.get("authorization", "")
        scheme, _, presented = header.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(presented.strip().encode(), token):
            raise PayloadError(401, "missing or wrong bearer token")

    async def read_body(request: Request) -> bytes:
        authorize(request)
        try:
            return await read_limited_body(request, settings.max_body_bytes)
        except BodyRejected as exc:
            raise PayloadError(exc.status, exc.message) from None

    def accepted(route: str, ids: list[str]) -> Response:
        metrics.answered(route, 202)
        return _json(202, {"accepted": len(ids), "event_ids": ids})

    async def publish(topic: str, records: list[Record]) -> None:
        started = time.perf_counter()
        await publisher.publish(topic, records)
        metrics.publish_seconds.observe(time.perf_counter() - started)
        metrics.records.labels(topic).inc(len(records))

    async def publish_events(route: str, events: list[EventBody]) -> Response:
        now = int(time.time() * 1000)
        ids, records = [], []
        for event in events:
            event_id = event.event_id or new_id()
            stamp = event.timestamp if event.timestamp is not None else clock.next(event.sensor_id, now)
            ids.append(event_id)
            records.append(event_record(event_id, event.sensor_id, stamp, event.features, wire_format))
        await publish(topics.topic_measurements, records)
        return accepted(route, ids)

    event_schema = TypeAdapter(EventBody | list[EventBody]).json_schema(ref_template=SCHEMA_REF)
    label_schema = TypeAdapter(LabelIn | list[LabelIn]).json_schema(ref_template=SCHEMA_REF)
    components = {**event_schema.pop("$defs", {}), **label_schema.pop("$defs", {})}

    @app.post(
        "/v1/events",
        status_code=202,
        openapi_extra=_request_body(event_schema, "One event or an array of events."),
    )
    async def post_events(request: Request) -> Response:
        """Accept events; 202 with their ids once Kafka (acks=all) has every one."""
        return await publish_events("/v1/events", parse_events(await read_body(request), settings.max_batch))

    @app.post(
        "/v1/labels",
        status_code=202,
        openapi_extra=_request_body(label_schema, "One label or an array of labels."),
    )
    async def post_labels(request: Request) -> Response:
        """Accept delayed ground truth for events, keyed like the events by sensor."""
        labels = parse_labels(await read_body(request), settings.max_batch)
        records: list[Record] = [label_record(label) for label in labels]
        await publish(topics.topic_labels, records)
        return accepted("/v1/labels", [label.event_id for label in labels])

    @app.post(
        "/FIREMAN/SPAM",
        status_code=202,
        openapi_extra=_request_body(
            {"type": "object", "additionalProperties": {"type": ["number", "null"]}},
            "Legacy FIREMAN sensors: a flat {'Cont_1': 0.1, ...} object, any content type.",
        ),
    )
    async def post_legacy(request: Request) -> Response:
        """The original FIREMAN generator's endpoint, kept so existing sensors keep working."""
        features = parse_legacy(await read_body(request))
        event = EventBody.model_construct(
            event_id=None, sensor_id=settings.legacy_sensor_id, timestamp=None, features=features
        )
        return await publish_events("/FIREMAN/SPAM", [event])

    @app.get("/metrics", include_in_schema=False)
    async def prometheus_metrics() -> Response:
        from prometheus_client import CONTENT_TYPE_LATEST

        return Response(exposition(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/healthz")
    async def healthz() -> Response:
        return _json(200, {"status": "ok"})

    @app.get("/readyz")
    async def readyz() -> Response:
        if publisher.ready:
            return _json(200, {"status": "ready", "kafka": settings.kafka.bootstrap_servers})
        return _json(503, {"status": "not ready", "detail": "Kafka is not reachable"})

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, routes=app.routes)
            schema.setdefault("components", {}).setdefault("schemas", {}).update(components)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app


def app_from_env() -> FastAPI:
    """Factory for uvicorn worker processes, which rebuild the settings from the environment."""
    return create_app(CollectorSettings())


def _config(settings: CollectorSettings, app: Any, **extra: Any) -> Any:
    return uvicorn_config(app, settings.host, settings.port, settings.access_log, **extra)


def serve(settings: CollectorSettings) -> None:
    """Run the collector in the foreground until SIGINT/SIGTERM."""
    import uvicorn

    if settings.workers > 1:
        # Each worker counts in files of a shared directory, so /metrics (answered by whichever worker)
        # sums them all; set before the workers start, as prometheus_client reads it at import.
        if not os.environ.get(MULTIPROCESS_DIR):
            import tempfile

            os.environ[MULTIPROCESS_DIR] = tempfile.mkdtemp(prefix="fireman-collector-metrics-")
        # Workers re-read settings from the environment; the CLI exported its options there.
        config = _config(
            settings, "fireman.streaming.collector:app_from_env", factory=True, workers=settings.workers
        )
    else:
        config = _config(settings, create_app(settings))
    uvicorn.Server(config).run()


@contextlib.contextmanager
def running(settings: CollectorSettings) -> Iterator[str]:
    """Serve the collector on a background thread (tests, benchmarks); yields its base URL."""
    with serve_in_thread(_config(settings, create_app(settings)), "collector") as url:
        yield url
