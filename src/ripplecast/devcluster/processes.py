"""Processes a local cluster starts, and stopping exactly those again (Linux /proc).

Each process is started in a new session, so it leads its own process group (pgid == pid) and
its children (ffmpeg under a worker) are in the group too. A `ProcessRecord` remembers what
identifies it beyond the pid, which the kernel reuses: its start time in clock ticks since
boot (/proc/PID/stat), the boot it started in, and its command line.

Invariants:

- A signal goes to a recorded group only while that group is provably the one started: its
  leader is alive with the recorded start time, boot id and command line, or the leader is gone
  but members of the group remain (Linux gives no new process a pid that is still in use as a
  process group id, so such members can only be the group's own leftovers). A pid now used by
  another process is left alone, and reported as such. Nothing is ever looked up by name.
- Stopping is bounded: SIGTERM to every group, a wait of `term_timeout`, then SIGKILL to what is
  left and a wait of `kill_timeout`.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from ripplecast.devcluster.errors import DevClusterError

__all__ = [
    "Liveness",
    "ProcessRecord",
    "StopOutcome",
    "current_boot_id",
    "group_members",
    "liveness",
    "signal_group",
    "spawn",
    "stop_groups",
    "tail",
]

POLL_SECONDS = 0.05
"""How often a stop looks whether the signalled groups are gone."""
SPAWN_SECONDS = 2.0
"""How long a new process may take to show its command line in /proc."""


def current_boot_id() -> str:
    """The id of the running boot (/proc/sys/kernel/random/boot_id)."""
    return Path("/proc/sys/kernel/random/boot_id").read_text().strip()


@dataclass(frozen=True, slots=True)
class _Stat:
    state: str
    pgrp: int
    start_time: int


def _stat(pid: int) -> _Stat | None:
    """State, process group and start time of `pid`, or None if there is no such process."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # The command name (field 2) is in parentheses and may itself contain spaces or ")".
    fields = text[text.rindex(")") + 2 :].split()
    return _Stat(state=fields[0], pgrp=int(fields[2]), start_time=int(fields[19]))


def _cmdline(pid: int) -> tuple[str, ...] | None:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return tuple(os.fsdecode(part) for part in raw.split(b"\0")[:-1])


