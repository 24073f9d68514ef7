"""`ripplecast cluster down` stops exactly the processes cluster.json records, and never a
process that merely got one of their pids. Harmless stand-ins (`sleep`, a Python that ignores
SIGTERM) play the recorded processes; the command runs as a user runs it."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cluster_support import ripplecast

from ripplecast.devcluster import (
    CLUSTER_FILE,
    HaproxyProcess,
    Liveness,
    LocalCluster,
    NodeProcess,
    ProcessRecord,
)
from ripplecast.devcluster.processes import group_members, liveness, spawn


class Started:
    """Stand-in processes started by a test, always killed and reaped at its end."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.children: list[subprocess.Popen[bytes]] = []

    def start(self, *argv: str) -> tuple[subprocess.Popen[bytes], ProcessRecord]:
        process, record = spawn(argv, env={}, log_path=self.log_dir / f"{len(self.children)}.log")
        self.children.append(process)
        return process, record

    def close(self) -> None:
        for child in self.children:
            if child.poll() is None:
                child.kill()
            child.wait(5)


@pytest.fixture
def started(tmp_path: Path) -> Iterator[Started]:
    processes = Started(tmp_path)
    yield processes
    processes.close()


def record_cluster(run_dir: Path, nodes: dict[str, ProcessRecord]) -> None:
    """Write a cluster.json that names `nodes` as the cluster's origins."""
    run_dir.mkdir(exist_ok=True)
    cluster = LocalCluster(
        run_dir,
        cache_prefix="rc-test:",
        nodes={
            name: NodeProcess(
                node_id=name,
                role="origin",
                host="127.0.0.1",
                http_port=1,
                rtmp_port=2,
                data_dir=run_dir / "nodes" / name,
                log=run_dir / "logs" / f"{name}.log",
                settings={"cache_url": "redis://127.0.0.1:6379/0"},
                process=record,
            )
            for name, record in nodes.items()
        },
        haproxy=HaproxyProcess(
            host="127.0.0.1",
            http_port=3,
            rtmp_ingest_port=4,
            rtmp_play_port=5,
            config=run_dir / "haproxy.cfg",
            log=run_dir / "haproxy.log",
            stats_socket=run_dir / "haproxy.sock",
            program="/usr/sbin/haproxy",
        ),
    )
    cluster.save()
    assert (run_dir / CLUSTER_FILE).stat().st_mode & 0o777 == 0o600


def test_a_pid_that_belongs_to_another_process_is_left_alone(
    started: Started, run_dir: Path
) -> None:
    process, record = started.start("sleep", "60")
    other_start = dataclasses.replace(record, start_time=record.start_time - 1)
    other_program = dataclasses.replace(record, cmdline=("sleep", "61"))
    record_cluster(run_dir, {"origin-1": other_start, "origin-2": other_program})
    code, out, err = ripplecast("cluster", "down", "--run-dir", str(run_dir))
    assert code == 0, err
    assert out.count("its pid now belongs to another process, left alone") == 2, out
    assert process.poll() is None
    assert liveness(record) is Liveness.RUNNING
    assert not (run_dir / CLUSTER_FILE).exists()


def test_the_recorded_process_group_is_stopped(started: Started, run_dir: Path) -> None:
    # A shell with a child of its own: the whole group goes, as a node's ffmpeg would.
    process, record = started.start("sh", "-c", "sleep 60 & wait")
    deadline = time.monotonic() + 5
    while len(group_members(record.pgid)) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)  # the shell starts its sleep on its own time
    assert len(group_members(record.pgid)) == 2
    record_cluster(run_dir, {"origin-1": record})
    code, out, err = ripplecast("cluster", "down", "--run-dir", str(run_dir))
    assert code == 0, err
    assert f"origin-1 (pid {record.pid}): stopped" in out
    assert process.wait(5) == -15
    assert group_members(record.pgid) == []
    assert not (run_dir / CLUSTER_FILE).exists()
    code, out, _ = ripplecast("cluster", "down", "--run-dir", str(run_dir))
    assert code == 0 and "nothing to stop" in out


def test_a_process_that_ignores_sigterm_is_killed_after_the_timeout(
    started: Started, run_dir: Path
) -> None:
    stubborn = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)"
    process, record = started.start(sys.executable, "-c", stubborn)
    record_cluster(run_dir, {"origin-1": record})
    code, out, err = ripplecast("cluster", "down", "--run-dir", str(run_dir), "--timeout", "1")
    assert code == 0, err
    assert "killed (did not stop on SIGTERM in time)" in out
    assert process.wait(5) == -9


def test_down_says_so_when_a_recorded_process_had_already_ended(
    started: Started, run_dir: Path
) -> None:
    process, record = started.start("sleep", "60")
    process.kill()
    process.wait(5)
    record_cluster(run_dir, {"origin-1": record})
    code, out, err = ripplecast("cluster", "down", "--run-dir", str(run_dir))
    assert code == 0, err
    assert "origin-1" in out and "was not running" in out


def test_a_damaged_cluster_file_is_refused_clearly(run_dir: Path) -> None:
    run_dir.mkdir()
    (run_dir / CLUSTER_FILE).write_text('{"version": 1, "nodes": [{"node_id": 3}]}')
    code, _, err = ripplecast("cluster", "down", "--run-dir", str(run_dir))
    assert code == 1
    assert "cluster.json is damaged" in err
