"""What fireman's HTTP services share: the uvicorn server they run on and reading a bounded body.

The collector (``fireman collector``) and the inference server (``fireman serve``) run the same way:
uvloop and httptools, uvicorn's own logs at WARNING (each service logs what matters itself), and a
body read only up to the service's limit, so an oversized request is refused before it is buffered.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import orjson
from starlette.responses import Response

if TYPE_CHECKING:
    import uvicorn
    from starlette.requests import Request


def json_response(status: int, body: Any, headers: dict[str, str] | None = None) -> Response:
    """A JSON response rendered by orjson (several times faster than the standard encoder)."""
    return Response(orjson.dumps(body), status_code=status, media_type="application/json", headers=headers)


def uvicorn_config(app: Any, host: str, port: int, access_log: bool = False, **extra: Any) -> uvicorn.Config:
    import uvicorn

    return uvicorn.Config(
        app,
        host=host,
        port=port,
        loop="uvloop",
        http="httptools",
        access_log=access_log,
        log_level="warning",
        timeout_keep_alive=30,
        **extra,
    )


@contextlib.contextmanager
def running(config: uvicorn.Config, name: str) -> Iterator[str]:
    """Serve ``config`` on a background thread of this process (tests, benchmarks); yields the base URL."""
    import uvicorn

    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name=name, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"the {name} did not start on {config.host}:{config.port}")
        time.sleep(0.05)
    try:
        yield f"http://{config.host}:{config.port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


class BodyRejected(Exception):
    """A request body refused before it was read whole; ``status`` is the HTTP status to answer."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


async def read_body(request: Request, limit: int) -> bytes:
    """The whole body, or BodyRejected (413) as soon as it is known to be over ``limit`` bytes."""
    length = request.headers.get("content-length")
    if length is not None:
        if not length.isdigit():
            raise BodyRejected(400, f"bad Content-Length {length!r}")
        if int(length) > limit:
            raise BodyRejected(413, f"body of {int(length)} bytes is over the {limit}-byte limit")
        return await request.body()
    # Chunked: count as it streams, so a body without a length cannot grow past the limit either.
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyRejected(413, f"body is over the {limit}-byte limit")
        chunks.append(chunk)
    return b"".join(chunks)
