"""Drive the Airflow 3 web UI (the React UI, SimpleAuthManager) with Playwright the way a person does.

``log_in`` signs in on the SimpleAuthManager page (``/auth/login``: "Username", "Password", "Sign in").
``trigger_with_defaults`` opens a DAG's page, clicks "Trigger" in its header, leaves the "Trigger Dag"
dialog as it opens and clicks its "Trigger" button; the UI then shows the new run's page, whose URL
gives the run id.

Quirks of the Airflow 3.2 UI this relies on:

* The first page of a browser without a session redirects to ``/auth/login?next=...``; after signing in,
  the login page sends the browser back there. The session is the ``_token`` cookie.
* The DAG header's trigger button is named "Trigger Dag" (its ``aria-label``) though it reads "Trigger";
  the dialog's submit button is the footer's "Trigger" (``data-testid="trigger-dag-submit"``).
* The dialog's defaults: "Single Run", "Logical Date" = now (the browser's clock, to the second), the
  params form ("Run Parameters") filled with each param's default, a null default left as an empty
  box, and "Advanced Options" (Run ID, Partition key, Dag Run Note, Configuration JSON) collapsed.
  For a paused DAG it also has "Unpause <dag> on trigger", ticked: submitting as it is unpauses it.
* The DAG page's trigger button is there before the DAG's details have loaded; a dialog opened then
  has no params form and submits an empty conf. The details (the same cached query the dialog reads)
  also render the header's own buttons ("Favorite Dag", ...), so those are waited for first. The
  footer button is disabled while the form is invalid or the trigger is pending.
* A refused sign-in shows "401 Unauthorized" / "Invalid credentials" in a box with no ARIA role.
* A successful trigger shows a "Dag Run Triggered" toast (role ``status``) and, when the dialog was
  opened from the DAG's own page, navigates to ``/dags/<dag_id>/runs/<run_id>`` (the run id is not
  URL-encoded there); a failed one shows a "Failed to Trigger Dag" toast (per the UI's source).
  The toast region can be rendered twice during that navigation, hence ``.first`` on toasts.
* The dialog is taller than a 1000 px viewport and scrolls inside a fixed layer, so a full-page
  screenshot does not show all of it: ``screenshot`` grows the viewport for an element shot.
"""

from __future__ import annotations

import re
from urllib.parse import quote, unquote, urlsplit

from playwright.sync_api import Locator, Page, expect

_HTTP_ERROR = re.compile(r"^[45]\d\d ")
_FAVORITE_BUTTON = re.compile(r"^(Favorite|Unfavorite) Dag$")
_TRIGGER_DIALOG_TITLE = re.compile(r"^Trigger Dag - ")
_TRIGGERED = "Dag Run Triggered"
_TRIGGER_FAILED = "Failed to Trigger Dag"


def _base(base_url: str) -> str:
    return base_url.rstrip("/")


def signed_in_marker(page: Page) -> Locator:
    """The "Dags" entry of the main navigation, which the UI shows only to a signed-in user."""
    return page.get_by_role("link", name="Dags", exact=True)


def log_in(page: Page, base_url: str, username: str, password: str, timeout_ms: float = 60_000) -> None:
    """Open the UI and sign in with the SimpleAuthManager form; returns once the UI's navigation shows.

    A page that already has a session (the UI opens without asking) is left signed in as it is. Raises
    ``RuntimeError`` with the login page's error when it refuses the credentials.
    """
    page.goto(f"{_base(base_url)}/", timeout=timeout_ms)
    username_box = page.get_by_role("textbox", name="Username", exact=True)
    signed_in = signed_in_marker(page)
    expect(username_box.or_(signed_in).first).to_be_visible(timeout=timeout_ms)
    if signed_in.is_visible():
        return

    username_box.fill(username, timeout=timeout_ms)
    page.get_by_role("textbox", name="Password", exact=True).fill(password, timeout=timeout_ms)
    # Enabled once both fields hold something.
    page.get_by_role("button", name="Sign in", exact=True).click(timeout=timeout_ms)
    # The login page's error box has no role: its text starts with the HTTP status, e.g.
    # "401 Unauthorized" then "Invalid credentials".
    refused = page.get_by_text(_HTTP_ERROR)
    expect(signed_in.or_(refused).first).to_be_visible(timeout=timeout_ms)
    if not signed_in.is_visible():
        raise RuntimeError(
            f"the Airflow UI refused to sign in {username!r}: {' '.join(refused.first.inner_text().split())}"
        )


