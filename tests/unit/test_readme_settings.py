"""The README's configuration table is the one the settings classes generate (`make docs` refreshes it)."""

from __future__ import annotations

from fireman.settings_doc import readme_section, settings_classes
from tests.conftest import REPO_ROOT


def test_readme_table_matches_the_settings_classes() -> None:
    readme = (REPO_ROOT / "README.md").read_text()
    assert readme_section() in readme, "README's settings table is stale: run `make docs`"


def test_every_service_settings_class_is_documented() -> None:
    names = {cls.__name__ for cls in settings_classes()}
    for expected in (
        "KafkaSettings",
        "CollectorSettings",
        "TrainingSettings",
        "ScorerSettings",
        "MonitorSettings",
    ):
        assert expected in names
