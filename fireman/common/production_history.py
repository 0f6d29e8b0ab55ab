"""Which versions served, in order: the record ``fireman rollback`` reads, kept in the registry itself.

The ``production`` alias can move four ways: the retrain gate, ``fireman promote``, ``fireman
rollback``, and a person (the MLflow UI's aliases editor, or any MLflow client). The first three
record the move as they make it. Nobody can hook the fourth, so every fireman component that reads
the alias (the scorer on each reload poll, and the commands above before they act) *observes* it:
when the alias names another version than the record's newest entry, the move happened outside
fireman and is recorded then, with who saw it.

The record is a stack in one tag of the registered model (``fireman.production_history``, JSON):
a promotion pushes the new version, a rollback pops the current one, so rollback restores the version
that served immediately before the current one, and a second rollback goes one step further back
instead of re-deploying what was just rolled back. The ``previous`` alias is kept pointing at the
entry rollback would restore, so the MLflow UI shows it too. A version pushed or restored here stops
being the ``challenger`` (scored in shadow beside production). See docs/decisions.md.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from datetime import UTC, datetime

from fireman.common.errors import UserError
from fireman.common.model_registry import RegistryClient
from fireman.common.settings import MlflowSettings

HISTORY_TAG = "fireman.production_history"
# MLflow caps a tag value at 5,000 characters; the oldest entries go first.
MAX_TAG_CHARS = 5000
OUTSIDE = "outside fireman"


@dataclass(frozen=True)
class Entry:
    version: str
    time: str
    by: str
    how: str  # "gate", "manual", "observed" (moved outside fireman), "rollback"


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def parse(text: str | None) -> list[Entry]:
    if not text:
        return []
    try:
        raw = json.loads(text)
        return [Entry(str(e["version"]), str(e["time"]), str(e["by"]), str(e["how"])) for e in raw]
    except (ValueError, TypeError, KeyError) as exc:
        raise UserError(f"the registered model's {HISTORY_TAG} tag is not fireman's record: {exc}") from None


def render(entries: list[Entry]) -> str:
    kept = list(entries)
    while True:
        text = json.dumps([asdict(entry) for entry in kept], separators=(",", ":"))
        if len(text) <= MAX_TAG_CHARS or len(kept) <= 2:
            return text
        kept.pop(0)


def read(client: RegistryClient, name: str) -> list[Entry]:
    model = client.registered_model(name)
    return parse(model.tags.get(HISTORY_TAG)) if model is not None else []


def production_version(client: RegistryClient, settings: MlflowSettings) -> str | None:
    version = client.version_by_alias(settings.model_name, settings.production_alias)
    return str(version.version) if version is not None else None


def _save(client: RegistryClient, settings: MlflowSettings, entries: list[Entry]) -> None:
    name = settings.model_name
    client.set_model_tag(name, HISTORY_TAG, render(entries))
    if len(entries) >= 2:
        client.set_alias(name, settings.previous_alias, entries[-2].version)
        return
    model = client.registered_model(name)
    if model is not None and settings.previous_alias in model.aliases:
        client.delete_alias(name, settings.previous_alias)


def observe(client: RegistryClient, settings: MlflowSettings, version: str, seen_by: str) -> bool:
    """Record ``version`` as serving if the record does not end with it; True when it was news."""
    return _record_observed(client, settings, read(client, settings.model_name), version, seen_by)


def _record_observed(
    client: RegistryClient, settings: MlflowSettings, entries: list[Entry], version: str, seen_by: str
) -> bool:
    """Append ``version`` to ``entries`` (and save) unless it is the newest already.

    News means the alias was moved outside fireman: the version is tagged with that manual decision
    (who saw it, when, from which version), beside the gate's own tags, which stay as they were.
    """
    if entries and entries[-1].version == version:
        return False
    when = now_iso()
    by = f"{OUTSIDE} (e.g. the MLflow UI), seen by {seen_by}"
    prior = entries[-1].version if entries else None
    entries.append(Entry(version, when, by, "observed"))
    _save(client, settings, entries)
    if prior is not None:
        tag_manual(client, settings.model_name, version, by, when, prior)
    return True


def tag_manual(
    client: RegistryClient, name: str, version: str, by: str, when: str, prior: str | None
) -> None:
    """The record of a promotion that bypassed the gate; ``gate.*`` keeps the gate's own evidence."""
    for key, value in {"manual.by": by, "manual.time": when, "manual.from_version": prior or "none"}.items():
        client.set_version_tag(name, version, key, value)


def push(client: RegistryClient, settings: MlflowSettings, version: str, by: str, how: str) -> str | None:
    """Move ``production`` to ``version`` and record it; returns the version it replaced."""
    current = production_version(client, settings)
    entries = read(client, settings.model_name)
    if current is not None:
        _record_observed(client, settings, entries, current, seen_by=by)
    if current == version:
        return None
    client.set_alias(settings.model_name, settings.production_alias, version)
    entries.append(Entry(version, now_iso(), by, how))
    _save(client, settings, entries)
    _retire_challenger(client, settings, version)
    return current


def _retire_challenger(client: RegistryClient, settings: MlflowSettings, version: str) -> None:
    """A version fireman made production is no longer a challenger: scoring it in shadow beside
    itself would only double the scorer's work."""
    challenger = client.version_by_alias(settings.model_name, settings.challenger_alias)
    if challenger is not None and str(challenger.version) == version:
        client.delete_alias(settings.model_name, settings.challenger_alias)


@dataclass(frozen=True)
class Rollback:
    restored: str
    rolled_back: str
    promoted_at: str
    promoted_by: str


def pop(client: RegistryClient, settings: MlflowSettings, by: str) -> Rollback:
    """Move ``production`` back to the version that served before the current one, or refuse."""
    name = settings.model_name
    current = production_version(client, settings)
    if current is None:
        raise UserError(
            f"nothing to roll back: registered model {name!r} has no {settings.production_alias!r}"
        )
    entries = read(client, name)
    _record_observed(client, settings, entries, current, seen_by=by)
    if len(entries) < 2:
        raise UserError(
            f"cannot tell which version served before v{current} of {name!r}: its production history "
            f"({HISTORY_TAG}) starts with it. Choose one yourself with `fireman promote VERSION`."
        )
    top = entries.pop()
    restored = entries[-1].version
    client.set_alias(name, settings.production_alias, restored)
    _save(client, settings, entries)
    _retire_challenger(client, settings, restored)
    return Rollback(restored=restored, rolled_back=current, promoted_at=top.time, promoted_by=top.by)
