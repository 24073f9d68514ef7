"""The `ripplecast` command: `serve` runs a node, `config show` prints the effective settings."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError

from ripplecast import __version__
from ripplecast.config import NodeRole, Settings, load_settings

cli = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Ripplecast: RTMP in; HTTP-FLV, RTMP and HLS out.",
)
config_cli = typer.Typer(no_args_is_help=True, help="Inspect the configuration.")
cli.add_typer(config_cli, name="config")
db_cli = typer.Typer(no_args_is_help=True, help="Migrate and check the metadata database.")
cli.add_typer(db_cli, name="db")
user_cli = typer.Typer(no_args_is_help=True, help="Manage accounts.")
cli.add_typer(user_cli, name="user")
channel_cli = typer.Typer(no_args_is_help=True, help="Manage channels and their stream keys.")
cli.add_typer(channel_cli, name="channel")
cluster_cli = typer.Typer(
    no_args_is_help=True,
    help="A cluster on this machine: origins, edges, workers and web nodes behind HAProxy.",
)
cli.add_typer(cluster_cli, name="cluster")
metrics_cli = typer.Typer(no_args_is_help=True, help="What a node exports at /metrics.")
cli.add_typer(metrics_cli, name="metrics")

ConfigOption = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="TOML settings file (also RIPPLECAST_CONFIG)."),
]
RtmpPortOption = Annotated[int | None, typer.Option("--rtmp-port", help="RTMP port.")]
HttpPortOption = Annotated[int | None, typer.Option("--http-port", help="HTTP port.")]
DataDirOption = Annotated[Path | None, typer.Option("--data-dir", help="Data folder.")]
RoleOption = Annotated[
    NodeRole | None,
    typer.Option(
        "--role", help="What this node does: all (single box), origin, edge, worker, web."
    ),
]


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


@metrics_cli.command("catalog")
def metrics_catalog() -> None:
    """Print every metric /metrics exports (name, type, labels, help, roles) as JSON."""
    from ripplecast.metrics import catalog

    typer.echo(json.dumps(catalog(), indent=2))


def _database_url(settings: Settings) -> str:
    from ripplecast.db import DatabaseURLError, database_url_for

    try:
        return database_url_for(settings.data_dir, settings.database_url or None)
    except DatabaseURLError as exc:
        typer.echo(f"invalid database_url: {exc}", err=True)
        raise typer.Exit(2) from None


@db_cli.command("upgrade")
def db_upgrade(
    config: ConfigOption = None,
    data_dir: DataDirOption = None,
    revision: Annotated[str, typer.Argument(help="Target revision.")] = "head",
) -> None:
    """Migrate the metadata database to REVISION (default: the newest)."""
    from ripplecast.db.migrate import current_revision, upgrade

    url = _database_url(_settings(config, data_dir=data_dir))
    asyncio.run(upgrade(url, revision))
    typer.echo(f"database at revision {asyncio.run(current_revision(url))}")


@db_cli.command("current")
def db_current(config: ConfigOption = None, data_dir: DataDirOption = None) -> None:
    """Print the database's revision and the newest one this version knows."""
    from ripplecast.db.migrate import current_revision, head_revision

    url = _database_url(_settings(config, data_dir=data_dir))
    current = asyncio.run(current_revision(url))
    typer.echo(f"current: {current or '(empty)'}  head: {head_revision()}")


@db_cli.command("check")
def db_check(config: ConfigOption = None, data_dir: DataDirOption = None) -> None:
    """Exit 1 if the live schema differs from the models (prints the differences)."""
    from ripplecast.db.migrate import schema_differences

    url = _database_url(_settings(config, data_dir=data_dir))
    differences = asyncio.run(schema_differences(url))
    for difference in differences:
        typer.echo(repr(difference))
    if differences:
        raise typer.Exit(1)
    typer.echo("schema matches the models")


def _with_accounts(settings: Settings, work: Callable[[Any], Awaitable[None]]) -> None:
    """Run `work(accounts)` against the node's database (migrated first, like `serve`)."""
    from ripplecast.accounts.service import AccountError
    from ripplecast.app import open_accounts

    async def run() -> None:
        async with open_accounts(settings) as accounts:
            await work(accounts)

    try:
        asyncio.run(run())
    except AccountError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(1) from None