def trigger_with_defaults(
    page: Page,
    base_url: str,
    dag_id: str,
    timeout_ms: float = 60_000,
    *,
    form_screenshot: str | None = None,
) -> str:
    """Open the DAG's page, click Trigger, leave every form field at its default, submit; return the new
    dag_run_id.

    The page must be signed in (``log_in``). ``form_screenshot``: a path for a picture of the whole
    dialog just before submitting. Returns once the new run's page shows the run; raises
    ``RuntimeError`` with the UI's message when the trigger fails.
    """
    dag_path = f"/dags/{quote(dag_id, safe='')}"
    page.goto(f"{_base(base_url)}{dag_path}", timeout=timeout_ms)
    opener = page.get_by_role("button", name="Trigger Dag", exact=True)
    not_found = page.get_by_text("Dag Not Found", exact=True)
    expect(opener.or_(not_found).first).to_be_visible(timeout=timeout_ms)
    if not_found.is_visible():
        raise RuntimeError(f"the Airflow UI has no DAG {dag_id!r}")
    # The header's own buttons render from the DAG's details, which the dialog's params form reads
    # too (the same cached query): the header's trigger button is there before them, and a dialog
    # opened then has no params form, so it would send an empty conf.
    expect(page.get_by_role("button", name=_FAVORITE_BUTTON)).to_be_visible(timeout=timeout_ms)
    expect(opener).to_be_enabled(timeout=timeout_ms)
    opener.click(timeout=timeout_ms)

    dialog = page.get_by_role("dialog").filter(has=page.get_by_role("heading", name=_TRIGGER_DIALOG_TITLE))
    expect(dialog).to_be_visible(timeout=timeout_ms)
    expect(dialog.get_by_role("radio", name=re.compile(r"^Single Run\b"))).to_be_checked(timeout=timeout_ms)
    # The last section of the form; the params form ("Run Parameters"), when the DAG has params,
    # renders before it from the same DAG details.
    expect(dialog.get_by_role("button", name="Advanced Options", exact=True)).to_be_visible(
        timeout=timeout_ms
    )
    submit = dialog.get_by_role("contentinfo").get_by_role("button", name="Trigger", exact=True)
    expect(submit).to_be_enabled(timeout=timeout_ms)
    if form_screenshot:
        screenshot(dialog, form_screenshot)

    submit.click(timeout=timeout_ms)
    triggered = page.get_by_role("status", name=_TRIGGERED, exact=True)
    failed = page.get_by_role("status", name=_TRIGGER_FAILED, exact=True)
    expect(triggered.or_(failed).first).to_be_visible(timeout=timeout_ms)
    if not triggered.first.is_visible():
        raise RuntimeError(f"the Airflow UI did not trigger {dag_id}: {failed.first.inner_text()}")

    page.wait_for_url(re.compile(rf"{re.escape(dag_path)}/runs/[^/?#]+"), timeout=timeout_ms)
    run_id = unquote(urlsplit(page.url).path.rsplit("/runs/", 1)[1])
    # The run page's title is the run id.
    expect(page.get_by_role("heading", name=run_id, exact=True)).to_be_visible(timeout=timeout_ms)
    return run_id


def screenshot(target: Page | Locator, path: str) -> None:
    """A page (all of it) or one element, e.g. a dialog, to a PNG file at `path`.

    For an element taller than the viewport (a dialog scrolling inside a fixed layer), the viewport is
    grown for the shot and set back afterwards.
    """
    if isinstance(target, Page):
        target.screenshot(path=path, full_page=True)
        return
    page = target.page
    viewport = page.viewport_size
    height = int(target.evaluate("element => element.scrollHeight"))
    if viewport is None or height <= viewport["height"]:
        target.screenshot(path=path)
        return
    page.set_viewport_size({"width": viewport["width"], "height": height + 100})
    try:
        target.screenshot(path=path)
    finally:
        page.set_viewport_size(viewport)
