"""Browser fixtures: Debian's Chromium driven by Playwright, one browser for the session.

Playwright downloads no browser here (never run `playwright install`): it launches the system
`/usr/bin/chromium` (override with RIPPLECAST_CHROMIUM). Without it every browser test is
skipped, or fails under RIPPLECAST_REQUIRE_SERVICES=1 as CI runs.

The browser lives in the session's event loop, so the tests here run in that loop too
(`pytestmark` in each module: `pytest.mark.asyncio(loop_scope="session")`). Each test gets its
own context (cookies, storage) and page. When a test fails, a screenshot of its page and the
page's console log are kept under test-artifacts/browser/.
"""

from __future__ import annotations

import os
import re
from collections.abc import AsyncIterator, Generator

import pytest
import pytest_asyncio
from browser_support import ARTIFACTS
from playwright.async_api import Browser, ConsoleMessage, Page, async_playwright

from support import REQUIRE_SERVICES

CHROMIUM = os.environ.get("RIPPLECAST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    # Players start without a click, as a viewer's would after one.
    "--autoplay-policy=no-user-gesture-required",
]
PHASE_REPORTS = pytest.StashKey[dict[str, pytest.TestReport]]()
"""Each test's reports by phase (setup, call, teardown)."""


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Keep each phase's report on the test item, for `page` to see how the test went."""
    report = yield
    item.stash.setdefault(PHASE_REPORTS, {})[report.when] = report
    return report


@pytest.fixture(scope="session", autouse=True)
def player_libraries(pytestconfig: pytest.Config) -> None:
    """hls.js and mpegts.js from npm (`npm ci --prefix web`): the pages play with them."""
    modules = pytestconfig.rootpath / "web" / "node_modules"
    missing = [
        name
        for name in ("hls.js/dist/hls.min.js", "mpegts.js/dist/mpegts.js")
        if not (modules / name).is_file()
    ]
    if missing:
        message = (
            f"player libraries missing in {modules} ({', '.join(missing)}): npm ci --prefix web"
        )
        if REQUIRE_SERVICES:
            pytest.fail(message)
        pytest.skip(message)


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def browser() -> AsyncIterator[Browser]:
    """The system Chromium, headless, for the whole session."""
    if not os.access(CHROMIUM, os.X_OK):
        message = f"{CHROMIUM} is not installed (apt-get install chromium)"
        if REQUIRE_SERVICES:
            pytest.fail(message)
        pytest.skip(message)
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True
        )
        try:
            yield launched
        finally:
            await launched.close()


@pytest_asyncio.fixture(loop_scope="session")
async def page(
    browser: Browser, request: pytest.FixtureRequest, pytestconfig: pytest.Config
) -> AsyncIterator[Page]:
    """A fresh context and page; on failure its screenshot and console log are kept. A test
    module may set CONTEXT_OPTIONS (keyword arguments of `Browser.new_context`)."""
    options = getattr(request.module, "CONTEXT_OPTIONS", {})
    context = await browser.new_context(viewport={"width": 1280, "height": 800}, **options)
    context.set_default_timeout(15_000)
    console: list[str] = []

    def on_console(message: ConsoleMessage) -> None:
        console.append(f"{message.type}: {message.text}")

    opened = await context.new_page()
    opened.on("console", on_console)
    opened.on("pageerror", lambda error: console.append(f"pageerror: {error}"))
    try:
        yield opened
    finally:
        reports = request.node.stash.get(PHASE_REPORTS, {})
        if any(report.failed for report in reports.values()):
            folder = pytestconfig.rootpath / ARTIFACTS
            folder.mkdir(parents=True, exist_ok=True)
            name = re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.name)
            try:
                await opened.screenshot(path=str(folder / f"{name}.png"), full_page=True)
            except Exception as exc:  # a crashed page still gets its log written
                console.append(f"(no screenshot: {exc})")
            lines = [f"url: {opened.url}", *console]
            (folder / f"{name}.console.log").write_text("\n".join(lines) + "\n", "utf-8")
        await context.close()
