"""The `ripplecast` command: `serve` runs a node, `config show` prints the effective settings."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError

from ripplecast import __version__
from ripplecast.config import Settings, load_settings

cli = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Ripplecast: RTMP in; HTTP-FLV, RTMP and HLS out.",
)
config_cli = typer.Typer(no_args_is_help=True, help="Inspect the configuration.")
cli.add_typer(config_cli, name="config")

ConfigOption = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="TOML settings file (also RIPPLECAST_CONFIG)."),
]
RtmpPortOption = Annotated[int | None, typer.Option("--rtmp-port", help="RTMP port.")]
HttpPortOption = Annotated[int | None, typer.Option("--http-port", help="HTTP port.")]
DataDirOption = Annotated[Path | None, typer.Option("--data-dir", help="Data folder.")]


def _settings(config: Path | None, **overrides: Any) -> Settings:
    try:
        return load_settings(config, **overrides)
    except ValidationError as exc:
        typer.echo(f"invalid settings:\n{exc}", err=True)
        raise typer.Exit(2) from None
    except (OSError, ValueError) as exc:
        typer.echo(f"cannot read settings: {exc}", err=True)
        raise typer.Exit(2) from None


@cli.command()
def version() -> None:
    """Print the version."""
    typer.echo(__version__)


@config_cli.command("show")
def config_show(
    config: ConfigOption = None,
    rtmp_port: RtmpPortOption = None,
    http_port: HttpPortOption = None,
    data_dir: DataDirOption = None,
) -> None:
    """Print the effective settings as JSON, secrets masked."""
    settings = _settings(config, rtmp_port=rtmp_port, http_port=http_port, data_dir=data_dir)
    typer.echo(json.dumps(settings.masked(), indent=2, sort_keys=True))


def _install_loop() -> str:
    try:
        import uvloop
    except ImportError:
        return "asyncio"
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return "uvloop"


@cli.command()
def serve(
    config: ConfigOption = None,
    rtmp_port: RtmpPortOption = None,
    http_port: HttpPortOption = None,
    data_dir: DataDirOption = None,
) -> None:
    """Run a node on embedded defaults until SIGTERM or SIGINT."""
    settings = _settings(config, rtmp_port=rtmp_port, http_port=http_port, data_dir=data_dir)
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    loop_name = _install_loop()
    logging.getLogger("ripplecast").info("ripplecast %s on %s", __version__, loop_name)
    asyncio.run(_serve(settings))


async def _serve(settings: Settings) -> None:
    from ripplecast.app import Node

    node = Node(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await node.start()
    _print_welcome(node)
    try:
        await stop.wait()
    finally:
        logging.getLogger("ripplecast").info("shutting down")
        with contextlib.suppress(Exception):
            await node.close()


def _print_welcome(node: Any) -> None:
    settings: Settings = node.settings
    host = settings.public_host
    rtmp = f"rtmp://{host}:{node.rtmp_port}/{settings.rtmp_app}"
    http = f"http://{host}:{node.http_port}"
    lines = ["", "Ripplecast is running.", f"  OBS Server:  {rtmp}"]
    if node.new_stream_key:
        lines += [
            f"  Stream Key:  {node.new_stream_key}   (new; shown once, stored in"
            f" {settings.data_dir}/stream-keys.json)",
        ]
    name = "main" if settings.publish_mode == "keys" else "NAME"
    lines += [
        f"  Watch:       {http}/live/{name}.flv   {http}/live/{name}/index.m3u8"
        f"   {settings.rtmp_app and rtmp}/{name}",
        "",
    ]
    print("\n".join(lines), flush=True)


def main() -> None:
    """Entry point of the `ripplecast` script."""
    cli()


if __name__ == "__main__":
    main()
