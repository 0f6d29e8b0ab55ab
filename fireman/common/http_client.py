"""The part fireman's HTTP API clients (InfluxDB, MLflow's registry, Airflow) share."""

from __future__ import annotations

from typing import Self

import httpx


class HttpClient:
    """Owns one ``httpx.Client`` as ``_http``, closed by ``close()`` or at the end of a ``with`` block."""

    _http: httpx.Client

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
