"""Drive the MLflow 3 web UI with Playwright the way a person does.

``set_alias_in_ui`` opens a model version page (``#/models/<name>/versions/<version>``) and gives
the version an alias with the UI's aliases editor: the pencil ("Edit aliases") or "Add" button next
to "Aliases", the "Add/Edit alias for model version N" dialog, its tags box and "Save aliases".

Quirks of the MLflow 3 UI this relies on:

* The version page renders as soon as the version loads, but its aliases come from the registered
  model, fetched separately (``GET .../registered-models/get?name=``). Until that lands the page
  shows "Aliases: Add" even for a version that has aliases, and an editor opened then starts from
  no aliases. So the helper waits for that response and for the page to show what it holds.
* Moving between versions by changing only the URL hash does not refetch the registered model, so
  every call loads a fresh document.
* The editor has no confirmation step. When the alias belongs to another version, the dialog shows
  an info alert (``The "a" alias is also being used on version 1. Adding it to this version will
  remove it from version 1.``) and saving moves the alias; the helper waits for that alert.
* Pressing Enter on an alias the version already has removes it from the draft, and "Save aliases"
  stays disabled while the draft equals the version's aliases: a version that already has the alias
  is left alone.
* The tags box lower-cases aliases and drops every character outside ``[A-Za-z0-9_-]``, so only
  aliases it keeps as typed are accepted here.
* A failed save keeps the dialog open with an error alert, whose text is raised here.
* MLflow 3.17's version page fails to render for model names containing ``%``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from urllib.parse import parse_qs, quote, urlsplit

from playwright.sync_api import Locator, Page, Response, expect

# The tags box keeps ``alias.replace(/[^\w-]/g, "").toLowerCase()``, cut to 255 characters.
_ALIAS_THE_UI_KEEPS = re.compile(r"[a-z0-9_-]{1,255}")
# The dialog's only non-error alert: the alias moves from another version.
_ALIAS_TAKEN_NOTICE = re.compile(r"alias is also being used on version")


def version_page_url(base_url: str, model_name: str, version: str) -> str:
    """The model version page, as the UI links it (``encodeURIComponent`` of the model name)."""
    return f"{base_url.rstrip('/')}/#/models/{quote(model_name, safe='')}/versions/{version}"


def alias_tag(scope: Page | Locator, alias: str) -> Locator:
    """An alias tag (``@ alias``): a ``status`` element named by its ``title``, the alias."""
    return scope.get_by_role("status", name=alias, exact=True)


def set_alias_in_ui(
    page: Page, base_url: str, model_name: str, version: str, alias: str, timeout_ms: float = 30_000
) -> None:
    """Open the model version page in the MLflow UI and give `version` the alias `alias` with the aliases
    editor.

    The alias moves there when another version holds it. Returns once the version page shows the
    alias; raises ``ValueError`` for an alias the UI would rewrite and ``RuntimeError`` when the UI
    cannot load the model or refuses the change (with the dialog's error alerts).
    """
    if not _ALIAS_THE_UI_KEEPS.fullmatch(alias):
        raise ValueError(f"the MLflow UI would not keep the alias {alias!r} as typed")
    version = str(version)
    what = f"alias {alias!r} for {model_name} v{version}"

    page.goto("about:blank")
    with page.expect_response(_registered_model_get(model_name), timeout=timeout_ms) as loaded:
        page.goto(version_page_url(base_url, model_name, version), timeout=timeout_ms)
    response = loaded.value
    if not response.ok:
        raise RuntimeError(f"the MLflow UI could not load {model_name}: {response.status} {response.text()}")
    holders = {
        str(entry["alias"]): str(entry["version"])
        for entry in response.json()["registered_model"].get("aliases", [])
    }
    own_aliases = sorted(name for name, holder in holders.items() if holder == version)

    main = page.get_by_role("main")
    expect(main.get_by_role("heading", name=f"Version {version}", exact=True)).to_be_visible(
        timeout=timeout_ms
    )
    # The aliases of the version, as just fetched, then the button beside them: "Add" (title
    # "Add aliases") without aliases, a pencil titled "Edit aliases" with some.
    for name in own_aliases:
        expect(alias_tag(main, name)).to_be_visible(timeout=timeout_ms)
    opener = main.get_by_title("Edit aliases" if own_aliases else "Add aliases", exact=True)
    expect(opener).to_be_visible(timeout=timeout_ms)
    if alias in own_aliases:
        return

    opener.click(timeout=timeout_ms)
    dialog = page.get_by_role("dialog", name=f"Add/Edit alias for model version {version}", exact=True)
    expect(dialog).to_be_visible(timeout=timeout_ms)
    tags_box = dialog.get_by_role("combobox")
    tags_box.fill(alias, timeout=timeout_ms)
    tags_box.press("Enter", timeout=timeout_ms)
    expect(alias_tag(dialog, alias)).to_be_visible(timeout=timeout_ms)
    # No wait for the "also being used on version N" notice: the UI builds it from its list of
    # registered models (the first 100 by name), so on a server with more models it may not show.
    # It is informational; saving moves the alias either way, and the caller checks the outcome.
    # Error alerts: too many aliases on the version (before saving), or the save failed (after).
    problems = dialog.get_by_role("alert").filter(has_not_text=_ALIAS_TAKEN_NOTICE)
    _raise_on(problems, what)

    dialog.get_by_role("button", name="Save aliases", exact=True).click(timeout=timeout_ms)
    saved = alias_tag(main, alias)
    expect(saved.or_(problems).first).to_be_visible(timeout=timeout_ms)
    _raise_on(problems, what)
    expect(dialog).to_be_hidden(timeout=timeout_ms)
    expect(saved).to_be_visible(timeout=timeout_ms)


def _registered_model_get(model_name: str) -> Callable[[Response], bool]:
    """Matches the UI's fetch of the registered model, which carries the aliases of all versions."""

    def matches(response: Response) -> bool:
        url = urlsplit(response.url)
        return (
            response.request.method == "GET"
            and url.path.endswith("/registered-models/get")
            and parse_qs(url.query).get("name") == [model_name]
        )

    return matches


def _raise_on(problems: Locator, what: str) -> None:
    if problems.count():
        raise RuntimeError(f"the MLflow UI refused {what}: " + "; ".join(problems.all_inner_texts()))
