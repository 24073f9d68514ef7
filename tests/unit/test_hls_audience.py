"""HLS viewers are estimated from recent playlist readers."""

from __future__ import annotations

from ripplecast.live.hls import HlsAudience


def test_clients_count_while_they_keep_reloading() -> None:
    audience = HlsAudience(window_seconds=6)
    audience.seen("10.0.0.1|firefox", 100.0)
    audience.seen("10.0.0.2|chrome", 101.0)
    audience.seen("10.0.0.1|firefox", 102.0)  # a reload is the same viewer
    assert audience.count(103.0) == 2
    assert audience.count(107.5) == 1  # the chrome player stopped at 101
    assert audience.count(108.5) == 0
    audience.seen("10.0.0.2|chrome", 109.0)
    assert audience.count(109.0) == 1


def test_the_number_of_clients_kept_is_bounded() -> None:
    audience = HlsAudience(window_seconds=60, max_clients=100)
    for n in range(1000):
        audience.seen(f"client-{n}", float(n) / 100)
    assert audience.count(10.0) == 100  # the newest 100 are kept
    audience.seen("client-0", 10.0)  # an old client coming back counts again
    assert audience.count(10.0) == 100