def _read_password(from_stdin: bool) -> str:
    if from_stdin:
        return sys.stdin.readline().rstrip("\n")
    password: str = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    return password


@user_cli.command("create")
def user_create(
    username: Annotated[str, typer.Argument(help="The new account's name.")],
    admin: Annotated[bool, typer.Option("--admin", help="Make it an administrator.")] = False,
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="Read the password from standard input.")
    ] = False,
    config: ConfigOption = None,
    data_dir: DataDirOption = None,
) -> None:
    """Create an account (the first one is always an administrator)."""
    from ripplecast.db.models import Role

    settings = _settings(config, data_dir=data_dir)
    password = _read_password(password_stdin)

    async def work(accounts: Any) -> None:
        user = await accounts.create_user(username, password, role=Role.ADMIN if admin else None)
        typer.echo(f"created user {user.username} ({user.role})")

    _with_accounts(settings, work)


@channel_cli.command("create")
def channel_create(
    slug: Annotated[str, typer.Argument(help="Channel name: the stream NAME in play URLs.")],
    owner: Annotated[str, typer.Option("--owner", help="The user who owns it.")],
    title: Annotated[str, typer.Option("--title", help="Shown on pages.")] = "",
    private: Annotated[bool, typer.Option("--private", help="Only its owner may watch.")] = False,
    config: ConfigOption = None,
    data_dir: DataDirOption = None,
) -> None:
    """Create a channel and print a new stream key for it (shown once)."""
    from ripplecast.db.models import Visibility

    settings = _settings(config, data_dir=data_dir)
    visibility = Visibility.PRIVATE if private else Visibility.PUBLIC

    async def work(accounts: Any) -> None:
        await accounts.create_channel(owner, slug, title=title, visibility=visibility)
        key = await accounts.create_stream_key(slug, label="created with the CLI")
        typer.echo(f"created channel {slug} ({visibility})")
        typer.echo(f"Stream Key: {key.key}   (shown once)")

    _with_accounts(settings, work)


@channel_cli.command("key")
def channel_key(
    slug: Annotated[str, typer.Argument(help="The channel.")],
    config: ConfigOption = None,
    data_dir: DataDirOption = None,
) -> None:
    """Print a new stream key for a channel (shown once; older keys keep working)."""
    settings = _settings(config, data_dir=data_dir)

    async def work(accounts: Any) -> None:
        key = await accounts.create_stream_key(slug, label="created with the CLI")
        typer.echo(f"Stream Key: {key.key}   (shown once)")

    _with_accounts(settings, work)


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
    role: RoleOption = None,
) -> None:
    """Run a node until SIGTERM or SIGINT (on embedded defaults, every role in one process)."""
    settings = _settings(
        config, rtmp_port=rtmp_port, http_port=http_port, data_dir=data_dir, role=role
    )
    _configure_logging(settings)
    loop_name = _install_loop()
    logging.getLogger("ripplecast").info("ripplecast %s on %s", __version__, loop_name)
    asyncio.run(_serve(settings))


def _configure_logging(settings: Settings) -> None:
    from ripplecast.app import node_id_for
    from ripplecast.logs import configure_logging

    configure_logging(settings.log_level, settings.log_format, node_id_for(settings))


async def _serve(settings: Settings) -> None:
    """Run until a signal: SIGTERM drains first (see `Node.drain`), SIGINT stops at once, and
    a second SIGTERM during the drain stops at once too."""
    from ripplecast.app import Node
    from ripplecast.tls import TlsError

    try:
        node = Node(settings)
    except TlsError as exc:
        typer.echo(f"cannot start: {exc}", err=True)
        raise typer.Exit(2) from None
    stop = asyncio.Event()
    drain = asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_sigterm() -> None:
        (stop if drain.is_set() else drain).set()

    loop.add_signal_handler(signal.SIGTERM, on_sigterm)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    if node.tls is not None:
        # The usual reload signal: `kill -HUP PID` after renewing the certificate.
        loop.add_signal_handler(signal.SIGHUP, node.reload_tls)
    await node.start()
    _print_welcome(node)
    log = logging.getLogger("ripplecast")
    try:
        stopped = asyncio.create_task(stop.wait())
        draining = asyncio.create_task(drain.wait())
        await asyncio.wait((stopped, draining), return_when=asyncio.FIRST_COMPLETED)
        if not stop.is_set():
            drained = asyncio.create_task(node.drain())
            await asyncio.wait((stopped, drained), return_when=asyncio.FIRST_COMPLETED)
            drained.cancel()
        stopped.cancel()
        draining.cancel()
    finally:
        log.info("shutting down")
        with contextlib.suppress(Exception):
            await node.close()


