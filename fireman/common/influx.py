"""A thin client for the InfluxDB v1 HTTP API: line protocol on ``/write``, InfluxQL on ``/query``.

InfluxDB 1.6 (Debian's package) is what runs here; 1.8, 2.x (v1 compatibility API with a DBRP
mapping) and 3.x serve the same endpoints, so nothing below depends on the server version.
Writes are idempotent by construction: a point is identified by measurement, tag set and time, so
replaying a batch overwrites the same points instead of adding new ones.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx

from fireman.common.errors import UserError
from fireman.common.http_client import HttpClient
from fireman.common.settings import InfluxSettings

FieldValue = float | int | bool | str


class InfluxError(RuntimeError):
    """The server answered with an error (bad query, bad line protocol, missing database)."""


class DatabaseNotUsable(InfluxError, UserError):
    """fireman's user may neither create nor read its database: the operator has to act (exit 2)."""


class InfluxUnavailable(InfluxError):
    """The server could not be reached or answered 5xx: a retry may succeed."""


@dataclass(frozen=True)
class Point:
    measurement: str
    fields: Mapping[str, FieldValue]
    time_ns: int
    tags: Mapping[str, str] = field(default_factory=dict)


# In an unquoted name (measurement, tag key or value, field key) InfluxDB 1.6 reads a control character
# back altered (a field key "\t" becomes "val0") and a backslash doubled, or rejects it at the end of a
# name: refused here, before the server, rather than stored as something else.
_UNSTORABLE_IN_NAMES = re.compile(r"[\x00-\x1f\x7f-\x9f\\]")


def _escape(text: str, specials: str) -> str:
    if "\n" in text or "\r" in text:
        raise ValueError(f"line protocol cannot carry a newline: {text!r}")
    unstorable = _UNSTORABLE_IN_NAMES.search(text)
    if unstorable is not None:
        raise ValueError(
            f"InfluxDB cannot store {unstorable.group()!r} in a name or tag value exactly: {text!r}"
        )
    for char in specials:
        text = text.replace(char, "\\" + char)
    return text


def escape_measurement(name: str) -> str:
    return _escape(name, ", ")


def escape_key(key: str) -> str:
    """Escape a tag key, tag value or field key."""
    return _escape(key, ",= ")


