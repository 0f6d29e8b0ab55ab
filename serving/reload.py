"""The hot-reload watcher: polls a registry alias, loads and checks a new version off the hot path.

The scorer takes a checked model with ``take_pending`` between two batches, and ``fireman serve``
between two model calls, so a batch or a request is always scored by exactly one version. One watcher
per alias:

- ``production`` (the default): refusals are logged and handed to ``emit`` (the scorer writes them to
  ``model_events``) once per version; every version seen is recorded in the production history
  rollback reads. A missing alias is a warning: nothing can be served.
- any other alias (the challenger, scored in shadow): loads and refusals are logged only, so
  ``model_events`` and the production history stay about production. A missing alias is normal
  (shadow scoring off, logged once at INFO). When the alias goes away, or moves to a version that
  cannot serve, the loaded version is retired: ``take_retired`` tells the scorer, between two batches,
  to stop scoring it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from fireman.common import production_history
from fireman.common.influx import Point
from fireman.common.measurements import MODEL_EVENTS
from fireman.common.model import AliasTarget, ModelRefused, Registry, ServingModel
from fireman.common.model_registry import RegistryError

log = logging.getLogger(__name__)


def model_event(kind: str, model_name: str, fields: dict[str, float | int | str]) -> Point:
    return Point(
        MODEL_EVENTS.name,
        fields=fields,
        time_ns=time.time_ns(),
        tags={"model_name": model_name, "event": kind},
    )


def switch_message(model: ServingModel, previous: ServingModel | None) -> str:
    """What the scorer and fireman serve log when a version starts serving."""
    return (
        f"serving {model.lineage.model_name} version {model.version} (run {model.lineage.run_id}), "
        f"loaded and checked in {model.load_seconds:.2f} s"
        + (f", replacing version {previous.version}" if previous else "")
    )


class ModelWatcher:
    def __init__(
        self,
        registry: Registry,
        interval_s: float,
        emit: Callable[[Point], None],
        observer: str = "the scorer",
        waiting: str = "waits without consuming",
        alias: str | None = None,
    ) -> None:
        # Who is watching, in the logs and in the production history (``seen by the scorer``), and what
        # it does while there is no production model yet.
        self.observer = observer
        self.waiting = waiting
        self.registry = registry
        self.interval_s = interval_s
        self._emit = emit
        self.alias = alias or registry.settings.production_alias
        self.production = self.alias == registry.settings.production_alias
        self._halt = threading.Event()
        self._lock = threading.Lock()
        self._pending: ServingModel | None = None
        self._retired = False
        self._refused: str | None = None
        self._missing_logged = False
        self._observed: str | None = None
        self.current_version: str | None = None
        self._thread: threading.Thread | None = None

    def wait_for_first(self, stop: threading.Event) -> ServingModel | None:
        """Block until the alias names a servable version (None if stopped first); never consumes."""
        while not stop.is_set():
            model = self.check()
            if model is not None:
                return model
            stop.wait(self.interval_s)
        return None

    def check(self) -> ServingModel | None:
        """One look at the alias; a new, servable version is returned (and not yet in use)."""
        try:
            target = self.registry.by_alias(self.alias)
        except RegistryError as exc:
            log.warning(
                "could not read the model registry at %s: %s", self.registry.settings.tracking_uri, exc
            )
            return None
        if target is None:
            if not self._missing_logged:
                self._log_missing()
                self._missing_logged = True
            if not self.production:
                self._retire()
            return None
        self._missing_logged = False
        if self.production:
            self._observe(target.version)
        with self._lock:  # against take_pending, which moves the pending version into use
            pending = self._pending.version if self._pending is not None else None
            if target.version == self.current_version and pending is not None:
                # The alias moved and came back before anyone took the version it moved to: taking
                # that one now would serve a version the alias no longer names.
                log.info(
                    "alias %r is back at version %s: version %s, loaded but never used, is dropped",
                    self.alias,
                    target.version,
                    pending,
                )
                self._pending = None
        if target.version in (self.current_version, pending, self._refused):
            return None
        model = self._load(target)
        if model is None and not self.production:
            self._retire()  # the alias names a version that cannot serve: the old one is no challenger
        return model

    def _log_missing(self) -> None:
        settings = self.registry.settings
        if self.production:
            what = "keeps serving" if self.current_version else self.waiting
            log.warning(
                "no model in production: registered model %r has no alias %r; %s %s "
                "(train one with `fireman train`)",
                settings.model_name,
                self.alias,
                self.observer,
                what,
            )
        else:
            log.info(
                "registered model %r has no alias %r: no shadow scoring%s",
                settings.model_name,
                self.alias,
                f" (version {self.current_version} retired)" if self.current_version else "",
            )

    def _retire(self) -> None:
        """The version in use (or about to be) no longer holds the alias; the scorer is told once."""
        with self._lock:
            self._pending = None
            if self.current_version is not None:
                self._retired = True

    def _observe(self, version: str) -> None:
        """Record an alias move made outside fireman (the MLflow UI) in the history rollback reads."""
        if version == self._observed:
            return
        try:
            production_history.observe(self.registry.client, self.registry.settings, version, self.observer)
        except RegistryError as exc:
            log.warning("could not record production version %s in the registry: %s", version, exc)
            return
        self._observed = version

    def _load(self, target: AliasTarget) -> ServingModel | None:
        log.info(
            "loading %s version %s (run %s, alias %r)", target.name, target.version, target.run_id, self.alias
        )
        started = time.perf_counter()
        try:
            return self.registry.load(target)
        except ModelRefused as exc:
            self._refused = target.version
            if not self.production:
                log.warning(
                    "refused %s version %s (alias %r): %s; no shadow scoring",
                    target.name,
                    target.version,
                    self.alias,
                    exc,
                )
                return None
            log.error(
                "refused %s version %s: %s; still serving version %s",
                target.name,
                target.version,
                exc,
                self.current_version or "none",
            )
            self._emit(
                model_event(
                    "refused",
                    target.name,
                    {
                        "from_version": self.current_version or "",
                        "to_version": target.version,
                        "reason": str(exc)[:1000],
                        "load_seconds": time.perf_counter() - started,
                    },
                )
            )
            return None

    def start(self, current_version: str | None) -> None:
        self.current_version = current_version
        self._thread = threading.Thread(target=self._run, name="model-watcher", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        # Polls on while a loaded version waits to be taken (fireman serve takes it at the next
        # request, which may be minutes away): the version taken is the one the alias names now.
        while not self._halt.wait(self.interval_s):
            model = self.check()
            if model is None:
                continue
            with self._lock:
                stale, self._pending = self._pending, model
            if stale is not None:
                log.info(
                    "version %s replaces version %s (alias %r), which was loaded but never used",
                    model.version,
                    stale.version,
                    self.alias,
                )

    def take_pending(self) -> ServingModel | None:
        with self._lock:
            model, self._pending = self._pending, None
            if model is not None:
                self.current_version = model.version
        return model

    def take_retired(self) -> bool:
        """True once after the version in use lost the alias (never for production: it keeps serving).

        Take it before ``take_pending``: an alias removed and then set again retires the old version
        and offers the new one.
        """
        with self._lock:
            retired, self._retired = self._retired, False
            if retired:
                self.current_version = None
        return retired

    def stop(self, timeout_s: float = 30.0) -> None:
        self._halt.set()
        if self._thread is not None:
            self._thread.join(timeout=timeout_s)