@cli.command()
def worker(config: ConfigOption = None, data_dir: DataDirOption = None) -> None:
    """Run transcoding workers only (no RTMP, no HTTP) until SIGTERM or SIGINT.

    Start any number, on any machine that shares the database and the media storage."""
    settings = _settings(config, data_dir=data_dir)
    _configure_logging(settings)
    _install_loop()
    asyncio.run(_work(settings))


async def _work(settings: Settings) -> None:
    from ripplecast.app import database_for, job_queue_for, worker_for
    from ripplecast.storage import open_storage

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    storage = open_storage(settings)
    async with database_for(settings) as db:
        await storage.start()
        runner = worker_for(settings, job_queue_for(settings, db), storage)
        runner.start()
        logging.getLogger("ripplecast").info(
            "worker %s running %d job(s) at once", runner.name, settings.worker_concurrency
        )
        try:
            await stop.wait()
        finally:
            logging.getLogger("ripplecast").info("worker stopping")
            await runner.close()
            await storage.close()


@cli.command()
def upload(
    file: Annotated[Path, typer.Argument(help="The video file.", dir_okay=False)],
    title: Annotated[str, typer.Option("--title", help="The video's title.")],
    server: Annotated[
        str, typer.Option("--server", envvar="RIPPLECAST_SERVER", help="http://HOST:PORT")
    ],
    token: Annotated[
        str,
        typer.Option(
            "--token", envvar="RIPPLECAST_TOKEN", help="API token with the publish scope."
        ),
    ],
    description: Annotated[str, typer.Option("--description", help="Shown on pages.")] = "",
    visibility: Annotated[
        str, typer.Option("--visibility", help="public, unlisted or private.")
    ] = "public",
    chunk_size: Annotated[
        int, typer.Option("--chunk-size", min=1, help="Bytes per PATCH request.")
    ] = 8 * 1024 * 1024,
    wait: Annotated[
        bool, typer.Option("--wait", help="Wait for transcoding; print the playlist URL.")
    ] = False,
    wait_timeout: Annotated[
        float, typer.Option("--wait-timeout", min=1, help="Seconds --wait waits at most.")
    ] = 6 * 3600,
    retries: Annotated[
        int, typer.Option("--retries", min=0, help="Transient failures in a row tolerated.")
    ] = 5,
    state_file: Annotated[
        Path | None,
        typer.Option(
            "--state-file",
            envvar="RIPPLECAST_UPLOAD_STATE",
            help="Where unfinished uploads are remembered (default:"
            " ~/.cache/ripplecast/uploads.json).",
        ),
    ] = None,
) -> None:
    """Upload a video (tus, resumable: run the same command again after an interruption).

    The last line on stdout is `video ID queued`, or with --wait `video ID ready URL`."""
    from ripplecast.upload_client import UploadOptions, default_state_file, run_upload

    options = UploadOptions(
        file=file,
        title=title,
        description=description,
        visibility=visibility,
        server=server,
        token=token,
        chunk_size=chunk_size,
        wait=wait,
        wait_timeout_seconds=wait_timeout,
        retries=retries,
        state_file=state_file or default_state_file(),
    )
    raise typer.Exit(run_upload(options))


RunDirOption = Annotated[
    Path,
    typer.Option("--run-dir", help="Folder of the local cluster: cluster.json, logs, data."),
]


def _cluster_failed(exc: Exception) -> typer.Exit:
    typer.echo(f"cluster: {exc}", err=True)
    return typer.Exit(1)


