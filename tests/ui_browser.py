"""Playwright (Python) driving Debian's headless ``chromium`` through the Dagster UI.

The browser is the distribution's (``apt-get install chromium``): Playwright never downloads one here.
A fresh Dagster instance shows the "Join the Dagster community" dialog once: ``skip_community_dialog``
clicks "Skip". ``screenshot_on_failure`` saves a full-page PNG of the failing screen.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

CHROMIUM = Path("/usr/bin/chromium")
#: tall enough that the expanded lineage of the ten feature tables fits at a legible zoom
VIEWPORT = {"width": 1600, "height": 2000}


@contextmanager
def browser_page(default_timeout_ms: int = 30_000) -> Iterator:
    """A page of a fresh headless Chromium (closed on exit)."""
    from playwright.sync_api import sync_playwright

    if not CHROMIUM.exists():
        raise RuntimeError(f"{CHROMIUM} missing: apt-get install -y chromium (scripts/setup.sh installs it)")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=["--no-sandbox"])
        try:
            page = browser.new_context(viewport=VIEWPORT).new_page()
            page.set_default_timeout(default_timeout_ms)
            yield page
        finally:
            browser.close()


@contextmanager
def screenshot_on_failure(page, shots: Path, name: str) -> Iterator[None]:
    """On any exception inside the block, save ``shots/<name>.png`` and name it in the error.

    ``QP_UI_SCREENSHOTS=all`` saves the screen at the end of a passing block too (to look at the UI).
    """
    try:
        yield
        if os.environ.get("QP_UI_SCREENSHOTS") == "all":
            page.screenshot(path=str(shots / f"{name}.png"), full_page=True)
    except BaseException as exc:
        path = shots / f"{name}.png"
        try:
            page.screenshot(path=str(path), full_page=True)
            note = f"screenshot of the failing screen: {path} (url {page.url})"
        except Exception as shot_exc:  # the browser itself may be gone
            note = f"no screenshot: {shot_exc}"
        if hasattr(exc, "add_note"):
            exc.add_note(note)
        raise


def skip_community_dialog(page, base_url: str, timeout_ms: int = 20_000) -> bool:
    """Open the lineage page and click "Skip" on the "Join the Dagster community" dialog.

    A new instance shows it once (then remembers it), a moment after the first page has loaded. Settled
    here up front: popping up later it would close an open menu in the middle of a test step. Afterwards a
    locator handler clicks "Skip" should it still show up. Returns whether the dialog was seen.
    """
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    page.goto(f"{base_url}/asset-groups")
    dialog = page.get_by_role("dialog").filter(has_text="Join the Dagster community")
    try:
        dialog.get_by_role("button", name="Skip").click(timeout=timeout_ms)
        dialog.wait_for(state="hidden")
        seen = True
    except PlaywrightTimeout:
        seen = False
    page.add_locator_handler(dialog, lambda d: d.get_by_role("button", name="Skip").click())
    return seen


def open_materialize_dialog(page):
    """The "Materialize all" launch dialog of the lineage page (returns the dialog locator)."""
    page.get_by_role("button", name=re.compile(r"Materialize all")).click()
    dialog = page.get_by_role("dialog").filter(has_text="Partition selection")
    dialog.wait_for()
    return dialog


def toast_link(page, pattern: str) -> str:
    """href of the "View" link of the launch toast whose href matches ``pattern``."""
    link = page.get_by_role("link", name="View").and_(page.locator(f"a[href*='{pattern}']")).first
    link.wait_for()
    return link.get_attribute("href")


def metadata_row(scope, key: str):
    """The two-column metadata row (label, value) for ``key`` in an event (``scope``: page or dialog)."""
    page = getattr(scope, "page", scope)  # the `has` locator is relative: build it from the page
    label = page.locator("td:first-child", has_text=re.compile(f"^{key}$"))
    return scope.locator("tr").filter(has=label)


def metadata_value(scope, key: str) -> str:
    return metadata_row(scope, key).locator("td").nth(1).inner_text().strip()
