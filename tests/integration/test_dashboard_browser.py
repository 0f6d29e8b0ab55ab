"""Headless Chromium (Debian's package, driven by Playwright) loads the dashboard over real HTTP.

The page is served by uvicorn on a free port, reading a fresh InfluxDB database seeded for every
panel and Kafka consumer groups with lag. Each panel must render: its ``data-points`` attribute
counts the values it drew, and its canvas must hold coloured pixels (series colours; axes, grid and
model-switch lines are grey), and a model switch written afterwards must appear without a reload.
The screenshot goes to ``$FIREMAN_HOME/screenshots/dashboard.png``.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest
import uvicorn
from playwright.sync_api import Page, sync_playwright

from fireman.common.influx import InfluxClient, Point
from fireman.common.measurements import MODEL_EVENTS
from fireman.common.settings import InfluxSettings, KafkaSettings, StateSettings
from fireman.dashboard.app import Dashboard
from fireman.dashboard.settings import DashboardSettings
from fireman.services.process import wait_until
from tests.integration.test_dashboard_api import dashboard_settings
from tests.support import dashboard_data

pytestmark = pytest.mark.integration

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
PANELS = ("ingest", "predictions", "performance", "shadow", "drift", "model_events", "lag")

# Pixels whose channels differ by more than 60 are a series colour, not grey. A dot of a fresh
# lag sample is ~40 such pixels; a line across a chart is hundreds.
COLOURED_PIXELS_JS = """
(section) => {
  const canvas = section.querySelector("canvas");
  if (!canvas) return -1;
  const data = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
  let coloured = 0;
  for (let i = 0; i < data.length; i += 4) {
    const [r, g, b, a] = [data[i], data[i + 1], data[i + 2], data[i + 3]];
    if (a > 128 && Math.max(r, g, b) - Math.min(r, g, b) > 60) coloured++;
  }
  return coloured;
}
"""


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    if not wait_until(predicate, timeout, interval_s=0.2):
        raise AssertionError(f"timed out after {timeout} s waiting for {what}")


@pytest.fixture
def served(kafka_topics: KafkaSettings, influx_db: InfluxSettings) -> Iterator[DashboardSettings]:
    dashboard_data.seed(influx_db)
    settings = dashboard_settings(kafka_topics, influx_db).model_copy(update={"refresh_s": 1.0})
    server = uvicorn.Server(
        uvicorn.Config(Dashboard(settings).app, host="127.0.0.1", port=settings.port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_for(lambda: server.started, 30, "uvicorn to start")
    yield settings
    server.should_exit = True
    thread.join(timeout=30)


def test_every_panel_renders_in_headless_chromium(served: DashboardSettings) -> None:
    assert shutil.which(CHROMIUM), f"{CHROMIUM} is missing: `make system-deps` installs Debian's chromium"
    shots = StateSettings().root / "screenshots"
    shots.mkdir(parents=True, exist_ok=True)
    shot = shots / "dashboard.png"
    errors: list[str] = []
    with tempfile.TemporaryDirectory() as profile, sync_playwright() as playwright:
        browser = playwright.chromium.launch_persistent_context(
            profile,
            executable_path=CHROMIUM,
            args=CHROMIUM_ARGS,
            headless=True,
            viewport={"width": 1280, "height": 1000},
        )
        try:
            page = browser.new_page()
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
            page.goto(f"http://127.0.0.1:{served.port}/")
            # Lag is sampled in the background: the page picks it up on a later refresh.
            selector = ", ".join(f'#panel-{name}[data-status="ok"]' for name in PANELS)
            page.wait_for_function(
                f"document.querySelectorAll({selector!r}).length === {len(PANELS)}"
                " && document.querySelector('#panel-lag').dataset.series === '3'",
                timeout=30_000,
            )
            rendered = read_panels(page)
            page.screenshot(path=str(shot), full_page=True)
            # Live: a model switch written now shows up without reloading the page.
            with InfluxClient(served.influxdb) as influx:
                influx.write([switch_to_version_4()])
            page.wait_for_function(
                "document.querySelector('#panel-model_events').dataset.events === '4'", timeout=15_000
            )
        finally:
            browser.close()
    assert errors == []
    for name, (points, coloured) in rendered.charts.items():
        assert points > 0, f"panel {name} drew no data"
        assert coloured > 30, f"panel {name}'s chart has no visible series ({coloured} coloured pixels)"
    assert rendered.charts["ingest"][0] >= dashboard_data.EVENTS // 10  # one rate per 10 s bucket
    assert rendered.drift_features[: len(dashboard_data.DRIFTED)] == [
        f"{name} 0.001" for name in dashboard_data.DRIFTED
    ]
    assert rendered.events == 3
    assert "refused v3" in rendered.events_text
    assert shot.stat().st_size > 10_000


def switch_to_version_4() -> Point:
    return Point(
        MODEL_EVENTS.name,
        {"from_version": "2", "to_version": "4", "run_id": "r4", "load_seconds": 0.5},
        time.time_ns() - 5 * 10**9,
        {"model_name": "spam-classifier", "event": "switch"},
    )


@dataclass
class Rendered:
    charts: dict[str, tuple[int, int]]  # panel -> (data-points, coloured canvas pixels)
    drift_features: list[str]
    events: int
    events_text: str


def read_panels(page: Page) -> Rendered:
    charts = {}
    for name in PANELS:
        section = page.query_selector(f"#panel-{name}")
        assert section is not None
        points = int(section.get_attribute("data-points") or 0)
        charts[name] = (points, int(page.evaluate(COLOURED_PIXELS_JS, section)))
    return Rendered(
        charts=charts,
        drift_features=page.eval_on_selector_all(
            "#panel-drift .features li", "items => items.map(li => li.textContent)"
        ),
        events=int(page.get_attribute("#panel-model_events", "data-events") or 0),
        events_text=page.inner_text("#panel-model_events .events"),
    )