@cluster_cli.command("up")
def cluster_up(
    database_url: Annotated[
        str,
        typer.Option(
            "--database-url",
            envvar="RIPPLECAST_DATABASE_URL",
            help="The shared database (postgresql://...); migrated first.",
        ),
    ],
    cache_url: Annotated[
        str, typer.Option("--cache-url", help="The shared Redis.")
    ] = "redis://127.0.0.1:6379/0",
    storage_url: Annotated[
        str,
        typer.Option("--storage-url", help="Shared media storage. Empty: RUN_DIR/media."),
    ] = "",
    origins: Annotated[int, typer.Option("--origins", help="Origin nodes.")] = 2,
    edges: Annotated[int, typer.Option("--edges", help="Edge nodes.")] = 2,
    workers: Annotated[int, typer.Option("--workers", help="Transcoding workers.")] = 1,
    web: Annotated[int, typer.Option("--web", help="Web nodes (pages, API, uploads).")] = 1,
    run_dir: RunDirOption = Path("cluster"),
    base_port: Annotated[
        int | None,
        typer.Option("--base-port", help="First port to use (counting up). Default: any free."),
    ] = None,
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", help="NAME=VALUE: a setting for every node (repeatable)."),
    ] = None,
    config: Annotated[
        Path | None, typer.Option("--config", "-c", help="TOML settings file every node reads.")
    ] = None,
    timeout: Annotated[
        float, typer.Option("--timeout", min=1, help="Seconds to wait for every node.")
    ] = 60.0,
) -> None:
    """Start a cluster on loopback with HAProxy in front; the processes keep running after
    this command returns (stop them with `ripplecast cluster down`)."""
    from ripplecast.devcluster import ClusterSpec, DevClusterError, LocalCluster

    extra: dict[str, str] = {}
    for item in set_ or []:
        name, equals, value = item.partition("=")
        if not equals or not name:
            typer.echo(f"--set {item!r}: expected NAME=VALUE", err=True)
            raise typer.Exit(2)
        extra[name.strip()] = value
    spec = ClusterSpec(
        database_url=database_url,
        cache_url=cache_url,
        storage_url=storage_url,
        origins=origins,
        edges=edges,
        workers=workers,
        web=web,
        run_dir=run_dir,
        base_port=base_port,
        settings=extra,
        config_file=config,
        timeout=timeout,
    )
    try:
        cluster = LocalCluster.up(spec, progress=lambda line: typer.echo(line, err=True))
    except DevClusterError as exc:
        raise _cluster_failed(exc) from None
    _print_cluster(cluster)


def _print_cluster(cluster: Any) -> None:
    run_dir = cluster.run_dir
    haproxy = cluster.haproxy
    lines = [
        f"Ripplecast cluster running (run dir {run_dir}).",
        f"  OBS Server:     {cluster.rtmp_ingest_url}   (HAProxy -> origins)",
        f"  HTTP:           {cluster.http_url}   (/live, /vod -> edges; pages, API -> web)",
        f"  RTMP play:      {cluster.rtmp_play_url}/NAME   (HAProxy -> edges)",
        f"  Redirect:       {cluster.redirect_url('live/NAME.flv')}   (302 to the least-loaded"
        " edge)",
        "  Nodes:",
    ]
    for node in cluster.nodes.values():
        pid = node.process.pid if node.process else "-"
        urls = "  ".join(url for url in (node.http_url, node.rtmp_url) if url)
        lines.append(f"    {node.node_id:<10} pid {pid:<8} {urls}")
    lines += [
        f"  HAProxy:        pid {haproxy.process.pid if haproxy.process else '-'}, config "
        f"{haproxy.config}, admin socket {haproxy.stats_socket}",
        f"  Logs:           {run_dir / 'logs'}",
        f"  Cache prefix:   {cluster.cache_prefix}",
        f'  Accounts:       eval "$(ripplecast cluster env --run-dir {run_dir})", then'
        " `ripplecast user create NAME --admin` and `ripplecast channel create SLUG --owner NAME`",
        f"  Status, stop:   ripplecast cluster status --run-dir {run_dir};"
        f" ripplecast cluster down --run-dir {run_dir}",
    ]
    typer.echo("\n".join(lines))


