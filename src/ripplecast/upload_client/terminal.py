"""The terminal side of `ripplecast upload`: Rich progress bars on stderr, the last line on
stdout, exit codes."""

from __future__ import annotations

import asyncio
import sys
from typing import TextIO

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from ripplecast.upload_client.store import ResumeStore
from ripplecast.upload_client.uploader import UploadOptions, upload_file
from ripplecast.upload_client.wire import EXIT_INTERRUPTED, UploadClientError, final_line, mask

__all__ = ["RichProgress", "run_upload"]


class RichProgress:
    """Progress bars on a Rich console: bytes, rate and ETA; then transcoding."""

    def __init__(self, console: Console, label: str) -> None:
        self.console = console
        self.label = label
        self._upload: Progress | None = None
        self._upload_task: TaskID | None = None
        self._transcode: Progress | None = None
        self._transcode_task: TaskID | None = None

    def started(self, total: int, offset: int, *, resumed: bool) -> None:
        if resumed and offset:
            self._print(f"resuming {self.label} at byte {offset} of {total}")
        if self._upload is None or self._upload_task is None:
            self._upload = Progress(
                TextColumn("upload"),
                BarColumn(),
                DownloadColumn(),
                TransferSpeedColumn(),
                TimeRemainingColumn(),
                console=self.console,
            )
            self._upload.start()
            self._upload_task = self._upload.add_task("upload", total=total, completed=offset)
        else:
            # A restart from the server's offset: the rate is measured anew.
            self._upload.reset(self._upload_task, total=total, completed=offset)

    def sent(self, offset: int) -> None:
        if self._upload is not None and self._upload_task is not None:
            self._upload.update(self._upload_task, completed=offset)

    def retrying(self, reason: str, delay: float, failures: int, limit: int) -> None:
        self._print(f"{reason}; retrying in {delay:g} s ({failures} of {limit})")

    def note(self, message: str) -> None:
        self._print(message)

    def transcoding(self, fraction: float, eta_seconds: float | None) -> None:
        self._stop_upload()
        if self._transcode is None or self._transcode_task is None:
            self._transcode = Progress(
                TextColumn("transcode"),
                BarColumn(),
                TextColumn("{task.percentage:>3.0f}%"),
                TextColumn("{task.fields[eta]}"),
                console=self.console,
            )
            self._transcode.start()
            self._transcode_task = self._transcode.add_task("transcode", total=1.0, eta="")
        eta = f"ETA {eta_seconds:.0f} s" if eta_seconds is not None else ""
        self._transcode.update(self._transcode_task, completed=fraction, eta=eta)

    def _print(self, message: str) -> None:
        self.console.print(message, markup=False, highlight=False, soft_wrap=True)

    def _stop_upload(self) -> None:
        if self._upload is not None:
            self._upload.stop()
            self._upload = None

    def close(self) -> None:
        self._stop_upload()
        if self._transcode is not None:
            self._transcode.stop()
            self._transcode = None


def run_upload(
    options: UploadOptions, *, stdout: TextIO | None = None, console: Console | None = None
) -> int:
    """Run one upload to the end; returns the exit code (0 done, 1 refused or failed, 2 usage,
    130 interrupted with the state kept for the next run)."""
    stdout = stdout or sys.stdout
    console = console or Console(stderr=True)
    progress = RichProgress(console, str(options.file))
    store = ResumeStore(options.state_file)

    def say(message: str) -> None:
        console.print(mask(message, options.token), markup=False, highlight=False, soft_wrap=True)

    try:
        try:
            outcome = asyncio.run(upload_file(options, progress, store))
        finally:
            progress.close()
    except KeyboardInterrupt:
        say("interrupted; run the same command again to resume the upload")
        return EXIT_INTERRUPTED
    except UploadClientError as exc:
        say(f"error: {exc}")
        return exc.exit_code
    if outcome.state == "failed":
        say(f"video {outcome.video_id} failed to transcode: {outcome.error}")
    print(final_line(outcome), file=stdout, flush=True)
    return 1 if outcome.state == "failed" else 0
