"""`ripplecast backup` and `ripplecast restore` on real systems.

A node with an account, a channel with a stream key and a transcoded video is backed up by the
command while a publisher is live on it, then restored into an empty data dir (and a fresh
database on PostgreSQL and MariaDB); a node started on the restored system plays the video,
accepts the old stream key and the old password. Damaged backups are refused before anything
is written; an older schema is migrated; a configured secret is checked by its fingerprint;
objects in S3 go through the same Storage protocol.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

import databases
import s3server
from media import make_video
from ripplecast.accounts.policy import Scope
from ripplecast.app import open_accounts
from ripplecast.backup import (
    BackupDamaged,
    BackupError,
    DatabaseKind,
    DatabaseToolError,
    SecretMismatch,
    SecretPlace,
    SecretSource,
    System,
    TargetNotEmpty,
    create_backup,
    read_manifest,
    restore_backup,
    secret_fingerprint,
)
from ripplecast.backup.databases import find_pg_tool
from ripplecast.config import Settings
from ripplecast.db import database_url_for, normalize_url
from ripplecast.db.migrate import current_revision, head_revision, upgrade
from ripplecast.storage import LocalStorage, S3Storage, Storage
from support import NodeFactory, Process, ffmpeg_publish_args, require_program, run, wait_until
from vod_support import VOD_SETTINGS, upload_file, wait_ready

db_url = databases.db_url
s3_server = s3server.s3_server

RIPPLECAST = [sys.executable, "-m", "ripplecast.cli"]
PASSWORD = "ada's long password"
NODE_SETTINGS = {**VOD_SETTINGS, "vod_ladder": ["240:250k:48k"]}
HIDDEN_PASSWORD = "never-printed-7f3a"
DATABASE_PROGRAMS = {
    "postgresql": ("pg_dump", "pg_restore"),
    "mariadb": ("mariadb-dump", "mariadb"),
}


def cli_env(data_dir: Path, database_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RIPPLECAST_")}
    env["RIPPLECAST_DATA_DIR"] = str(data_dir)
    if database_url:
        env["RIPPLECAST_DATABASE_URL"] = database_url
    return env


async def ripplecast(*args: str, env: dict[str, str]) -> tuple[int, str]:
    """Run the command; its exit status and everything it printed."""
    process = await Process.start([*RIPPLECAST, *args], stdout=asyncio.subprocess.PIPE, env=env)
    code, out, err = await process.wait(120)
    return code, out.decode() + err.decode()


@pytest.fixture
async def second_db_url(db_url: str) -> AsyncIterator[str]:
    """Another fresh database on db_url's server ("" on SQLite: the data dir's file)."""
    kind = normalize_url(db_url).get_backend_name()
    if kind == "sqlite":
        yield ""
        return
    server = databases.SERVER_URLS[kind]
    admin = create_async_engine(normalize_url(server), isolation_level="AUTOCOMMIT")
    name = f"rc_restore_{secrets.token_hex(6)}"
    quoted = f'"{name}"' if kind == "postgresql" else f"`{name}`"
    try:
        async with admin.connect() as connection:
            await connection.execute(text(f"CREATE DATABASE {quoted}"))
        url = make_url(server).set(database=name)
        if kind == "postgresql" and url.password is None:
            # The server trusts loopback (no password in the URL): one it ignores lets the test
            # check that a password never reaches the output.
            url = url.set(password=HIDDEN_PASSWORD)
        yield url.render_as_string(hide_password=False)
    finally:
        async with admin.connect() as connection:
            force = " WITH (FORCE)" if kind == "postgresql" else ""
            await connection.execute(text(f"DROP DATABASE IF EXISTS {quoted}{force}"))
        await admin.dispose()


def is_live(node: object, name: str) -> bool:
    stream = node.hub.get(name)  # type: ignore[attr-defined]
    return stream is not None and stream.stats.keyframes >= 1


@pytest.mark.parametrize("db_url", ["sqlite", "postgresql", "mariadb"], indirect=True)
async def test_back_up_a_running_node_restore_it_and_everything_works(
    make_node: NodeFactory, db_url: str, second_db_url: str, tmp_path: Path
) -> None:
    require_program("ffmpeg")
    kind = normalize_url(db_url).get_backend_name()
    for program in DATABASE_PROGRAMS.get(kind, ()):
        require_program(program)
    source_url = "" if kind == "sqlite" else db_url  # SQLite: the default file in the data dir
    if source_url:
        await upgrade(source_url)
    clip = await asyncio.to_thread(make_video, tmp_path / "clip.mp4", seconds=2, size="320x240")
    source_dir, restored_dir, backup = tmp_path / "source", tmp_path / "restored", tmp_path / "bk"

    async with make_node(**NODE_SETTINGS, data_dir=source_dir, database_url=source_url) as running:
        node, api = running.node, f"{running.http}/api/v1"
        await node.accounts.create_user("ada", PASSWORD)
        await node.accounts.create_channel("ada", "ada-live")
        stream_key = (await node.accounts.create_stream_key("ada-live")).key
        user = await node.accounts.user("ada")
        token = (
            await node.logins.create_api_token(user.id, "t", [Scope.READ, Scope.PUBLISH])
        ).token
        auth = {"Authorization": f"Bearer {token}"}
        async with aiohttp.ClientSession() as http:
            status, video = await upload_file(http, api, auth, clip, title="Clip")
            assert status == 201, video
            ready = await wait_ready(http, api, auth, video["id"], 60)
        assert ready["state"] == "ready", ready
        stored = await node.storage.list("")

        # Back up while a publisher is live.
        publish = ffmpeg_publish_args(f"{running.rtmp}/{stream_key}", seconds=60)
        async with await Process.start(publish) as publisher:
            await wait_until(lambda: is_live(node, "ada-live"), 15, "ada-live to go live")
            code, output = await ripplecast(
                "backup", str(backup), env=cli_env(source_dir, source_url)
            )
            assert code == 0, output
            assert publisher.proc.returncode is None and is_live(node, "ada-live")

    assert f"copied: {len(stored)}/{len(stored)} objects" in output, output
    assert f"done: {backup}" in output
    manifest = read_manifest(backup)
    assert manifest.database.kind is DatabaseKind(kind)
    assert manifest.schema_revision == head_revision()
    assert [item.key for item in manifest.objects.items] == [info.key for info in stored]
    assert manifest.objects.bytes == sum(info.size for info in stored)
    assert f"vod/{video['id']}/master.m3u8" in {item.key for item in manifest.objects.items}
    assert manifest.secret.source is SecretSource.FILE
    assert (backup / "secret.key").read_bytes() == (source_dir / "secret.key").read_bytes()

    # Restore into an empty system: a new data dir (and a new database on a server).
    code, output = await ripplecast(
        "restore", str(backup), env=cli_env(restored_dir, second_db_url)
    )
    assert code == 0, output
    assert HIDDEN_PASSWORD not in output
    assert f"restored: {len(stored)}/{len(stored)} objects" in output, output
    assert (restored_dir / "secret.key").stat().st_mode & 0o777 == 0o600

    async with make_node(
        **NODE_SETTINGS, data_dir=restored_dir, database_url=second_db_url
    ) as running:
        node, api = running.node, f"{running.http}/api/v1"
        assert node.first_run is None  # the restored accounts, not a fresh install's
        async with aiohttp.ClientSession() as http:
            async with http.post(
                f"{api}/auth/login", json={"username": "ada", "password": PASSWORD}
            ) as r:
                assert r.status == 200, await r.text()
            async with http.get(f"{api}/videos/{video['id']}", headers=auth) as r:
                assert r.status == 200  # the old API token too
                assert (await r.json())["state"] == "ready"
        code, _, err = await run(
            ["ffmpeg", "-v", "error", "-i", running.http + ready["playlist"],
             "-map", "0", "-f", "null", "-"],
            timeout=60,
        )  # fmt: skip
        assert code == 0 and err == b"", err.decode()
        publish = ffmpeg_publish_args(f"{running.rtmp}/{stream_key}", seconds=30)
        async with await Process.start(publish):
            await wait_until(lambda: is_live(node, "ada-live"), 15, "the old key to publish")

    # The restored system is not empty any more: a second restore refuses and says why.
    code, output = await ripplecast(
        "restore", str(backup), env=cli_env(restored_dir, second_db_url)
    )
    assert code == 1
    assert "not empty, nothing was restored (--force replaces it)" in output, output
    assert "users (" in output and f"{len(stored)} objects" in output


# --- without a node: small systems made directly ------------------------------------------------


def local_system(data_dir: Path, *, secret_key: str | None = None) -> System:
    return System(
        database_url_for(data_dir, None),
        LocalStorage(data_dir / "media"),
        f"local folder {data_dir / 'media'}",
        SecretPlace(secret_key.encode() if secret_key else None, data_dir / "secret.key"),
    )


async def seed(system: System, data_dir: Path, *, secret_key: str | None = None) -> None:
    """An account and a few objects (a playlist, segments, a larger source)."""
    settings = Settings(data_dir=data_dir, secret_key=secret_key)
    async with open_accounts(settings) as accounts:
        await accounts.create_user("ada", PASSWORD)
        await accounts.create_channel("ada", "ada-live")
        await accounts.create_stream_key("ada-live")
    await put_objects(system.storage)


async def put_objects(storage: Storage) -> None:
    await storage.start()
    try:
        await storage.put_bytes("vod/v1/master.m3u8", b"#EXTM3U\n")
        for n in range(3):
            await storage.put_bytes(f"vod/v1/240p/{n}.ts", bytes([0x47, n]) * 2000)
        await storage.put_bytes("sources/v1", secrets.token_bytes(600_000))
    finally:
        await storage.close()


async def back_up(system: System, out: Path) -> None:
    await system.storage.start()
    try:
        await create_backup(system, out, parallel=2)
    finally:
        await system.storage.close()


async def restore(system: System, source: Path, **options: bool) -> list[str]:
    lines: list[str] = []
    await system.storage.start()
    try:
        await restore_backup(system, source, parallel=2, report=lines.append, **options)
    finally:
        await system.storage.close()
    return lines


def nothing_restored(data_dir: Path) -> None:
    assert not (data_dir / "ripplecast.db").exists()
    assert not (data_dir / "secret.key").exists()
    media = data_dir / "media"
    assert not media.exists() or not [p for p in media.rglob("*") if p.is_file()]


def flip_byte(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (
            lambda b: flip_byte(b / "objects/vod/v1/240p/1.ts", 1234),
            "objects/vod/v1/240p/1.ts: SHA-256 ",
        ),
        (lambda b: flip_byte(b / "database/ripplecast.sqlite", 5000), "ripplecast.sqlite: SHA-256"),
        (lambda b: (b / "objects/sources/v1").unlink(), "objects/sources/v1: missing"),
        (
            lambda b: (b / "objects/vod/v1/master.m3u8").write_bytes(b"#EXTM3U\n#X\n"),
            "objects/vod/v1/master.m3u8: 11 bytes, the manifest says 8",
        ),
        (
            lambda b: (b / "manifest.json").write_bytes((b / "manifest.json").read_bytes()[:700]),
            "manifest.json is not valid JSON",
        ),
        (lambda b: (b / "manifest.json").unlink(), "has no manifest.json"),
    ],
    ids=[
        "object-byte",
        "database-byte",
        "object-missing",
        "object-size",
        "manifest-cut",
        "no-manifest",
    ],
)
async def test_a_damaged_backup_is_refused_and_nothing_is_restored(
    tmp_path: Path, damage: object, message: str
) -> None:
    source, target, backup = tmp_path / "source", tmp_path / "target", tmp_path / "bk"
    system = local_system(source)
    await seed(system, source)
    await back_up(system, backup)
    damage(backup)  # type: ignore[operator]
    with pytest.raises(BackupDamaged) as refused:
        await restore(local_system(target), backup)
    assert message in str(refused.value)
    if "manifest" not in message:
        assert "nothing was restored" in str(refused.value)
    nothing_restored(target)


async def test_an_older_backup_is_migrated_into_an_empty_schema(tmp_path: Path) -> None:
    source, target = tmp_path / "source", tmp_path / "target"
    system = local_system(source)
    await upgrade(system.database_url, "0001")
    await put_objects(system.storage)
    await back_up(system, tmp_path / "bk")
    assert read_manifest(tmp_path / "bk").schema_revision == "0001"
    restored = local_system(target)
    await upgrade(restored.database_url)  # a migrated schema without rows is still empty
    lines = await restore(restored, tmp_path / "bk")
    assert not any(line.startswith("--force") for line in lines)
    assert f"database: migrating from revision 0001 to {head_revision()}" in lines
    assert await current_revision(restored.database_url) == head_revision()


async def test_a_configured_secret_stays_out_and_must_match(tmp_path: Path) -> None:
    secret = "the cluster's long shared secret"
    source, backup = tmp_path / "source", tmp_path / "bk"
    system = local_system(source, secret_key=secret)
    await seed(system, source, secret_key=secret)
    await back_up(system, backup)
    manifest = read_manifest(backup)
    assert manifest.secret.source is SecretSource.SETTING
    assert manifest.secret.fingerprint == secret_fingerprint(secret.encode())
    assert not (backup / "secret.key").exists()
    for path in backup.rglob("*"):
        assert not path.is_file() or secret.encode() not in path.read_bytes(), path

    with pytest.raises(SecretMismatch, match="Set the same secret_key"):
        await restore(local_system(tmp_path / "a"), backup)
    nothing_restored(tmp_path / "a")
    with pytest.raises(SecretMismatch, match="fingerprints differ"):
        await restore(local_system(tmp_path / "b", secret_key="another secret"), backup)
    nothing_restored(tmp_path / "b")
    lines = await restore(local_system(tmp_path / "c", secret_key=secret), backup)
    assert "secret: secret_key in the settings is the backup's" in lines
    lines = await restore(local_system(tmp_path / "d"), backup, allow_new_secret=True)
    assert any("every stream key of the backup is invalid" in line for line in lines)


async def test_objects_in_s3_are_backed_up_and_restored_alike(
    tmp_path: Path, s3_server: str
) -> None:
    source, target, backup = tmp_path / "source", tmp_path / "target", tmp_path / "bk"

    def s3_system(data_dir: Path) -> System:
        storage = S3Storage(**s3server.s3_storage_kwargs(s3_server))
        return System(
            database_url_for(data_dir, None),
            storage,
            "s3",
            SecretPlace(None, data_dir / "secret.key"),
        )

    system = s3_system(source)
    await seed(system, source)
    await back_up(system, backup)
    restored = s3_system(target)
    await restore(restored, backup)
    await system.storage.start()
    await restored.storage.start()
    try:
        originals = await system.storage.list("")
        copies = await restored.storage.list("")
        assert [(o.key, o.size) for o in originals] == [(c.key, c.size) for c in copies]
        for info in originals:
            original = await system.storage.read_bytes(info.key)
            assert await restored.storage.read_bytes(info.key) == original
        # A non-empty bucket is refused like a non-empty folder.
        with pytest.raises(TargetNotEmpty, match=r"storage s3: 5 objects"):
            await restore_backup(
                System(
                    database_url_for(tmp_path / "other", None),
                    restored.storage,
                    "s3",
                    SecretPlace(None, tmp_path / "other" / "secret.key"),
                ),
                backup,
            )
    finally:
        await system.storage.close()
        await restored.storage.close()


async def test_pg_dump_must_be_of_the_servers_major_version() -> None:
    require_program("pg_dump")
    code, out, _ = await run(["pg_dump", "--version"], timeout=30)
    assert code == 0
    major = int(out.decode().split(")")[1].split(".")[0])
    found = await find_pg_tool("pg_dump", major)
    assert found.major == major and f"(PostgreSQL) {major}." in found.version
    with pytest.raises(DatabaseToolError) as refused:
        await find_pg_tool("pg_dump", major + 80)
    message = str(refused.value)
    assert f"pg_dump of PostgreSQL {major + 80} (the server's major version) is needed" in message
    assert f"is 'pg_dump (PostgreSQL) {major}." in message  # what was found instead
    assert f"apt-get install postgresql-client-{major + 80}" in message


async def test_a_failed_backup_leaves_nothing_and_never_overwrites(tmp_path: Path) -> None:
    system = local_system(tmp_path / "never-started")  # no database file
    backups = tmp_path / "backups"
    backups.mkdir()
    with pytest.raises(BackupError, match="no SQLite database at"):
        await back_up(system, backups / "bk")
    assert await asyncio.to_thread(os.listdir, backups) == []  # no OUT, no .partial folder
    (backups / "bk").mkdir()
    with pytest.raises(BackupError, match="already exists: a backup never overwrites"):
        await back_up(system, backups / "bk")