@cluster_cli.command("down")
def cluster_down(
    run_dir: RunDirOption = Path("cluster"),
    timeout: Annotated[
        float, typer.Option("--timeout", min=0, help="Seconds SIGTERM has before SIGKILL.")
    ] = 10.0,
) -> None:
    """Stop exactly the processes `cluster up` started in RUN_DIR (never any other process)."""
    from ripplecast.devcluster import DevClusterError, LocalCluster, StopOutcome

    try:
        cluster = LocalCluster.load(run_dir)
        if cluster is None:
            typer.echo(f"no cluster recorded in {run_dir.resolve()}: nothing to stop")
            return
        pids = {name: record.pid for name, record in cluster.processes().items()}
        outcomes = cluster.down(term_timeout=timeout)
    except DevClusterError as exc:
        raise _cluster_failed(exc) from None
    words = {
        StopOutcome.STOPPED: "stopped",
        StopOutcome.KILLED: "killed (did not stop on SIGTERM in time)",
        StopOutcome.GONE: "was not running",
        StopOutcome.REPLACED: "was not running; its pid now belongs to another process, left alone",
        StopOutcome.SURVIVED: "STILL RUNNING after SIGKILL",
    }
    for name, outcome in outcomes.items():
        typer.echo(f"{name} (pid {pids[name]}): {words[outcome]}")
    if StopOutcome.SURVIVED in outcomes.values():
        raise typer.Exit(1)
    typer.echo(f"cluster in {cluster.run_dir} is down")


