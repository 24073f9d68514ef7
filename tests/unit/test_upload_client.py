"""The pure parts of the upload client, and its state file on a real disk."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from ripplecast.upload_client import (
    ResumeStore,
    SavedUpload,
    UploadOutcome,
    UploadUsageError,
    default_state_file,
    describe_refusal,
    drop_expired,
    encode_metadata,
    final_line,
    http_date,
    mask,
    parse_state,
    problem_detail,
    render_state,
    resume_key,
    retry_delay,
    server_base,
)


def decode_metadata(header: str) -> dict[str, str]:
    """The tus 1.0 rule, written independently of the encoder."""
    found = {}
    for pair in header.split(","):
        key, _, value = pair.partition(" ")
        found[key] = base64.b64decode(value, validate=True).decode()
    return found


def test_metadata_round_trips_any_text() -> None:
    fields = {
        "filename": "holiday, day 2 (final).mp4",
        "title": "Été à Kyōto 🎥",
        "description": "line one\nline two, with commas",
        "visibility": "unlisted",
    }
    header = encode_metadata(fields)
    assert header.isascii() and "\n" not in header
    assert decode_metadata(header) == fields


def test_metadata_empty_value_is_the_bare_key() -> None:
    assert encode_metadata({"title": "x", "description": ""}) == "title eA==,description"
    assert decode_metadata("description") == {"description": ""}


@pytest.mark.parametrize("key", ["", "two words", "a,b", "clé"])
def test_metadata_refuses_keys_tus_cannot_carry(key: str) -> None:
    with pytest.raises(UploadUsageError):
        encode_metadata({key: "v"})


def test_resume_key_changes_with_server_path_size_and_mtime() -> None:
    base = ("http://a:1", Path("/v/a.mp4"), 10, 5)
    keys = {
        resume_key(*base),
        resume_key("http://b:1", *base[1:]),
        resume_key(base[0], Path("/v/b.mp4"), 10, 5),
        resume_key(*base[:2], 11, 5),
        resume_key(*base[:3], 6),
    }
    assert len(keys) == 5
    assert resume_key(*base) == resume_key(*base)


def test_state_round_trips_and_tolerates_garbage() -> None:
    entries = {
        "k1": SavedUpload("http://h/api/v1/uploads/A", 1.5, None),
        "k2": SavedUpload("http://h/api/v1/uploads/B", 2.0, 99.0),
    }
    assert parse_state(render_state(entries)) == entries
    for text in ("", "{", "[]", '{"version": 99, "uploads": {}}', '{"version": 1}'):
        assert parse_state(text) == {}
    mixed = json.loads(render_state(entries))
    mixed["uploads"]["bad1"] = {"url": 3, "created_at": 1}
    mixed["uploads"]["bad2"] = "not an entry"
    mixed["uploads"]["bad3"] = {"url": "u", "created_at": 1, "expires_at": "soon"}
    assert parse_state(json.dumps(mixed)) == entries


def test_expired_entries_are_dropped() -> None:
    entries = {
        "old": SavedUpload("u1", 0, 100.0),
        "new": SavedUpload("u2", 0, 300.0),
        "open": SavedUpload("u3", 0, None),
    }
    assert set(drop_expired(entries, now=200.0)) == {"new", "open"}


def test_store_on_disk(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "folder" / "uploads.json"
    now = [1000.0]
    store = ResumeStore(path, clock=lambda: now[0])
    assert store.get("k") is None
    store.remove("k")  # nothing to remove: no file is written
    assert not path.exists()
    saved = SavedUpload("http://h/api/v1/uploads/A", 1000.0, 2000.0)
    store.put("k", saved)
    store.put("other", SavedUpload("http://h/api/v1/uploads/B", 1000.0, None))
    assert ResumeStore(path, clock=lambda: now[0]).get("k") == saved  # another run sees it
    store.remove("k")
    assert store.get("k") is None and store.get("other") is not None
    assert [p.name for p in path.parent.iterdir()] == ["uploads.json"]  # no temporary left
    now[0] = 3000.0
    store.put("k", saved)  # already expired: kept in the call, dropped when read back
    assert store.get("k") is None


def test_store_replaces_a_corrupt_file(tmp_path: Path) -> None:
    path = tmp_path / "uploads.json"
    path.write_text("{ not json")
    store = ResumeStore(path)
    assert store.get("k") is None
    store.put("k", SavedUpload("u", 1.0, None))
    assert json.loads(path.read_text())["uploads"]["k"]["url"] == "u"


def test_problem_detail() -> None:
    problem = {"title": "Unprocessable Content", "status": 422, "detail": "no video stream"}
    assert problem_detail(json.dumps(problem).encode(), 422) == "no video stream"
    assert problem_detail(b'{"title": "Conflict", "status": 409}', 409) == "Conflict"
    assert problem_detail(b"<html>oops</html>", 502) == "Bad Gateway"
    assert problem_detail(b"\xff\xfe", 599) == "HTTP 599"


def test_refusals_say_what_to_fix() -> None:
    assert "token" in describe_refusal(401, "authentication required")
    assert "scope" not in describe_refusal(413, "over quota")
    assert "over quota" in describe_refusal(413, "over quota")


def test_retry_delay_doubles_up_to_the_cap() -> None:
    delays = [retry_delay(n, base=0.5, cap=5.0) for n in range(1, 7)]
    assert delays == [0.5, 1.0, 2.0, 4.0, 5.0, 5.0]


def test_mask_hides_the_token_but_not_trivial_strings() -> None:
    token = "rc_abcdefghijklmnop"
    assert mask(f"Authorization: Bearer {token}!", token) == "Authorization: Bearer ***!"
    assert mask("no such file", "s") == "no such file"


def test_final_line() -> None:
    assert final_line(UploadOutcome("V1", "queued")) == "video V1 queued"
    ready = UploadOutcome("V1", "ready", "http://h:1/vod/V1/master.m3u8")
    assert final_line(ready) == "video V1 ready http://h:1/vod/V1/master.m3u8"
    assert final_line(UploadOutcome("V1", "failed", error="x")) == "video V1 failed"


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("http://127.0.0.1:8080", "http://127.0.0.1:8080"),
        ("http://127.0.0.1:8080/", "http://127.0.0.1:8080"),
        (" https://video.example/base/ ", "https://video.example/base"),
    ],
)
def test_server_base(given: str, expected: str) -> None:
    assert server_base(given) == expected


@pytest.mark.parametrize("bad", ["127.0.0.1:8080", "ftp://h", "http://", "http://h/?x=1"])
def test_server_base_refuses(bad: str) -> None:
    with pytest.raises(UploadUsageError):
        server_base(bad)


def test_default_state_file() -> None:
    assert default_state_file({"RIPPLECAST_UPLOAD_STATE": "/s.json"}) == Path("/s.json")
    assert default_state_file({"XDG_CACHE_HOME": "/c"}) == Path("/c/ripplecast/uploads.json")
    assert default_state_file({}) == Path.home() / ".cache" / "ripplecast" / "uploads.json"


def test_http_date() -> None:
    assert http_date("Thu, 01 Jan 1970 00:01:40 GMT") == 100.0
    assert http_date("tomorrow") is None
    assert http_date(None) is None
