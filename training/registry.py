"""The model registry, MLflow 3 style: aliases ``production`` (serving), ``previous`` (rollback) and
``challenger`` (scored in shadow beside production).

Stages are deprecated and never used. Every change of ``production`` is recorded as version tags:
``gate.*`` on the version a decision was about, ``gate.challenge.v<N>`` on the champion it faced
(``live.*`` and ``live.challenge.v<N>`` for decisions on live evidence), ``manual.*`` on a version
promoted past the gate, and in the production history that rollback reads
(``fireman.common.production_history``).
"""

from __future__ import annotations

import getpass
import json
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from fireman.common import production_history
from fireman.common.errors import UserError
from fireman.common.model_registry import ModelVersion, RegistryClient, RegistryError
from fireman.common.settings import MlflowSettings

KEY_METRICS = ("f1", "roc_auc", "accuracy")
DATA_TAGS = ("data_source", "data_since", "data_until", "data_rows")


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def actor() -> str:
    """Who is acting: ``FIREMAN_ACTOR`` (e.g. ``airflow:retrain``) or the OS user."""
    if name := os.environ.get("FIREMAN_ACTOR"):
        return name
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def resolve_production(client: RegistryClient, settings: MlflowSettings) -> tuple[str, str] | None:
    """``(version, run_id)`` of the serving model, or None before the first promotion."""
    version = client.version_by_alias(settings.model_name, settings.production_alias)
    return None if version is None else (str(version.version), str(version.run_id))


def get_version(client: RegistryClient, name: str, version: str) -> ModelVersion:
    if not str(version).isdigit():
        raise UserError(f"unknown version {version!r} of model {name!r}: versions are numbers")
    found = client.version(name, str(version))
    if found is None:
        raise UserError(f"unknown version {version} of registered model {name!r}")
    return found


def set_tags(client: RegistryClient, name: str, version: str, tags: dict[str, Any]) -> None:
    for key, value in tags.items():
        client.set_version_tag(name, str(version), key, str(value))


def record_decision(
    client: RegistryClient,
    name: str,
    challenger: str,
    champion: str | None,
    decision: str,
    reason: str,
    metrics: dict[str, Any],
    by: str | None = None,
    prefix: str = "gate",
) -> None:
    """Tag both versions with what was compared, the outcome, why and when.

    ``prefix`` names the evidence: ``gate`` (the hold-out) or ``live`` (shadow predictions), so a
    live decision keeps the hold-out's record beside it.
    """
    when = now_iso()
    record = {"decision": decision, "reason": reason, "time": when, "metrics": metrics}
    tags = {
        f"{prefix}.decision": decision,
        f"{prefix}.reason": reason,
        f"{prefix}.time": when,
        f"{prefix}.compared_with": champion or "none",
        f"{prefix}.metrics": json.dumps(metrics, sort_keys=True),
    }
    if by:
        tags[f"{prefix}.by"] = by
        record["by"] = by
    set_tags(client, name, challenger, tags)
    if champion is not None and champion != challenger:
        set_tags(
            client, name, champion, {f"{prefix}.challenge.v{challenger}": json.dumps(record, sort_keys=True)}
        )


def make_challenger(client: RegistryClient, settings: MlflowSettings, version: str) -> None:
    """Point the ``challenger`` alias at ``version``: the scorer scores it in shadow beside production."""
    client.set_alias(settings.model_name, settings.challenger_alias, str(version))


def move_production(
    client: RegistryClient, settings: MlflowSettings, version: str, how: str = "gate", by: str | None = None
) -> str | None:
    """Point ``production`` at ``version`` and record the move; returns the version it replaced."""
    old = production_history.push(client, settings, str(version), by or actor(), how)
    if old is not None:
        replaced = {"gate.replaced_by": version, "gate.replaced_time": now_iso()}
        set_tags(client, settings.model_name, old, replaced)
    return old


@dataclass(frozen=True)
class AliasChange:
    production: str
    previous: str | None
    replaced: str | None
    note: str = ""


def promote_manually(client: RegistryClient, settings: MlflowSettings, version: str, by: str) -> AliasChange:
    """``fireman promote``: bypass the gate. The version keeps its ``gate.*`` evidence; ``manual.*``
    says who promoted it, when, and from which version."""
    name = settings.model_name
    get_version(client, name, version)
    champion = production_history.production_version(client, settings)
    if champion == str(version):
        raise UserError(f"version {version} of {name!r} is already {settings.production_alias}")
    production_history.tag_manual(client, name, str(version), by, now_iso(), champion)
    replaced = production_history.push(client, settings, str(version), by, "manual")
    return AliasChange(production=str(version), previous=replaced, replaced=replaced)


def rollback(client: RegistryClient, settings: MlflowSettings, by: str) -> AliasChange:
    """Restore the version that served immediately before the current one (see production_history)."""
    name = settings.model_name
    done = production_history.pop(client, settings, by)
    when = now_iso()
    set_tags(
        client,
        name,
        done.restored,
        {"rollback.restored_time": when, "rollback.by": by, "rollback.from": done.rolled_back},
    )
    set_tags(client, name, done.rolled_back, {"rollback.rolled_back_time": when, "rollback.by": by})
    previous = production_history.read(client, name)
    note = (
        f"v{done.rolled_back} had been production since {done.promoted_at} ({done.promoted_by}); "
        f"v{done.restored} served before it"
    )
    return AliasChange(
        production=done.restored,
        previous=previous[-2].version if len(previous) >= 2 else None,
        replaced=done.rolled_back,
        note=note,
    )


@dataclass(frozen=True)
class VersionRow:
    version: str
    aliases: list[str]
    run_id: str
    created: str
    metrics: dict[str, float]
    data: dict[str, str]
    decision: str
    manual: dict[str, str]
    live: str = ""  # the decision on live evidence, if any (``live.decision``)


def list_versions(client: RegistryClient, settings: MlflowSettings) -> list[VersionRow]:
    name = settings.model_name
    try:
        versions = client.search_versions(f"name = '{name}'")
    except RegistryError as exc:
        raise UserError(f"could not list versions of {name!r}: {exc}") from exc
    # Search leaves ``aliases`` empty; the registered model has the authoritative map.
    by_version: dict[str, list[str]] = {}
    model = client.registered_model(name) if versions else None
    for alias, number in (model.aliases if model is not None else {}).items():
        by_version.setdefault(number, []).append(alias)
    rows = []
    for version in sorted(versions, key=lambda v: int(v.version)):
        run_metrics = (client.run_metrics(version.run_id) if version.run_id else None) or {}
        metrics = {key: run_metrics[key] for key in KEY_METRICS if key in run_metrics}
        tags = version.tags
        rows.append(
            VersionRow(
                version=str(version.version),
                aliases=sorted(by_version.get(str(version.version), [])),
                run_id=version.run_id or "",
                created=datetime.fromtimestamp(version.creation_timestamp / 1000, UTC).isoformat(
                    timespec="seconds"
                ),
                metrics=metrics,
                data={key: tags.get(key, "") for key in DATA_TAGS},
                decision=tags.get("gate.decision", ""),
                manual={k.removeprefix("manual."): v for k, v in tags.items() if k.startswith("manual.")},
                live=tags.get("live.decision", ""),
            )
        )
    return rows