@cluster_cli.command("status")
def cluster_status(
    config: ConfigOption = None,
    run_dir: Annotated[
        Path | None,
        typer.Option(
            "--run-dir",
            help="Read the Redis and cache prefix of the local cluster there. Default: the"
            " settings' cache_url and cache_prefix (or ./cluster when they name no Redis).",
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """List the nodes of the cluster registry: role, address, load, heartbeat."""
    import time

    from ripplecast.cache import CacheError
    from ripplecast.devcluster import DEFAULT_RUN_DIR, DevClusterError, LocalCluster
    from ripplecast.devcluster.status import format_table, nodes_as_json, registry_nodes

    settings = _settings(config)
    cache_url, prefix = settings.cache_url, settings.cache_prefix
    if run_dir is None and cache_url.startswith("memory:"):
        run_dir = DEFAULT_RUN_DIR
    if run_dir is not None:
        try:
            cluster = LocalCluster.load(run_dir)
        except DevClusterError as exc:
            raise _cluster_failed(exc) from None
        if cluster is None:
            typer.echo(
                f"no cluster recorded in {run_dir.resolve()}, and no Redis in the settings:"
                " give --run-dir or set cache_url (RIPPLECAST_CACHE_URL)",
                err=True,
            )
            raise typer.Exit(1)
        cache_url, prefix = cluster.cache_url, cluster.cache_prefix
    try:
        nodes = asyncio.run(
            registry_nodes(
                cache_url,
                prefix=prefix,
                ttl_seconds=settings.cluster_node_ttl_seconds,
                max_nodes=settings.cluster_max_nodes,
            )
        )
    except CacheError as exc:
        raise _cluster_failed(exc) from None
    now = time.time()
    if as_json:
        typer.echo(json.dumps(nodes_as_json(nodes, now), indent=2))
    elif not nodes:
        typer.echo(f"no nodes registered (cache prefix {prefix!r})")
    else:
        typer.echo(format_table(nodes, now))


@cluster_cli.command("env")
def cluster_env(run_dir: RunDirOption = Path("cluster")) -> None:
    """Print `export RIPPLECAST_...` lines with the settings the nodes share (database, Redis,
    storage, secrets), for `ripplecast user create` and friends against the cluster."""
    import shlex

    from ripplecast.devcluster import DevClusterError, LocalCluster

    try:
        cluster = LocalCluster.load(run_dir)
        if cluster is None:
            raise DevClusterError(f"no cluster recorded in {run_dir.resolve()}")
        shared = cluster.shared_settings()
    except DevClusterError as exc:
        raise _cluster_failed(exc) from None
    for name, value in shared.items():
        typer.echo(f"export RIPPLECAST_{name.upper()}={shlex.quote(value)}")


ParallelOption = Annotated[
    int, typer.Option("--parallel", min=1, max=64, help="Media objects copied at once.")
]


def _backup_system(settings: Settings) -> Any:
    """The database, storage (not started) and secret the settings name, for backup/restore."""
    from ripplecast.app import SECRET_FILE
    from ripplecast.backup import SecretPlace, System
    from ripplecast.errors import UsageError
    from ripplecast.storage import open_storage

    url = _database_url(settings)
    try:
        storage = open_storage(settings)
    except UsageError as exc:
        typer.echo(f"invalid storage_url: {exc}", err=True)
        raise typer.Exit(2) from None
    folder = storage.local_path("probe")
    described = f"local folder {folder.parent}" if folder else settings.storage_url.strip()
    configured = settings.secret_key
    secret = SecretPlace(
        configured=configured.get_secret_value().encode() if configured is not None else None,
        file=settings.data_dir / SECRET_FILE,
    )
    return System(url, storage, described, secret)


def _run_backup_work(system: Any, work: Callable[[], Awaitable[Any]]) -> None:
    """Run `work` with the system's storage started; errors become one line and exit 1."""
    from ripplecast.backup import BackupError
    from ripplecast.db import DatabaseError
    from ripplecast.storage import StorageError

    async def run() -> None:
        await system.storage.start()
        try:
            await work()
        finally:
            await system.storage.close()

    try:
        asyncio.run(run())
    except (BackupError, StorageError, DatabaseError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None


@cli.command()
def backup(
    out: Annotated[Path, typer.Argument(help="New folder to write the backup to.")],
    config: ConfigOption = None,
    data_dir: DataDirOption = None,
    parallel: ParallelOption = 8,
) -> None:
    """Back up a running system: the database (a consistent snapshot), every media object
    and the secret, with a manifest of checksums, into the new folder OUT."""
    from ripplecast.backup import create_backup

    system = _backup_system(_settings(config, data_dir=data_dir))

    async def work() -> None:
        await create_backup(
            system, out, parallel=parallel, report=lambda line: typer.echo(line, err=True)
        )

    _run_backup_work(system, work)


@cli.command()
def restore(
    source: Annotated[Path, typer.Argument(help="The backup folder (made by `backup`).")],
    config: ConfigOption = None,
    data_dir: DataDirOption = None,
    force: Annotated[
        bool,
        typer.Option(
            "--force", help="Restore into a system that holds data: drop and overwrite it."
        ),
    ] = False,
    allow_new_secret: Annotated[
        bool,
        typer.Option(
            "--allow-new-secret",
            help="Restore although the secret is not the backup's (every stream key breaks).",
        ),
    ] = False,
    parallel: ParallelOption = 8,
) -> None:
    """Restore a backup into an empty system (stop its nodes first): checks the whole backup,
    loads the database, migrates it to this version, stores the objects, puts the secret."""
    from ripplecast.backup import restore_backup

    system = _backup_system(_settings(config, data_dir=data_dir))

    async def work() -> None:
        await restore_backup(
            system,
            source,
            force=force,
            allow_new_secret=allow_new_secret,
            parallel=parallel,
            report=lambda line: typer.echo(line, err=True),
        )

    _run_backup_work(system, work)


def _print_welcome(node: Any) -> None:
    settings: Settings = node.settings
    host = settings.public_host
    rtmp = f"rtmp://{host}:{node.rtmp_port}/{settings.rtmp_app}"
    if node.rtmps_port:  # with a certificate: OBS and players are told the encrypted way in
        rtmp = f"rtmps://{host}:{node.rtmps_port}/{settings.rtmp_app}"
    http = f"{'https' if node.tls is not None else 'http'}://{host}:{node.http_port}"
    role = settings.role.value
    if role != "all":
        # A cluster node: what it serves, by role (the cluster's entry points are HAProxy's).
        lines = ["", f"Ripplecast node {node.node_id} is running (role {role})."]
        if node.roles.publish:
            lines.append(f"  OBS Server:  {rtmp}")
        if node.roles.rtmp:
            lines.append(f"  Watch:       {http}/live/NAME.flv   {rtmp}/NAME")
        if node.roles.web:
            lines.append(f"  Web:         {http}/")
        lines += [f"  Health:      {http}/readyz", ""]
        print("\n".join(lines), flush=True)
        return
    lines = ["", "Ripplecast is running.", f"  OBS Server:  {rtmp}"]
    first = node.first_run
    if first is not None:
        lines += [
            f"  Stream Key:  {first.stream_key}   (shown once)",
            f"  Admin:       user {first.username}, password {first.password}   (shown once;"
            " change it)",
        ]
    elif settings.publish_mode == "keys":
        lines.append("  Stream Key:  `ripplecast channel key NAME` prints a new one")
    name = "main" if settings.publish_mode == "keys" else "NAME"
    lines += [
        f"  Watch:       {http}/live/{name}.flv   {http}/live/{name}/index.m3u8   {rtmp}/{name}",
        "",
    ]
    print("\n".join(lines), flush=True)


def main() -> None:
    """Entry point of the `ripplecast` script."""
    cli()


if __name__ == "__main__":
    main()
