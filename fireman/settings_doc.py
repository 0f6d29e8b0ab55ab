"""The README's configuration table, generated from the settings classes so it cannot drift from them."""

from __future__ import annotations

import importlib
import inspect
import sys
from collections.abc import Iterator
from pathlib import Path

from pydantic import AliasChoices
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings

# Modules that define settings classes, in the order the README lists them.
SETTINGS_MODULES = (
    "fireman.common.settings",
    "fireman.streaming.settings",
    "fireman.training.settings",
    "fireman.serving.settings",
    "fireman.monitoring.settings",
    "fireman.dashboard.settings",
    "fireman.training.retrain_trigger",
    "fireman.training.dag_tasks",
)
BEGIN = "<!-- settings-table:begin -->"
END = "<!-- settings-table:end -->"


def settings_classes() -> Iterator[type[BaseSettings]]:
    for module_name in SETTINGS_MODULES:
        module = importlib.import_module(module_name)
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if issubclass(cls, BaseSettings) and cls is not BaseSettings and cls.__module__ == module_name:
                yield cls


def env_name(cls: type[BaseSettings], name: str, field: FieldInfo) -> str:
    if isinstance(field.alias, str):
        return field.alias
    if isinstance(field.validation_alias, str):
        return field.validation_alias
    choices = field.validation_alias.choices if isinstance(field.validation_alias, AliasChoices) else []
    if choices and isinstance(choices[0], str):
        return choices[0]
    return f"{cls.model_config.get('env_prefix', '')}{name}".upper()


def _is_nested(field: FieldInfo) -> bool:
    annotation = field.annotation
    return inspect.isclass(annotation) and issubclass(annotation, BaseSettings)


def _default(field: FieldInfo) -> str:
    if field.default_factory is not None:
        return "(computed)"
    return "unset" if field.default is None else f"`{field.default}`"


def markdown_table() -> str:
    rows = ["| variable | default | used by | meaning |", "| --- | --- | --- | --- |"]
    seen: set[str] = set()
    for cls in settings_classes():
        for name, field in cls.model_fields.items():
            if _is_nested(field):
                continue
            variable = env_name(cls, name, field)
            if variable in seen:
                continue
            seen.add(variable)
            meaning = (field.description or "").replace("|", "\\|")
            rows.append(f"| `{variable}` | {_default(field)} | {cls.__name__} | {meaning} |")
    return "\n".join(rows)


def readme_section() -> str:
    return f"{BEGIN}\n{markdown_table()}\n{END}"


def update_readme(path: Path) -> bool:
    """Rewrite the table between the markers; True when the file changed."""
    text = path.read_text()
    start, end = text.index(BEGIN), text.index(END) + len(END)
    updated = text[:start] + readme_section() + text[end:]
    if updated != text:
        path.write_text(updated)
    return updated != text


if __name__ == "__main__":
    update_readme(Path(sys.argv[1] if len(sys.argv) > 1 else "README.md"))
