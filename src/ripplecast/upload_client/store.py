"""The state file: which upload URL each unfinished file upload can resume from."""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from ripplecast.upload_client.wire import (
    SavedUpload,
    UploadUsageError,
    drop_expired,
    parse_state,
    render_state,
)

__all__ = ["ResumeStore"]


class ResumeStore:
    """The uploads a later run may resume, in a small JSON file.

    Every change reads the file again and replaces it atomically, so a crash never leaves it
    half written and two uploads running side by side rarely lose each other's entries."""

    def __init__(self, path: Path, *, clock: Callable[[], float] = time.time) -> None:
        self.path = path
        self._clock = clock

    def _load(self) -> dict[str, SavedUpload]:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return {}
        except (OSError, UnicodeDecodeError) as exc:
            raise UploadUsageError(f"cannot read the state file {self.path}: {exc}") from None
        return drop_expired(parse_state(text), self._clock())

    def _save(self, entries: Mapping[str, SavedUpload]) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            handle, temporary = tempfile.mkstemp(dir=self.path.parent, prefix=".uploads-")
            try:
                with os.fdopen(handle, "w", encoding="utf-8") as file:
                    file.write(render_state(entries))
                os.replace(temporary, self.path)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(temporary)
                raise
        except OSError as exc:
            raise UploadUsageError(f"cannot write the state file {self.path}: {exc}") from None

    def get(self, key: str) -> SavedUpload | None:
        return self._load().get(key)

    def put(self, key: str, saved: SavedUpload) -> None:
        entries = self._load()
        entries[key] = saved
        self._save(entries)

    def remove(self, key: str) -> None:
        entries = self._load()
        if entries.pop(key, None) is not None:
            self._save(entries)
