"""Helpers of the browser tests: accounts and channels, ffmpeg publishers, the player element.

Everything a test does *in the browser* goes through the pages (forms, links, the player); the
helpers here only set up what a test is not about (an account it logs in with, a publisher).
"""

from __future__ import annotations

from pathlib import Path

from playwright.async_api import Page

from ripplecast.db.models import Role, Visibility
from support import Process, RunningNode, ffmpeg_publish_args, wait_until

PLAYER = "#player"
"""The <video> of the watch pages."""
ARTIFACTS = Path("test-artifacts") / "browser"
"""Where failure screenshots, console logs and measured figures go (from the repository root)."""


def password_for(username: str) -> str:
    """The password the tests give `username` (long enough for the strength rules)."""
    return f"{username} has a password"


async def make_creator(running: RunningNode, username: str) -> None:
    """An account that may own channels and upload videos."""
    node = running.node
    await node.accounts.create_user(username, password_for(username), role=Role.CREATOR)


async def make_channel(
    running: RunningNode, owner: str, slug: str, *, visibility: Visibility = Visibility.PUBLIC
) -> str:
    """A channel of `owner` with one stream key; returns the key."""
    node = running.node
    await node.accounts.create_channel(owner, slug, title=f"{slug} live", visibility=visibility)
    return (await node.accounts.create_stream_key(slug)).key


async def publish(
    running: RunningNode, key: str, slug: str, *, argv: list[str] | None = None, seconds: float = 40
) -> Process:
    """Start ffmpeg publishing to rtmp://.../live/KEY (test media unless `argv` is given) and
    wait until the stream `slug` has had a keyframe. The caller kills the process."""
    url = f"{running.rtmp}/{key}"
    process = await Process.start(argv or ffmpeg_publish_args(url, seconds=seconds))
    try:
        await wait_until(
            lambda: (s := running.node.hub.get(slug)) is not None and s.stats.keyframes >= 1,
            15,
            f"stream {slug} to go live",
        )
    except BaseException:
        await process.kill()
        raise
    return process


async def log_in(page: Page, base: str, username: str) -> None:
    """Log in through the /login form, as a person would."""
    await page.goto(f"{base}/login")
    await page.get_by_label("User name").fill(username)
    await page.get_by_label("Password").fill(password_for(username))
    await page.get_by_role("button", name="Log in").click()
    await page.wait_for_url(lambda url: "/login" not in url)


async def player_state(page: Page) -> dict[str, float]:
    """readyState, currentTime and paused of the player element."""
    state: dict[str, float] = await page.locator(PLAYER).evaluate(
        "v => ({readyState: v.readyState, currentTime: v.currentTime, paused: v.paused})"
    )
    return state


async def wait_for_player(page: Page, condition: str, *, timeout_s: float) -> None:
    """Wait until `condition` (JavaScript about the player `v`) holds.

    The pages' Content-Security-Policy forbids eval, so the condition goes into a function
    Playwright calls, never into an expression string the page would evaluate."""
    await page.wait_for_function(
        f"() => {{ const v = document.querySelector('{PLAYER}');"
        f" return v !== null && ({condition}); }}",
        timeout=timeout_s * 1000,
        polling=100,
    )


async def wait_playing(page: Page, *, timeout_s: float = 20, advance_s: float = 1.0) -> float:
    """Wait until the player has data ahead (readyState >= 3, HAVE_FUTURE_DATA) and its
    currentTime moves on by `advance_s`; returns the currentTime reached."""
    await wait_for_player(page, "v.readyState >= 3 && v.currentTime > 0", timeout_s=timeout_s)
    start = (await player_state(page))["currentTime"]
    moved = f"v.currentTime >= {start + advance_s}"
    await wait_for_player(page, moved, timeout_s=advance_s * 4 + 5)
    state = await player_state(page)
    # At the live edge the buffer may be drained for an instant (HAVE_CURRENT_DATA, 2) between
    # two fragments on a busy machine; what counts is that it plays and has a picture.
    assert state["readyState"] >= 2 and not state["paused"], state
    return state["currentTime"]


async def quality_labels(page: Page) -> list[str]:
    """The labels of the quality menu's options other than Auto (which may say "Auto (360p)")."""
    labels: list[str] = await page.locator("#quality option").evaluate_all(
        "options => options.map(o => o.textContent.trim())"
    )
    return [label for label in labels if not label.lower().startswith("auto")]
