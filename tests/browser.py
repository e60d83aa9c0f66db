"""Opening a report in headless Chromium: Debian's ``chromium`` driven by ``playwright``.

Playwright's own browser downloads are never used: the tests launch the system's
``chromium`` (``apt-get install chromium``) and are skipped, with the reason, when it or
the ``playwright`` package is missing.
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

#: Where the screenshots of the browser tests go, to look at after a run.
SCREENSHOTS = Path("/tmp/daskmeta_screenshots")


def chromium() -> str:
    """The path of the system's Chromium, or skip the test saying what is missing."""
    pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed "
                        "(pip install -e '.[test]')")
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.skip("no chromium on PATH (Debian: apt-get install chromium); the browser checks need it")
    return path


@contextlib.contextmanager
def open_page(path: Path, width: int = 1280, height: int = 1200) -> Iterator[tuple[object, list[str]]]:
    """Yield ``(page, problems)`` for ``path`` opened from the file system, once the report's
    script has finished (``body[data-ready]``). ``problems`` collects console errors, page
    errors and every request that is not to a file or data URL (there must be none)."""
    from playwright.sync_api import sync_playwright

    executable = chromium()
    problems: list[str] = []
    with sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}")
                    if m.type == "error" else None)
            page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
            page.on("request", lambda r: None if r.url.startswith(("file:", "data:", "blob:"))
                    else problems.append(f"remote request: {r.url}"))
            page.goto(Path(path).resolve().as_uri())
            page.wait_for_selector("body[data-ready='1']", timeout=30_000)
            yield page, problems
        finally:
            browser.close()


def screenshot(page: object, name: str, full_page: bool = True) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / name
    page.screenshot(path=str(path), full_page=full_page)
    return path
