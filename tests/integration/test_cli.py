"""The `ripplecast` command as a user runs it: settings, first start, graceful stop."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path

import pytest

from support import Process, ffmpeg_publish_args, free_port, require_program, run

RIPPLECAST = [sys.executable, "-m", "ripplecast.cli"]


def env(**extra: str) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("RIPPLECAST_")}
    clean.update(extra)
    return clean


async def test_config_show_merges_sources_and_masks_secrets(tmp_path: Path) -> None:
    config = tmp_path / "ripplecast.toml"
    config.write_text(
        "http_port = 9000\nrtmp_port = 2000\nbatch_interval_ms = 20\n"
        'secret_key = "very-secret-key"\n[signing_keys]\n"2026" = "another-secret"\n'
    )
    argv = [*RIPPLECAST, "config", "show", "--config", str(config), "--rtmp-port", "3000"]
    process = await Process.start(
        argv, stdout=asyncio.subprocess.PIPE, env=env(RIPPLECAST_HTTP_PORT="9100")
    )
    code, out, err = await process.wait(30)
    assert code == 0, err.decode()
    shown = json.loads(out)
    assert shown["rtmp_port"] == 3000  # CLI flag beats the file
    assert shown["http_port"] == 9100  # environment beats the file
    assert shown["batch_interval_ms"] == 20  # file beats the default
    assert "very-secret-key" not in out.decode()
    assert "another-secret" not in out.decode()
    assert shown["signing_keys"] == {"2026": "***"}


async def test_invalid_settings_are_refused_with_the_field_named(tmp_path: Path) -> None:
    process = await Process.start(
        [*RIPPLECAST, "config", "show"],
        stdout=asyncio.subprocess.PIPE,
        env=env(RIPPLECAST_BATCH_INTERVAL_MS="0"),
    )
    code, _, err = await process.wait(30)
    assert code == 2
    assert "batch_interval_ms" in err.decode()


async def test_example_config_loads_in_full(tmp_path: Path) -> None:
    example = Path(__file__).parents[2] / "ripplecast.example.toml"
    process = await Process.start(
        [*RIPPLECAST, "config", "show", "--config", str(example)],
        stdout=asyncio.subprocess.PIPE,
        env=env(),
    )
    code, out, err = await process.wait(30)
    assert code == 0, err.decode()
    shown = json.loads(out)
    from ripplecast.config import Settings

    # Every setting appears in the example file, so operators see every limit.
    text = example.read_text()
    for name in Settings.model_fields:
        assert f"{name} =" in text or f"# {name} =" in text or f"[{name}]" in text, name
    assert shown["rtmp_port"] == 1935


async def test_serve_first_start_prints_key_publishes_and_stops_cleanly(tmp_path: Path) -> None:
    rtmp_port, http_port = free_port(), free_port()
    data = tmp_path / "data"
    argv = [*RIPPLECAST, "serve", "--rtmp-port", str(rtmp_port), "--http-port", str(http_port),
            "--data-dir", str(data)]  # fmt: skip
    server = await Process.start(
        argv,
        stdout=asyncio.subprocess.PIPE,
        # SIGTERM drains first: one second, then the stream ends and its viewer is told.
        env=env(RIPPLECAST_PUBLIC_HOST="127.0.0.1", RIPPLECAST_DRAIN_TIMEOUT_SECONDS="1"),
    )
    async with server:
        assert server.proc.stdout is not None
        key = ""
        while not key:
            line = (await asyncio.wait_for(server.proc.stdout.readline(), 20)).decode()
            assert line, "server exited before printing its stream key"
            if "Stream Key:" in line:
                key = line.split("Stream Key:")[1].split()[0]
                admin = (await asyncio.wait_for(server.proc.stdout.readline(), 5)).decode()
                password = admin.split("password")[1].split()[0]
        assert (data / "secret.key").stat().st_mode & 0o777 == 0o600
        publisher = await Process.start(
            ffmpeg_publish_args(f"rtmp://127.0.0.1:{rtmp_port}/live/{key}", seconds=20)
        )
        async with publisher:
            await asyncio.sleep(2)
            probe = [require_program("ffprobe"), "-v", "error", "-show_entries",
                     "stream=codec_name", "-of", "csv=p=0",
                     f"http://127.0.0.1:{http_port}/live/main.flv"]  # fmt: skip
            code, out, err = await run(probe, 20)
            assert code == 0, err.decode()
            assert "h264" in out.decode()
            viewer = await Process.start(
                [
                    require_program("ffmpeg"),
                    "-v",
                    "error",
                    "-i",
                    f"rtmp://127.0.0.1:{rtmp_port}/live/main",
                    "-f",
                    "null",
                    "-",
                ]
            )
            await asyncio.sleep(1.5)
            server.proc.send_signal(signal.SIGTERM)
            code, _, log = await server.wait(15)
            assert code == 0
            # The viewer is told the stream ended and exits by itself, cleanly.
            viewer_code, _, viewer_err = await viewer.wait(15)
            assert viewer_code == 0, viewer_err.decode()
            await publisher.wait(15)
    text = log.decode()
    assert key not in text  # the stream key is a secret: never logged
    assert password not in text
    assert "publish start stream=main" in text
    assert "play start stream=main" in text
    assert "shutting down" in text
    assert "publish stop stream=main" in text or "stream main ended" in text


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
async def test_serve_stops_on_signal_when_idle(tmp_path: Path, sig: int) -> None:
    argv = [*RIPPLECAST, "serve", "--rtmp-port", str(free_port()), "--http-port",
            str(free_port()), "--data-dir", str(tmp_path)]  # fmt: skip
    server = await Process.start(argv, stdout=asyncio.subprocess.PIPE, env=env())
    async with server:
        assert server.proc.stdout is not None
        while b"Ripplecast is running" not in await asyncio.wait_for(
            server.proc.stdout.readline(), 20
        ):
            pass
        server.proc.send_signal(sig)
        code, _, _ = await server.wait(10)
    assert code == 0


async def test_cli_creates_user_and_channel_then_the_key_publishes(tmp_path: Path) -> None:
    data = tmp_path / "data"
    base = ["--data-dir", str(data)]
    create = await Process.start(
        [*RIPPLECAST, "user", "create", "frank", "--password-stdin", *base],
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, env=env(),
    )  # fmt: skip
    assert create.proc.stdin is not None
    create.proc.stdin.write(b"a long password\n")
    create.proc.stdin.close()
    code, out, err = await create.wait(30)
    assert code == 0, err.decode()
    assert "created user frank (admin)" in out.decode()  # the first account
    code, out, err = await run(
        [*RIPPLECAST, "channel", "create", "live1", "--owner", "frank", *base]
    )
    assert code == 0, err.decode()
    key = out.decode().split("Stream Key:")[1].split()[0]
    code, _, err = await run([*RIPPLECAST, "channel", "create", "live1", "--owner", "frank", *base])
    assert code == 1 and "taken" in err.decode()
    code, _, err = await run([*RIPPLECAST, "channel", "create", "x", "--owner", "nobody", *base])
    assert code == 1 and "no user named 'nobody'" in err.decode()
    rtmp_port, http_port = free_port(), free_port()
    argv = [*RIPPLECAST, "serve", "--rtmp-port", str(rtmp_port), "--http-port", str(http_port),
            *base]  # fmt: skip
    server = await Process.start(argv, stdout=asyncio.subprocess.PIPE, env=env())
    async with server:
        assert server.proc.stdout is not None
        banner = b""
        while b"Watch:" not in banner:
            banner += await asyncio.wait_for(server.proc.stdout.readline(), 20)
        assert b"shown once" not in banner  # not a fresh install: nothing new to print
        publish = ffmpeg_publish_args(f"rtmp://127.0.0.1:{rtmp_port}/live/{key}", seconds=20)
        async with await Process.start(publish):
            await asyncio.sleep(2)
            probe = [require_program("ffprobe"), "-v", "error", "-show_entries",
                     "stream=codec_name", "-of", "csv=p=0",
                     f"http://127.0.0.1:{http_port}/live/live1.flv"]  # fmt: skip
            code, out, err = await run(probe, 20)
            assert code == 0, err.decode()
            assert "h264" in out.decode()