@dataclass(frozen=True, slots=True)
class ProcessRecord:
    """What identifies one started process (see the module docstring)."""

    pid: int
    pgid: int
    """Its process group: the pid itself (started in a new session)."""
    start_time: int
    """Clock ticks after boot at which it started (/proc/PID/stat, field 22)."""
    boot_id: str
    cmdline: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        """The record as JSON-ready data (the `process` object of cluster.json)."""
        return {
            "pid": self.pid,
            "pgid": self.pgid,
            "start_time": self.start_time,
            "boot_id": self.boot_id,
            "cmdline": list(self.cmdline),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ProcessRecord:
        """Read what `to_json` wrote. Raises `DevClusterError` naming a missing or bad field."""
        try:
            record = cls(
                pid=int(data["pid"]),
                pgid=int(data["pgid"]),
                start_time=int(data["start_time"]),
                boot_id=str(data["boot_id"]),
                cmdline=tuple(str(part) for part in data["cmdline"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise DevClusterError(f"bad process record {dict(data)!r}: {exc!r}") from None
        if record.pid <= 1 or record.pgid <= 1:
            raise DevClusterError(f"bad process record {dict(data)!r}: pid and pgid must be > 1")
        return record


class Liveness(StrEnum):
    """What became of a recorded process."""

    RUNNING = "running"
    """The very process started is alive."""
    LEFTOVERS = "leftovers"
    """It exited, but other members of its process group are still alive."""
    GONE = "gone"
    """It and its group are gone."""
    REPLACED = "replaced"
    """Its pid now belongs to another process (or this is another boot): never signalled."""


def group_members(pgid: int) -> list[int]:
    """Pids of the live (not zombie) processes in process group `pgid`."""
    members = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            stat = _stat(int(entry.name))
            if stat is not None and stat.pgrp == pgid and stat.state != "Z":
                members.append(int(entry.name))
    return members


def liveness(record: ProcessRecord) -> Liveness:
    """What became of `record`'s process and its group (see `Liveness`)."""
    if record.boot_id != current_boot_id():
        return Liveness.REPLACED
    stat = _stat(record.pid)
    if stat is not None and (
        stat.start_time != record.start_time or _cmdline(record.pid) not in (record.cmdline, ())
    ):
        # (A zombie's command line reads empty: still the recorded process.)
        return Liveness.REPLACED
    if stat is not None and stat.state != "Z":
        return Liveness.RUNNING
    return Liveness.LEFTOVERS if group_members(record.pgid) else Liveness.GONE


def signal_group(record: ProcessRecord, signum: int) -> Liveness:
    """Send `signum` to `record`'s process group if it is provably the one started (RUNNING or
    LEFTOVERS); return what `liveness` said, whether or not a signal was sent."""
    state = liveness(record)
    if state in (Liveness.RUNNING, Liveness.LEFTOVERS):
        try:
            os.killpg(record.pgid, signum)
        except ProcessLookupError:
            return Liveness.GONE
    return state


class StopOutcome(StrEnum):
    """How `stop_groups` ended one recorded process."""

    STOPPED = "stopped"
    """Ended by SIGTERM within the wait."""
    KILLED = "killed"
    """Still there after the wait: ended by SIGKILL."""
    GONE = "gone"
    """Was not running any more."""
    REPLACED = "replaced"
    """Its pid belongs to another process now: left alone."""
    SURVIVED = "survived"
    """Still alive after SIGKILL (a process stuck in the kernel): look at it by hand."""


def stop_groups(
    records: Mapping[str, ProcessRecord],
    *,
    term_timeout: float = 10.0,
    kill_timeout: float = 5.0,
    reap: Callable[[], None] | None = None,
) -> dict[str, StopOutcome]:
    """Stop the process groups of `records` (by any names): SIGTERM to all, wait at most
    `term_timeout`, SIGKILL to those left, wait at most `kill_timeout`.

    `reap` is called while waiting, for a caller whose children these are (zombies count as
    ended either way). Returns the outcome by name.
    """
    outcomes: dict[str, StopOutcome] = {}
    pending: dict[str, ProcessRecord] = {}
    for name, record in records.items():
        state = signal_group(record, signal.SIGTERM)
        if state is Liveness.REPLACED:
            outcomes[name] = StopOutcome.REPLACED
        elif state is Liveness.GONE:
            outcomes[name] = StopOutcome.GONE
        else:
            pending[name] = record
    _wait_ended(pending, outcomes, StopOutcome.STOPPED, term_timeout, reap)
    for record in pending.values():
        signal_group(record, signal.SIGKILL)
    _wait_ended(pending, outcomes, StopOutcome.KILLED, kill_timeout, reap)
    outcomes.update(dict.fromkeys(pending, StopOutcome.SURVIVED))
    if reap is not None:
        reap()  # a child that ended after the last look is a zombie until collected
    return outcomes


def _wait_ended(
    pending: dict[str, ProcessRecord],
    outcomes: dict[str, StopOutcome],
    outcome: StopOutcome,
    timeout: float,
    reap: Callable[[], None] | None,
) -> None:
    """Move each entry of `pending` whose group has ended into `outcomes`, until none is left
    or `timeout` has passed."""
    deadline = time.monotonic() + timeout
    while pending:
        if reap is not None:
            reap()
        for name, record in list(pending.items()):
            if liveness(record) in (Liveness.GONE, Liveness.REPLACED):
                outcomes[name] = outcome
                del pending[name]
        if not pending or time.monotonic() >= deadline:
            return
        time.sleep(POLL_SECONDS)


def spawn(
    argv: Sequence[str],
    *,
    env: Mapping[str, str],
    log_path: Path,
    cwd: Path | None = None,
) -> tuple[subprocess.Popen[bytes], ProcessRecord]:
    """Start `argv` in a new session (its own process group), stdin from /dev/null, stdout and
    stderr appended to `log_path`; return the process and its record.

    Raises `DevClusterError` if it cannot be started or has already exited.
    """
    with log_path.open("ab") as log:
        log.write(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(argv)}\n".encode())
        log.flush()
        try:
            process = subprocess.Popen(
                list(argv),
                env=dict(env),
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                close_fds=True,
            )
        except OSError as exc:
            raise DevClusterError(f"cannot start {argv[0]}: {exc}") from None
    # Popen returns when exec closed its status pipe; the kernel fills in the new command line
    # a moment later, and until then /proc/PID/cmdline reads empty.
    deadline = time.monotonic() + SPAWN_SECONDS
    while not (cmdline := _cmdline(process.pid)) and process.poll() is None:
        if time.monotonic() >= deadline:
            break
        time.sleep(0.001)
    stat = _stat(process.pid)
    if stat is None or stat.state == "Z" or not cmdline:
        if process.poll() is None:  # ours without doubt: still our unreaped child
            os.killpg(process.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(SPAWN_SECONDS)
        raise DevClusterError(
            f"{argv[0]} exited at once (code {process.returncode}); its log {log_path}:\n"
            + tail(log_path)
        )
    record = ProcessRecord(
        pid=process.pid,
        pgid=process.pid,
        start_time=stat.start_time,
        boot_id=current_boot_id(),
        cmdline=cmdline,
    )
    return process, record


def tail(path: Path, lines: int = 30) -> str:
    """The last `lines` lines of the text file `path` (indented), or a note that it is empty
    or missing."""
    try:
        with path.open("rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 64 * 1024))
            text = f.read().decode(errors="replace")
    except FileNotFoundError:
        return "    (no log file)"
    kept: Iterable[str] = text.splitlines()[-lines:]
    return "\n".join(f"    {line}" for line in kept) or "    (empty log)"
