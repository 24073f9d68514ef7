"""The web interface's assets and rendering: Jinja2 templates, static files, player libraries.

No HTTP here: `ripplecast.http.pages` serves what this package renders. Invariants:
- templates always autoescape (every `{{ value }}` is HTML-escaped unless marked safe, and
  nothing is marked safe), and a missing variable is an error, not an empty string;
- pages carry no inline script or style: page data travels in `data-*` attributes, so the
  Content-Security-Policy can allow scripts from this origin only;
- the player libraries (hls.js, mpegts.js) are never committed: `npm ci --prefix web` installs
  them into `web/node_modules` and `VENDOR_FILES` says which of their files are served.
"""

from __future__ import annotations

import math
from datetime import datetime
from pathlib import Path

from jinja2 import Environment, PackageLoader, StrictUndefined

__all__ = [
    "CONTENT_SECURITY_POLICY",
    "STATIC_DIR",
    "VENDOR_FILES",
    "default_vendor_dir",
    "format_bitrate",
    "format_bytes",
    "format_duration",
    "format_time",
    "make_environment",
    "static_files",
]

STATIC_DIR = Path(__file__).parent / "static"
"""The interface's own CSS and JavaScript, served under `/static/`."""

VENDOR_FILES: dict[str, str] = {
    "hls.min.js": "hls.js/dist/hls.min.js",
    "hls.min.js.map": "hls.js/dist/hls.min.js.map",
    "hls.worker.js": "hls.js/dist/hls.worker.js",
    "hls.worker.js.map": "hls.js/dist/hls.worker.js.map",
    "mpegts.js": "mpegts.js/dist/mpegts.js",
    "mpegts.js.map": "mpegts.js/dist/mpegts.js.map",
}
"""Files served under `/static/vendor/NAME`, by their path below `node_modules`."""

CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        # Posters, sprites; MSE plays from blob: URLs; hls.js runs its worker from a file.
        "img-src 'self' data: blob:",
        "media-src 'self' blob:",
        "worker-src 'self'",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)
"""What a page may load: everything from this origin only, and no inline script or style."""


def default_vendor_dir() -> Path:
    """`web/node_modules` of the source tree this package runs from (an editable install).

    A wheel installed elsewhere has no such folder; the vendor files then answer 404 and
    the pages still work, without playback."""
    return Path(__file__).resolve().parents[3] / "web" / "node_modules"


def static_files() -> dict[str, Path]:
    """The interface's own static files by name (a fixed set: no path from a request is
    ever joined to a folder)."""
    return {
        path.name: path
        for path in sorted(STATIC_DIR.iterdir())
        if path.is_file() and path.suffix in (".css", ".js", ".svg")
    }


def format_duration(seconds: float | None) -> str:
    """`83.4` -> `1:23`, `3725` -> `1:02:05`; empty for unknown."""
    if seconds is None or not math.isfinite(seconds) or seconds < 0:
        return ""
    whole = int(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}:{minutes:02d}:{secs:02d}"
    return f"{minutes}:{secs:02d}"


def format_bytes(count: float | None) -> str:
    """`1536` -> `1.5 KiB`; empty for unknown."""
    if count is None or count < 0:
        return ""
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return ""  # not reached


def format_bitrate(bits_per_second: float | None) -> str:
    """`2_500_000` -> `2.50 Mbit/s`; empty for unknown."""
    if bits_per_second is None or bits_per_second < 0:
        return ""
    if bits_per_second >= 1_000_000:
        return f"{bits_per_second / 1_000_000:.2f} Mbit/s"
    return f"{bits_per_second / 1000:.0f} kbit/s"


def format_time(moment: datetime | None) -> str:
    """A timestamp as `2024-05-01 13:45 UTC`; empty for none."""
    if moment is None:
        return ""
    return moment.strftime("%Y-%m-%d %H:%M UTC")


def make_environment() -> Environment:
    """The Jinja2 environment of the pages: autoescaping, strict, with the formatting filters."""
    env = Environment(
        loader=PackageLoader("ripplecast.web", "templates"),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        auto_reload=False,
    )
    env.filters["duration"] = format_duration
    env.filters["bytes"] = format_bytes
    env.filters["bitrate"] = format_bitrate
    env.filters["when"] = format_time
    return env