def format_field_value(value: FieldValue) -> str | None:
    """Render a field value, or None when it cannot be stored (NaN and infinities are absent values)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return f"{value}i"
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else None
    if isinstance(value, str):
        if "\n" in value or "\r" in value:
            raise ValueError(f"line protocol cannot carry a newline: {value!r}")
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    raise TypeError(f"unsupported field type {type(value).__name__}")


def to_line(point: Point) -> str | None:
    """One line of line protocol, or None when the point has no storable field."""
    fields = []
    for key, value in point.fields.items():
        rendered = format_field_value(value)
        if rendered is not None:
            fields.append(f"{escape_key(key)}={rendered}")
    if not fields:
        return None
    head = escape_measurement(point.measurement)
    for key in sorted(point.tags):
        if point.tags[key] != "":
            head += f",{escape_key(key)}={escape_key(point.tags[key])}"
    return f"{head} {','.join(fields)} {point.time_ns}"


def quote_identifier(name: str) -> str:
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def quote_literal(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


class InfluxClient(HttpClient):
    def __init__(self, settings: InfluxSettings, database: str | None = None) -> None:
        self.settings = settings
        self.database = database or settings.database
        auth = (settings.username, settings.password or "") if settings.username else None
        self._http = httpx.Client(base_url=settings.url, timeout=settings.timeout_s, auth=auth)

    def ping(self) -> bool:
        try:
            return self._http.get("/ping", timeout=2.0).status_code == 204
        except httpx.HTTPError:
            return False

    def create_database(self, name: str | None = None) -> None:
        """CREATE DATABASE is idempotent in InfluxDB 1.x; it needs admin rights when auth is on."""
        self.execute(f"CREATE DATABASE {quote_identifier(name or self.database)}")

    def ensure_database(self, name: str | None = None) -> None:
        """Make sure the database is there, without needing admin rights for one that already is.

        With auth on, fireman runs as a plain user: the operator created the database and granted it
        access, and InfluxDB refuses that user's CREATE DATABASE (403) even for an existing database.
        A refusal is therefore only an error when the database cannot be read either; the error then
        says what the operator has to do.
        """
        database = name or self.database
        try:
            self.create_database(database)
            return
        except InfluxUnavailable:
            raise
        except InfluxError as exc:
            if not _refused(exc):
                raise
            refusal = exc
        try:
            self.query(f"SHOW MEASUREMENTS ON {quote_identifier(database)} LIMIT 1", database)
        except InfluxUnavailable:
            raise
        except InfluxError as exc:
            user = self.settings.username or "(anonymous)"
            raise DatabaseNotUsable(
                f"InfluxDB database {database!r} is not usable by user {user!r}: creating it was refused "
                f"({refusal}) and reading it failed ({exc}). An InfluxDB admin must run "
                f"CREATE DATABASE {quote_identifier(database)} and "
                f"GRANT ALL ON {quote_identifier(database)} TO {quote_identifier(user)}"
            ) from exc

    def drop_database(self, name: str) -> None:
        self.execute(f"DROP DATABASE {quote_identifier(name)}")

    def write(self, points: Iterable[Point], database: str | None = None) -> int:
        lines = [line for line in (to_line(p) for p in points) if line is not None]
        if lines:
            self.write_lines(lines, database=database)
        return len(lines)

    def write_lines(self, lines: list[str], database: str | None = None) -> None:
        body = "\n".join(lines).encode()
        params = {"db": database or self.database, "precision": "ns"}
        response = self._request("POST", "/write", params=params, content=body)
        if response.status_code != 204:
            raise InfluxError(f"write rejected ({response.status_code}): {response.text.strip()}")

    def execute(self, statement: str, database: str | None = None) -> None:
        """A statement with side effects (CREATE, DROP, DELETE); runs on POST as the API requires."""
        response = self._request("POST", "/query", params={"q": statement, "db": database or self.database})
        if response.status_code >= 400:
            raise InfluxError(f"statement failed ({response.status_code}): {response.text.strip()}")
        for result in response.json().get("results", []):
            if "error" in result:
                raise InfluxError(result["error"])

    def query(self, statement: str, database: str | None = None, epoch: str = "ms") -> list[dict[str, Any]]:
        """Run an InfluxQL query; one dict per row, with ``time`` in epoch ms (or ``epoch``: "ns" reads
        a point's exact time back) and the series' tags."""
        return list(self.iter_query(statement, database, epoch))

    def iter_query(
        self, statement: str, database: str | None = None, epoch: str = "ms"
    ) -> Iterator[dict[str, Any]]:
        params = {
            "q": statement,
            "db": database or self.database,
            "epoch": epoch,
            "chunked": "true",
            "chunk_size": "20000",
        }
        try:
            with self._http.stream("GET", "/query", params=params) as response:
                if response.status_code >= 500:
                    raise InfluxUnavailable(f"InfluxDB answered {response.status_code}")
                if response.status_code >= 400:
                    response.read()
                    raise InfluxError(f"query failed ({response.status_code}): {response.text.strip()}")
                # One JSON document per chunk, separated by "\n". Not iter_lines(): it also splits on
                # U+2028 and the other Unicode line breaks, which JSON strings may carry raw.
                pending = b""
                for data in response.iter_bytes():
                    *complete, pending = (pending + data).split(b"\n")
                    for line in complete:
                        if line.strip():
                            yield from _rows(json.loads(line))
                if pending.strip():
                    yield from _rows(json.loads(pending))
        except httpx.TransportError as exc:
            raise InfluxUnavailable(f"InfluxDB at {self.settings.url} is unreachable: {exc}") from exc

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise InfluxUnavailable(f"InfluxDB at {self.settings.url} is unreachable: {exc}") from exc
        if response.status_code >= 500:
            raise InfluxUnavailable(f"InfluxDB answered {response.status_code}: {response.text.strip()}")
        return response


def _refused(error: InfluxError) -> bool:
    """An authorisation refusal: the user lacks a privilege (403) or the credentials are wrong (401)."""
    text = str(error)
    return "(403)" in text or "(401)" in text or "not authorized" in text or "requires admin" in text


def _rows(payload: dict[str, Any]) -> Iterator[dict[str, Any]]:
    if "error" in payload:
        raise InfluxError(payload["error"])
    for result in payload.get("results", []):
        if "error" in result:
            raise InfluxError(result["error"])
        for series in result.get("series", []):
            columns = series["columns"]
            tags = series.get("tags") or {}
            for values in series.get("values", []):
                row = dict(tags)
                row.update(zip(columns, values, strict=True))
                yield row
