"""A page opened from ``file://`` in headless Debian Chromium (Playwright), every other request blocked.

Shared by ``explorer_images.py`` and ``check_explorer.py``; never downloads a browser.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"]


def open_offline(playwright: Any, page_file: Path, **page_options: Any) -> tuple[Any, Any, list[str]]:
    """(browser, page, errors): ``page_file`` loaded offline; ``errors`` collects console errors,
    page errors and every blocked network request."""
    browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
    page = browser.new_page(**page_options)
    errors: list[str] = []
    page.on("console", lambda m: m.type == "error" and errors.append(m.text))
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.route(
        "**/*",
        lambda r: (
            r.continue_()
            if r.request.url.startswith("file://")
            else (errors.append(f"network request: {r.request.url}"), r.abort())
        ),
    )
    page.goto(Path(page_file).resolve().as_uri())
    return browser, page, errors
