"""The user's journey through the MLflow UI, in a real browser: move ``production`` with the aliases
editor, watch the scorer follow, then ``fireman rollback`` restores the version that served before.

Everything runs at its defaults (the scorer polls the registry every 10 s), against the real MLflow
server, Kafka and InfluxDB. Version 2 was promoted with ``fireman promote``, so ``previous`` names
version 1; a person then moves the alias to version 3 in the UI, which fireman cannot hook. Rollback
must restore version 2, the version that actually served before version 3, not ``previous``'s stale 1.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page, expect, sync_playwright

from fireman.bench.workload import make_events, produce_events, spambase_rows
from fireman.common import mlflow_uri, production_history
from fireman.common.model_registry import RegistryClient
from fireman.common.schema import FEATURE_NAMES
from fireman.common.settings import DatasetSettings, InfluxSettings, KafkaSettings, MlflowSettings
from tests.integration.mlflow_ui import alias_tag, set_alias_in_ui, version_page_url
from tests.integration.test_dashboard_browser import CHROMIUM, CHROMIUM_ARGS
from tests.support.scoring import fit_pipeline, register_model, running, scorer_settings, wait_for

pytestmark = pytest.mark.integration


@pytest.fixture
def page() -> Iterator[Page]:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser.new_page(viewport={"width": 1400, "height": 1000})
        finally:
            browser.close()


def fireman(names: MlflowSettings, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "FIREMAN_MLFLOW_TRACKING_URI": names.tracking_uri,
        "FIREMAN_MLFLOW_MODEL_NAME": names.model_name,
        "FIREMAN_MLFLOW_EXPERIMENT": names.experiment,
    }
    return subprocess.run(
        [sys.executable, "-m", "fireman.cli", *args], env=env, capture_output=True, text=True, timeout=120
    )


def test_a_promotion_in_the_mlflow_ui_is_served_and_rollback_restores_the_version_served_before(
    kafka_topics: KafkaSettings,
    influx_db: InfluxSettings,
    mlflow_names: MlflowSettings,
    dataset_settings: DatasetSettings,
    page: Page,
) -> None:
    rows = spambase_rows(dataset_settings, 600)
    features = rows[list(FEATURE_NAMES)].head(20)
    model: Any = fit_pipeline(dataset_settings, n_estimators=10)
    v1 = register_model(mlflow_names, model, features, promote=False)
    v2 = register_model(mlflow_names, model, features, promote=False)
    v3 = register_model(mlflow_names, model, features, promote=False)
    assert fireman(mlflow_names, "promote", v1, "--by", "ops").returncode == 0
    promoted = fireman(mlflow_names, "promote", v2, "--by", "ops")
    assert promoted.returncode == 0, promoted.stderr
    client = mlflow_uri.client(mlflow_names)
    assert client.get_registered_model(mlflow_names.model_name).aliases["previous"] == v1

    def feed(part: int) -> None:
        produce_events(kafka_topics, make_events(rows.iloc[part * 200 : (part + 1) * 200]))

    with running(scorer_settings(kafka_topics, influx_db, mlflow_names)) as scorer:
        feed(0)
        assert wait_for(lambda: scorer.stats.model_version == v2 and scorer.stats.committed >= 200, 60)

        set_alias_in_ui(page, mlflow_names.tracking_uri, mlflow_names.model_name, v3, "production")
        feed(1)
        # Within the default reload interval the scorer serves the version the person chose.
        assert wait_for(lambda: scorer.stats.model_version == v3 and scorer.stats.committed >= 400, 60)
        with RegistryClient(mlflow_names) as fireman_client:
            history = production_history.read(fireman_client, mlflow_names.model_name)
        assert [entry.version for entry in history] == [v1, v2, v3]
        assert "seen by the scorer" in history[-1].by
        tags = client.get_model_version(mlflow_names.model_name, v3).tags
        assert tags["manual.from_version"] == v2 and "MLflow UI" in tags["manual.by"]

        rolled = fireman(mlflow_names, "rollback", "--by", "ops")
        assert rolled.returncode == 0, rolled.stderr
        assert f"production -> v{v2} (rolled back from v{v3})" in rolled.stdout, rolled.stdout
        feed(2)
        assert wait_for(lambda: scorer.stats.model_version == v2 and scorer.stats.committed >= 600, 60)

    # The UI shows the rollback too: version 2 holds `production` again, beside its manual record.
    page.goto(version_page_url(mlflow_names.tracking_uri, mlflow_names.model_name, v2))
    main = page.get_by_role("main")
    expect(alias_tag(main, "production")).to_be_visible(timeout=30_000)
    expect(main.get_by_text("manual.from_version")).to_be_visible(timeout=30_000)
    shots = Path(os.environ.get("FIREMAN_HOME", ".fireman")) / "screenshots"
    shots.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(shots / "mlflow-after-rollback.png"), full_page=True)
