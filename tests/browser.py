"""Real-browser tests: Playwright for Python driving Debian's Chromium (`CHROMIUM`).

Playwright's own browser download is not reachable here, so the Makefile installs Debian's
`chromium` with apt when it is missing. The flags keep Chromium off the network it cannot
reach (without them it retries Google's hosts at every start).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

CHROMIUM = os.environ.get("ENGRAM_CHROMIUM", "/usr/bin/chromium")
OUTPUT_DIR = Path(__file__).resolve().parent.parent / "test-output"
_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="module")
def chromium():
    """One headless Chromium per test module.

    Not per session: Playwright's sync API keeps an event loop running in this thread until it
    stops, and every later module's asyncio.run() would fail ("cannot be called from a running
    event loop"; seen in tests/test_cache.py after a browser module).
    """
    from playwright.sync_api import sync_playwright

    # The test's ORM calls are still plain synchronous code, which Django would otherwise
    # refuse beside the running loop.
    previous = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=_FLAGS)
            yield browser
            browser.close()
    finally:
        if previous is None:
            os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
        else:
            os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = previous


@pytest.fixture
def page(chromium, request) -> Iterator:
    """A fresh browser context and page; a screenshot under test-output/ when the test fails."""
    context = chromium.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(15_000)
    from playwright.sync_api import expect

    # expect()'s own wait (5 s by default) ran out on this 2-core machine under a full load
    expect.set_options(timeout=15_000)
    page = context.new_page()
    yield page
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        OUTPUT_DIR.mkdir(exist_ok=True)
        page.screenshot(path=str(OUTPUT_DIR / f"{request.node.name}.png"), full_page=True)
    context.close()
