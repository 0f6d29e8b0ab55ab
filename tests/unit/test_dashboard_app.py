"""Dashboard pieces that need no server: buckets, time bounds, series alignment, settings, vendored files."""

from __future__ import annotations

import hashlib
import re
import subprocess
import sys
from pathlib import Path

import pytest

from fireman.dashboard.queries import Window, align, bucket_for, series_panel
from fireman.dashboard.settings import DashboardSettings

VENDOR = Path(__file__).resolve().parents[2] / "fireman" / "dashboard" / "static" / "vendor"


@pytest.mark.parametrize(
    ("window_s", "bucket_s"), [(60, 1), (300, 2), (1800, 10), (3600, 30), (21600, 120), (86400, 600)]
)
def test_bucket_keeps_charts_under_max_points(window_s: int, bucket_s: int) -> None:
    assert bucket_for(window_s, 180) == bucket_s
    assert window_s / bucket_s <= 180


def test_rates_stop_at_the_last_complete_bucket() -> None:
    window = Window.ending(now_s=1_000_007.5, window_s=1800, max_points=180)
    assert window.bucket_s == 10
    assert window.start_s == 998_200
    assert window.complete_end_s == 1_000_000
    assert window.where(complete_only=True) == "time >= 998200s AND time < 1000000s"
    assert window.where() == "time >= 998200s AND time < 1000008s"


def test_series_sampled_at_different_times_share_one_axis() -> None:
    x, series = align({"v1": [(10.0, 0.9), (20.0, 0.8)], "v2": [(20.0, 0.95), (30.0, 0.97)]})
    assert x == [10.0, 20.0, 30.0]
    assert series == {"v1": [0.9, 0.8, None], "v2": [None, 0.95, 0.97]}
    assert series_panel(x, series)["points"] == 4


def test_lag_follows_the_consumers_group_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FIREMAN_SCORER_GROUP_ID", "scorer-b")
    monkeypatch.setenv("FIREMAN_SINK_GROUP_ID", "sink-b")
    monkeypatch.setenv("FIREMAN_KAFKA_TOPIC_MEASUREMENTS", "m")
    groups = DashboardSettings().consumer_groups()
    assert groups["scorer-b"] == ["m"]
    assert groups["sink-b"] == ["m", "labels"]
    assert groups["fireman-monitor"] == ["m", "predictions", "labels"]
    assert DashboardSettings().port == 8050


def test_bad_option_is_a_one_line_error_with_exit_code_2() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "fireman.cli", "dashboard", "--window", "5"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "window_s" in result.stderr
    assert "Traceback" not in result.stderr


def test_vendored_files_are_the_recorded_release() -> None:
    readme = (VENDOR / "README.md").read_text()
    recorded = dict(re.findall(r"- `([^`]+)` sha256 `([0-9a-f]{64})`", readme))
    assert set(recorded) == {"uPlot.iife.min.js", "uPlot.min.css"}
    for name, digest in recorded.items():
        assert hashlib.sha256((VENDOR / name).read_bytes()).hexdigest() == digest, name
    assert "MIT License" in (VENDOR / "uPlot.LICENSE").read_text()
