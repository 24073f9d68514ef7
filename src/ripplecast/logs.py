"""Log set-up: human-readable lines by default, one JSON object per line with `log_format =
"json"`, each carrying the node id and, where known, the HTTP request id and the stream name.

The request id and stream name live in context variables that the HTTP layer sets for each
request (`REQUEST_ID`, `STREAM`), so every line logged while handling a request carries them
without being passed around. No formatter adds anything secret: secrets are kept out of log
messages where they are written (stream keys and passwords are never logged).
"""

from __future__ import annotations

import json
import logging
import sys
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Literal

__all__ = ["REQUEST_ID", "STREAM", "JsonFormatter", "configure_logging"]

REQUEST_ID: ContextVar[str] = ContextVar("ripplecast_request_id", default="")
"""The id of the HTTP request being handled (X-Request-Id), '' outside a request."""
STREAM: ContextVar[str] = ContextVar("ripplecast_stream", default="")
"""The live stream a request is about, '' when none."""

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time (UTC, ISO 8601), level, logger, message, node, and
    request and stream ids when set; an exception's traceback as `exc`."""

    def __init__(self, node_id: str) -> None:
        super().__init__()
        self._node = node_id

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
            "node": self._node,
        }
        if request_id := REQUEST_ID.get():
            entry["request_id"] = request_id
        if stream := STREAM.get() or getattr(record, "stream", ""):
            entry["stream"] = stream
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


def configure_logging(level: str, log_format: Literal["text", "json"], node_id: str) -> None:
    """Send the root logger's records to stderr at `level`, as text or JSON lines."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        JsonFormatter(node_id) if log_format == "json" else logging.Formatter(TEXT_FORMAT)
    )
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
