"""The dashboard's web app: one page, its static files, and a small JSON API over InfluxDB.

The page uses relative URLs only, so the same app works standalone (``fireman dashboard``) and
mounted under a prefix by another FastAPI app::

    dashboard = Dashboard(DashboardSettings())
    collector_app.mount("/dashboard", dashboard.app)
    # and on shutdown: dashboard.close()

A mounted app's lifespan does not run, so the lag sampler also starts on the first API request.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI, HTTPException, Query
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles

from fireman.common.influx import InfluxClient, InfluxError, InfluxUnavailable

from .lag import LagSampler
from .queries import PANELS, Window, empty
from .settings import MAX_WINDOW_S, DashboardSettings

STATIC = Path(__file__).parent / "static"


class Dashboard:
    def __init__(self, settings: DashboardSettings) -> None:
        self.settings = settings
        self.influx = InfluxClient(settings.influxdb)
        self.sampler = (
            LagSampler(settings.kafka, settings.influxdb, settings.consumer_groups(), settings.lag_interval_s)
            if settings.record_lag
            else None
        )
        self.app = self._build()

    def close(self) -> None:
        if self.sampler is not None:
            self.sampler.stop()
        self.influx.close()

    def start(self) -> None:
        if self.sampler is not None:
            self.sampler.start()

    def panels(self, window_s: int, names: list[str]) -> dict[str, Any]:
        settings = self.settings
        window = Window.ending(time.time(), window_s, settings.max_points)
        panels: dict[str, Any] = {}
        for name in names:
            title, build = PANELS[name]
            try:
                panel = build(self.influx, window)
            except InfluxUnavailable:
                raise
            except InfluxError as exc:
                if "database not found" not in str(exc):
                    raise
                panel = empty(name)
            panels[name] = {"title": title, **panel}
        if "lag" in panels:
            panels["lag"]["current"] = self._current_lag()
        annotations = panels["model_events"]["events"] if "model_events" in panels else []
        return {
            "generated_at": window.now_s,
            "window_s": window_s,
            "bucket_s": window.bucket_s,
            "start": window.start_s,
            "end": window.now_s,
            "refresh_s": settings.refresh_s,
            "annotations": annotations,
            "panels": panels,
        }

    def _current_lag(self) -> dict[str, Any]:
        if self.sampler is None:
            return {"groups": [], "error": "lag sampling is off (FIREMAN_DASHBOARD_RECORD_LAG=false)"}
        return {
            "groups": [{"group": g.group, "lag": g.lag, "at": g.at} for g in self.sampler.latest],
            "error": self.sampler.error,
        }

    def _build(self) -> FastAPI:
        dashboard = self

        @asynccontextmanager
        async def lifespan(_: FastAPI) -> AsyncIterator[None]:
            dashboard.start()
            yield
            dashboard.close()

        app = FastAPI(title="fireman dashboard", lifespan=lifespan, docs_url="/api/docs", redoc_url=None)
        app.mount("/static", StaticFiles(directory=STATIC), name="static")

        @app.get("/", include_in_schema=False)
        def index() -> FileResponse:
            return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

        @app.get("/api/health")
        def health() -> JSONResponse:
            ok = dashboard.influx.ping()
            body = {"status": "ok" if ok else "degraded", "influxdb": dashboard.settings.influxdb.url}
            return JSONResponse(body, status_code=200 if ok else 503)

        @app.get("/api/dashboard")
        def all_panels(
            window: int | None = Query(None, ge=60, le=MAX_WINDOW_S, description="Seconds shown."),
        ) -> dict[str, Any]:
            """Every panel in one response: the page polls this."""
            return dashboard._answer(window, list(PANELS))

        @app.get("/api/panels/{name}")
        def one_panel(
            name: str,
            window: int | None = Query(None, ge=60, le=MAX_WINDOW_S, description="Seconds shown."),
        ) -> dict[str, Any]:
            if name not in PANELS:
                raise HTTPException(404, f"no panel named {name!r}; panels: {', '.join(PANELS)}")
            return dashboard._answer(window, [name])

        return app

    def _answer(self, window: int | None, names: list[str]) -> dict[str, Any]:
        self.start()
        try:
            return self.panels(window or self.settings.window_s, names)
        except InfluxUnavailable as exc:
            raise HTTPException(503, str(exc)) from None
        except InfluxError as exc:
            raise HTTPException(502, f"InfluxDB query failed: {exc}") from None


def create_app(settings: DashboardSettings) -> FastAPI:
    return Dashboard(settings).app
