"""Typed settings of one Ripplecast node, validated at load.

Sources, later ones winning: defaults, an optional TOML file (`--config FILE` or
`RIPPLECAST_CONFIG`), environment variables `RIPPLECAST_<NAME>`, then CLI flags. Every limit the
server enforces is a field here, so an operator can see and change it (`ripplecast config show`).
Secret fields are `SecretStr` or listed in `SECRET_FIELDS` and are masked when shown.
"""

from __future__ import annotations

import ipaddress
import os
import re
import tomllib
from contextvars import ContextVar
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

SECRET_FIELDS = frozenset(
    {
        "secret_key",
        "signing_keys",
        "database_url",
        "cache_url",
        "admission_webhook_url",
        "admission_webhook_secret",
        "storage_url",
        "s3_secret_access_key",
        "cluster_secret",
    }
)
"""Fields that are or may contain credentials and must never be printed or logged whole."""

LADDER_RUNG = re.compile(r"^[1-9][0-9]{1,3}:[1-9][0-9]{0,5}k:[1-9][0-9]{0,3}k$")
"""One rendition of `vod_ladder`: HEIGHT:VIDEO_BITRATE:AUDIO_BITRATE, bitrates in kbit/s."""

STREAM_NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
"""What a stream name may look like: no slashes, no dots first (so no `..`), no controls."""


class NodeRole(StrEnum):
    """What one node of a cluster does (`ripplecast serve --role`)."""

    ALL = "all"
    """Everything in one process: the single-box default."""
    ORIGIN = "origin"
    """Accepts publishers over RTMP, owns their streams and packages them."""
    EDGE = "edge"
    """Pulls live streams from their origins and VOD files from storage, serves viewers."""
    WORKER = "worker"
    """Runs transcoding jobs only."""
    WEB = "web"
    """Pages, REST API, uploads and the redirect to the least-loaded edge."""


class TlsVersion(StrEnum):
    """The oldest TLS version the node's HTTPS and RTMPS listeners accept."""

    TLS1_2 = "TLSv1.2"
    TLS1_3 = "TLSv1.3"


class PublishMode(StrEnum):
    """Who may publish: holders of a configured stream key, or anyone (development only)."""

    KEYS = "keys"
    OPEN = "open"


_config_file: ContextVar[Path | None] = ContextVar("ripplecast_config_file", default=None)


class _TomlSource(PydanticBaseSettingsSource):
    """Reads settings from the TOML file given to `load_settings` or named by RIPPLECAST_CONFIG."""

    def __init__(self, settings_cls: type[BaseSettings], path: Path | None) -> None:
        super().__init__(settings_cls)
        self._data: dict[str, Any] = {}
        if path is not None:
            with path.open("rb") as f:
                self._data = tomllib.load(f)

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return self._data.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return {k: v for k, v in self._data.items() if k in self.settings_cls.model_fields}


class Settings(BaseSettings):
    """Everything one node needs to know at start; immutable once loaded."""

    model_config = SettingsConfigDict(
        env_prefix="RIPPLECAST_", frozen=True, extra="forbid", validate_default=True
    )

    # --- where to listen and keep data ---------------------------------------------------
    rtmp_host: str = Field("0.0.0.0", description="Address the RTMP server binds to.")
    rtmp_port: int = Field(1935, ge=0, le=65535, description="RTMP port (0 = any free port).")
    http_host: str = Field("0.0.0.0", description="Address the HTTP server binds to.")
    http_port: int = Field(8080, ge=0, le=65535, description="HTTP port (0 = any free port).")
    public_host: str = Field(
        "localhost", description="Host name shown in URLs printed for users (OBS server, players)."
    )
    data_dir: Path = Field(Path("data"), description="Folder for all state of this node.")
    log_level: str = Field("INFO", description="Python logging level.")

    # --- TLS: HTTPS and RTMPS -------------------------------------------------------------
    tls_cert_file: Path | None = Field(
        None,
        description="PEM certificate chain (the server's certificate first, then the"
        " intermediates). With tls_key_file, the HTTP port serves HTTPS only and RTMPS listens"
        " on rtmps_port (plain RTMP stays on rtmp_port). Loaded again on SIGHUP. Empty: no TLS.",
    )
    tls_key_file: Path | None = Field(
        None,
        description="The PEM private key of tls_cert_file (unencrypted; readable by this"
        " user only). Set both or neither.",
    )
    rtmps_port: int = Field(
        1936,
        ge=0,
        le=65535,
        description="RTMPS (RTMP over TLS) port, opened when a certificate is set (0 = any free"
        " port). 443 lets clients leave the port out of rtmps:// URLs.",
    )
    tls_min_version: TlsVersion = Field(
        TlsVersion.TLS1_2, description="Oldest TLS version accepted: TLSv1.2 or TLSv1.3."
    )
    tls_handshake_timeout: float = Field(
        10.0,
        gt=0,
        le=300,
        description="Seconds a client has to finish the TLS handshake (HTTPS and RTMPS) before"
        " it is disconnected.",
    )

    # --- shared state ----------------------------------------------------------------------
    database_url: str = Field(
        "",
        description="Metadata database: postgresql://..., mysql://... (MariaDB) or"
        " sqlite:///PATH. Empty: SQLite file ripplecast.db in the data dir.",
    )
    cache_url: str = Field(
        "memory://", description="Cache, rate limits and events: memory:// or redis://HOST:PORT/DB."
    )
    cache_prefix: str = Field("rc:", description="Prefix of every cache key (share one Redis).")
    cache_max_entries: int = Field(
        100_000, ge=1, description="Most keys the in-process cache holds."
    )
    cache_max_queued_messages: int = Field(
        1_000, ge=1, description="Most undelivered events per subscriber."
    )
    secret_key: SecretStr | None = Field(
        None,
        description="Server secret for stream-key hashes and signatures. Empty: generated"
        " into the data dir on first start. Every node of a cluster needs the same one.",
    )
    signing_keys: dict[str, SecretStr] = Field(
        default_factory=dict,
        description="Signed-URL keys by key id, for rotation. Empty: one key derived from"
        " secret_key.",
    )
    signing_key_id: str = Field(
        "", description="Key id that signs new URLs (must be in signing_keys if those are set)."
    )
    signed_url_ttl_seconds: int = Field(
        3600, ge=10, description="Lifetime of the signed URLs the server hands out."
    )

    # --- accounts --------------------------------------------------------------------------
    registration_open: bool = Field(True, description="Anyone may register an account.")
    session_ttl_seconds: int = Field(
        14 * 24 * 3600, ge=60, description="A login lasts this long after its last use."
    )
    password_min_length: int = Field(8, ge=8, le=128, description="Shortest password accepted.")
    argon2_time_cost: int = Field(2, ge=1, le=10, description="argon2id passes.")
    argon2_memory_kib: int = Field(19 * 1024, ge=8 * 1024, description="argon2id memory (KiB).")
    login_window_seconds: int = Field(
        900, ge=1, description="Window over which failed logins are counted."
    )
    login_max_failures_per_account: int = Field(
        5, ge=1, description="Failed logins per account in the window before it is locked."
    )
    login_max_failures_per_ip: int = Field(
        20, ge=1, description="Failed logins per client IP in the window before it is locked."
    )
    api_max_body_bytes: int = Field(
        1024 * 1024, ge=1024, description="Largest API request body accepted."
    )

    # --- who may publish -----------------------------------------------------------------
    publish_mode: PublishMode = Field(
        PublishMode.KEYS,
        description="'keys': a channel's stream key is needed; 'open': any name (development).",
    )
    rtmp_app: str = Field("live", description="The RTMP application name in publish/play URLs.")
    stream_name_max_length: int = Field(64, ge=1, le=255, description="Longest stream name.")

    # --- RTMP limits ---------------------------------------------------------------------
    rtmp_handshake_timeout: float = Field(
        10.0, gt=0, description="Seconds a client has to finish the RTMP handshake."
    )
    rtmp_idle_timeout: float = Field(
        30.0, gt=0, description="Seconds a connection may stay without publish or play."
    )
    rtmp_publisher_timeout: float = Field(
        20.0, gt=0, description="Seconds without data after which a publisher is dropped."
    )
    rtmp_max_chunk_size: int = Field(
        65536, ge=128, le=0x7FFFFFFF, description="Largest chunk size a peer may set."
    )
    rtmp_max_message_size: int = Field(
        8 * 1024 * 1024, ge=1024, description="Largest RTMP message (a keyframe) accepted."
    )
    rtmp_max_chunk_streams: int = Field(
        64, ge=4, description="Most chunk stream ids one connection may use."
    )
    rtmp_out_chunk_size: int = Field(
        4096, ge=128, le=65536, description="Chunk size Ripplecast sends with."
    )
    rtmp_ack_window: int = Field(
        2_500_000, ge=1024, description="Window acknowledgement size sent to peers."
    )
    rtmp_max_connections: int = Field(
        10_000, ge=1, description="Most RTMP connections open at once."
    )
    rtmp_max_bad_commands: int = Field(
        16, ge=1, description="Unknown or invalid commands tolerated before closing."
    )
    amf_max_depth: int = Field(16, ge=2, le=64, description="Deepest AMF0 nesting accepted.")
    amf_max_items: int = Field(4096, ge=16, description="Most entries in one AMF0 object.")

    # --- live hub ------------------------------------------------------------------------
    batch_interval_ms: int = Field(
        30,
        ge=1,
        le=1000,
        description="Viewer sockets are written once per batch of this length: longer batches"
        " cost less CPU per viewer and add more delay (docs/benchmarks.md).",
    )
    gop_cache_max_bytes: int = Field(
        16 * 1024 * 1024, ge=0, description="Largest GOP kept for a new viewer's first frame."
    )
    reader_max_queue_bytes: int = Field(
        2 * 1024 * 1024, ge=4096, description="Unsent bytes after which a viewer skips ahead."
    )
    reader_max_behind_seconds: float = Field(
        10.0, gt=0, description="A viewer behind this long is disconnected."
    )
    viewer_send_buffer_bytes: int = Field(
        0,
        ge=0,
        description="Kernel send buffer of each viewer socket (0 = the OS default). Bounds how"
        " much a stalled viewer holds in the kernel before the hub sees it fall behind.",
    )
    reconnect_grace_seconds: float = Field(
        10.0, ge=0, description="A stream whose publisher left waits this long for it to return."
    )

    # --- HLS -----------------------------------------------------------------------------
    hls_enabled: bool = Field(True, description="Package every live stream to HLS.")
    hls_segment_seconds: float = Field(
        2.0, ge=0.5, le=20, description="Target segment duration (cut on the next keyframe)."
    )
    hls_window_segments: int = Field(6, ge=2, le=100, description="Segments in the playlist.")
    hls_max_segment_bytes: int = Field(
        64 * 1024 * 1024, ge=65536, description="A segment is cut when it reaches this size."
    )

    # --- HTTP ----------------------------------------------------------------------------
    http_max_viewers: int = Field(10_000, ge=1, description="Most HTTP-FLV viewers at once.")
    shutdown_timeout: float = Field(
        5.0, ge=0, description="Seconds to close connections cleanly once the node stops."
    )
    drain_timeout_seconds: float = Field(
        30.0,
        ge=0,
        description="On SIGTERM the node drains: /readyz answers 503 and no new viewer or"
        " publisher is accepted, while those connected go on for up to this long (a second"
        " SIGTERM or SIGINT stops at once).",
    )
    readyz_timeout_seconds: float = Field(
        2.0,
        gt=0,
        le=30,
        description="/readyz waits this long for the database, the cache and the storage to"
        " answer before it says not ready.",
    )
    log_format: Literal["text", "json"] = Field(
        "text",
        description="Log lines as text for people, or one JSON object per line (with node,"
        " request and stream ids) for a log collector.",
    )
    vod_cdn_max_age_seconds: int = Field(
        3600,
        ge=1,
        description="How long a shared cache (a CDN) may serve a public video's files before"
        " asking this node again (s-maxage): a video made private or deleted stays reachable"
        " through a CDN at most this long. Browsers keep them a year either way.",
    )

    web_vendor_dir: Path | None = Field(
        None,
        description="Folder holding the player libraries installed from npm (node_modules with"
        " hls.js and mpegts.js). Empty: web/node_modules of the source tree, where"
        " `make` installs them.",
    )

    # --- metrics -------------------------------------------------------------------------
    metrics_enabled: bool = Field(
        True, description="Serve Prometheus metrics at /metrics on the HTTP listener."
    )
    metrics_stream_labels: bool = Field(
        True,
        description="Per-stream series carry a stream label; false: they are summed per node"
        " without it (for very large deployments).",
    )
    metrics_max_labelled_streams: int = Field(
        500,
        ge=1,
        description="Most streams with their own stream label; the series of further streams"
        ' are summed under stream="_other".',
    )

    # --- webhooks ------------------------------------------------------------------------
    webhooks_enabled: bool = Field(
        True, description="Deliver events to the webhooks users register."
    )
    webhook_timeout_seconds: float = Field(
        5.0, gt=0, le=60, description="Seconds one delivery attempt may take."
    )
    webhook_max_attempts: int = Field(
        5, ge=1, le=20, description="Attempts per delivery (timeouts, connection errors, 429, 5xx)."
    )
    webhook_backoff_base_seconds: float = Field(
        0.5, ge=0, description="Wait before the first retry; doubled for each next one."
    )
    webhook_backoff_max_seconds: float = Field(
        30.0, ge=0, description="Longest wait between two attempts."
    )
    webhook_max_queue: int = Field(
        1000, ge=1, description="Events waiting for delivery; further events are dropped."
    )
    webhook_max_in_flight: int = Field(
        16, ge=1, description="Deliveries under way at once (also the connection limit)."
    )
    webhook_drain_seconds: float = Field(
        5.0, ge=0, description="At shutdown, seconds to finish queued deliveries."
    )
    webhook_cache_seconds: float = Field(
        5.0, ge=0, description="How long the list of webhooks per stream is cached."
    )
    webhook_allow_private_addresses: bool = Field(
        False,
        description="Let webhooks reach loopback, private and link-local addresses (only where"
        " every user is trusted: otherwise a webhook can probe the server's own network).",
    )
    admission_webhook_url: str = Field(
        "", description="Asked before every publish; may deny it. Empty: no admission webhook."
    )
    admission_webhook_secret: SecretStr | None = Field(
        None, description="Signs admission requests (required with admission_webhook_url)."
    )
    admission_webhook_timeout_seconds: float = Field(
        3.0, gt=0, le=30, description="Seconds the admission webhook has to answer."
    )
    admission_webhook_fail_open: bool = Field(
        False,
        description="Allow the publish when the admission webhook does not answer (or answers"
        " 5xx); by default it is refused.",
    )

    # --- media storage -------------------------------------------------------------------
    storage_url: str = Field(
        "",
        description="Where media objects go: a folder path (file:///PATH or PATH) or"
        " s3://BUCKET[/PREFIX]. Empty: the folder 'media' in the data dir.",
    )
    s3_endpoint_url: str = Field(
        "", description="S3 endpoint (MinIO, Ceph, a test server). Empty: AWS for the region."
    )
    s3_region: str = Field("us-east-1", description="S3 region.")
    s3_access_key_id: str = Field(
        "", description="S3 access key id. Empty: the usual AWS credential chain."
    )
    s3_secret_access_key: SecretStr | None = Field(None, description="S3 secret access key.")
    s3_multipart_threshold_bytes: int = Field(
        16 * 1024 * 1024,
        ge=5 * 1024 * 1024,
        description="Objects at least this large are uploaded in parts.",
    )
    s3_multipart_part_bytes: int = Field(
        8 * 1024 * 1024, ge=5 * 1024 * 1024, description="Size of each part of a multipart upload."
    )
    s3_max_attempts: int = Field(
        5, ge=1, le=20, description="Attempts per S3 request (throttling, 5xx, connection errors)."
    )
    s3_presigned_get: bool = Field(
        False,
        description="Redirect VOD segment requests to presigned S3 URLs instead of proxying the"
        " bytes through the node.",
    )

    # --- video on demand: uploads -------------------------------------------------------
    vod_enabled: bool = Field(True, description="Accept uploads and serve videos on demand.")
    upload_max_bytes: int = Field(
        8 * 1024**3, ge=1024, description="Largest file one upload may be."
    )
    upload_quota_bytes: int = Field(
        50 * 1024**3,
        ge=0,
        description="Bytes of source video one user may store (admins are not limited).",
    )
    upload_expiry_seconds: int = Field(
        24 * 3600, ge=60, description="An unfinished resumable upload is removed after this long."
    )
    upload_chunk_max_bytes: int = Field(
        64 * 1024 * 1024,
        ge=64 * 1024,
        description="Largest body of one resumable-upload PATCH request.",
    )
    probe_max_duration_seconds: float = Field(
        12 * 3600, gt=0, description="Longest video accepted."
    )
    vod_accept_audio_only: bool = Field(
        True,
        description="Accept uploads with sound and no picture (audio-only HLS); off: a file"
        " without a video stream is refused.",
    )
    probe_max_pixels: int = Field(
        8192 * 8192, ge=64 * 64, description="Largest picture (width x height) accepted."
    )

    # --- video on demand: transcoding ----------------------------------------------------
    worker_enabled: bool = Field(
        True, description="Run a transcoding worker inside `ripplecast serve`."
    )
    worker_concurrency: int = Field(1, ge=1, le=64, description="Jobs one worker runs at once.")
    ffmpeg_path: str = Field(
        "",
        description="ffmpeg to transcode with. Empty: ffmpeg from PATH, else the binary of the"
        " imageio-ffmpeg wheel.",
    )
    vod_ladder: list[str] = Field(
        default_factory=lambda: [
            "1080:5000k:192k",
            "720:2800k:128k",
            "480:1400k:128k",
            "360:800k:96k",
            "240:400k:64k",
        ],
        description="Renditions as HEIGHT:VIDEO_BITRATE:AUDIO_BITRATE; renditions taller than"
        " the source are left out (never upscaled), and the smallest one is always made.",
    )
    vod_segment_seconds: float = Field(
        4.0, ge=1, le=20, description="HLS segment duration (every rendition has a keyframe there)."
    )
    vod_x264_preset: str = Field("veryfast", description="x264 preset for VOD renditions.")
    vod_thumbnail_interval_seconds: float = Field(
        5.0, ge=0.5, description="One scrub-preview thumbnail every this many seconds."
    )
    vod_thumbnail_width: int = Field(160, ge=32, le=640, description="Scrub thumbnail width.")
    job_lease_seconds: float = Field(
        30.0, ge=2, description="A worker's claim on a job lasts this long unless renewed."
    )
    job_max_attempts: int = Field(3, ge=1, le=20, description="Attempts per transcoding job.")
    job_backoff_base_seconds: float = Field(
        10.0, ge=0, description="Wait before a failed job is retried; doubled each attempt."
    )
    job_poll_seconds: float = Field(
        1.0, gt=0, le=60, description="How often an idle worker looks for a job."
    )
    job_timeout_seconds: float = Field(
        6 * 3600, gt=0, description="A transcode running longer than this is stopped and failed."
    )

    # --- cluster ---------------------------------------------------------------------------
    role: NodeRole = Field(
        NodeRole.ALL,
        description="What this node does: all (single box), origin, edge, worker or web.",
    )
    cluster_node_id: str = Field(
        "",
        max_length=64,
        description="This node's id in the cluster registry. Empty: ROLE-HOSTNAME-PID.",
    )
    cluster_secret: SecretStr | None = Field(
        None,
        description="Authenticates pulls between nodes (an edge reading an origin). Empty:"
        " derived from secret_key. Every node of a cluster needs the same one.",
    )
    cluster_internal_http_url: str = Field(
        "",
        description="Where other nodes reach this node's HTTP server (http://10.0.0.5:8080)."
        " Empty: http://127.0.0.1:HTTP_PORT, right for a cluster on one machine only.",
    )
    cluster_public_http_url: str = Field(
        "",
        description="Where viewers reach this node over HTTP (what the redirect endpoint sends"
        " them to). Empty: http://PUBLIC_HOST:HTTP_PORT.",
    )
    cluster_public_rtmp_url: str = Field(
        "", description="Where players reach this node over RTMP. Empty: rtmp://PUBLIC_HOST:PORT."
    )
    cluster_node_ttl_seconds: float = Field(
        10.0,
        ge=1,
        le=300,
        description="A node stays in the registry this long after its last heartbeat (it beats"
        " every third of it).",
    )
    cluster_stream_claim_ttl_seconds: float = Field(
        6.0,
        ge=1,
        le=300,
        description="An origin's claim on a stream name lasts this long unless renewed (every"
        " third of it); after a crash, the name is free again this much later.",
    )
    cluster_fence_ttl_seconds: float = Field(
        7 * 24 * 3600.0,
        ge=3600,
        description="A stream's fencing-token counter lives this long after its last claim.",
    )
    cluster_max_nodes: int = Field(1_000, ge=1, description="Most nodes the registry lists.")
    edge_connect_timeout_seconds: float = Field(
        5.0,
        gt=0,
        le=60,
        description="An edge waits this long for an origin to answer a pull before it gives up.",
    )
    edge_idle_seconds: float = Field(
        10.0,
        ge=0,
        description="An edge closes its upstream of a stream this long after its last viewer left.",
    )
    edge_failover_seconds: float = Field(
        30.0,
        ge=0,
        description="When its upstream breaks, an edge keeps the stream's viewers this long"
        " while it looks for the stream's (new) owner.",
    )
    edge_retry_seconds: float = Field(
        0.25,
        gt=0,
        le=10,
        description="How often an edge looks the owner up again while its upstream is broken.",
    )
    edge_max_upstreams: int = Field(1_000, ge=1, description="Most streams one edge pulls at once.")
    edge_upstream_max_tag_bytes: int = Field(
        16 * 1024 * 1024,
        ge=64 * 1024,
        description="Largest FLV tag an edge accepts from an upstream.",
    )
    edge_policy_cache_seconds: float = Field(
        2.0,
        ge=0,
        le=60,
        description="An edge remembers the access policy's channel and ready-video lookups this"
        " long (one database query per channel per period, not per viewer request); a change"
        " of visibility reaches its viewers within it. Credentials are never remembered. 0: off.",
    )
    edge_policy_cache_entries: int = Field(
        10_000, ge=1, description="Most channel and video lookups one edge remembers."
    )
    vod_edge_cache_memory_bytes: int = Field(
        256 * 1024 * 1024,
        ge=0,
        description="VOD bytes an edge keeps in memory (least recently used evicted first).",
    )
    vod_edge_cache_disk_bytes: int = Field(
        4 * 1024**3,
        ge=0,
        description="VOD bytes an edge keeps on disk in DATA_DIR/vod-cache (LRU); 0: no disk.",
    )
    vod_edge_cache_max_object_bytes: int = Field(
        64 * 1024 * 1024,
        ge=1024,
        description="Largest VOD file an edge caches (bigger ones are passed through).",
    )
    trusted_proxies: list[str] = Field(
        default_factory=list,
        description="Addresses or networks (CIDR) of the load balancers in front, e.g."
        ' ["10.0.0.0/8"]: from these peers the client\'s address is taken from'
        " X-Forwarded-For (HTTP) or the PROXY protocol header (RTMP). Empty: the peer's own.",
    )
    rtmp_proxy_protocol: bool = Field(
        False,
        description="RTMP connections from trusted_proxies may start with a PROXY protocol"
        " header (HAProxy send-proxy or send-proxy-v2) naming the client; a malformed one is"
        " refused.",
    )
    reuse_port: bool = Field(
        False,
        description="Bind the RTMP and HTTP ports with SO_REUSEPORT, so several edge processes"
        " of one machine share them (the kernel spreads the connections).",
    )

    @field_validator("tls_cert_file", "tls_key_file", mode="before")
    @classmethod
    def _empty_path_is_none(cls, value: object) -> object:
        # RIPPLECAST_TLS_CERT_FILE="" means "no TLS", not the current directory.
        return None if value == "" else value

    @model_validator(mode="after")
    def _tls_pair(self) -> Settings:
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            given, missing = (
                ("tls_cert_file", "tls_key_file")
                if self.tls_key_file is None
                else ("tls_key_file", "tls_cert_file")
            )
            raise ValueError(
                f"{given} is set but {missing} is not: TLS needs both the certificate and its"
                " key (or neither, for plain HTTP and RTMP)"
            )
        if self.tls_enabled and self.rtmps_port:
            for other in ("rtmp_port", "http_port"):
                if getattr(self, other) == self.rtmps_port:
                    raise ValueError(f"rtmps_port and {other} are both {self.rtmps_port}")
        return self

    @property
    def tls_enabled(self) -> bool:
        """True when a certificate is configured: HTTPS on http_port, RTMPS on rtmps_port."""
        return self.tls_cert_file is not None

    @field_validator("trusted_proxies")
    @classmethod
    def _proxy_networks(cls, networks: list[str]) -> list[str]:
        for entry in networks:
            try:
                ipaddress.ip_network(entry, strict=False)
            except ValueError:
                raise ValueError(f"{entry!r} is not an IP address or network") from None
        return networks

    @field_validator("vod_ladder")
    @classmethod
    def _ladder_shape(cls, ladder: list[str]) -> list[str]:
        if not ladder:
            raise ValueError("the ladder needs at least one rendition")
        for rung in ladder:
            if not LADDER_RUNG.match(rung):
                raise ValueError(
                    f"{rung!r} is not HEIGHT:VIDEO_BITRATE:AUDIO_BITRATE (720:2800k:128k)"
                )
        return ladder

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        path = _config_file.get()
        if path is None and os.environ.get("RIPPLECAST_CONFIG"):
            path = Path(os.environ["RIPPLECAST_CONFIG"])
        toml = _TomlSource(settings_cls, path)
        return (init_settings, env_settings, toml)

    def masked(self) -> dict[str, Any]:
        """Return the settings as plain data with every secret replaced by '***'."""
        data = self.model_dump(mode="json")
        for name in SECRET_FIELDS:
            value = data.get(name)
            if isinstance(value, dict):
                data[name] = {key_id: "***" for key_id in value}
            elif name.endswith("_url") and isinstance(value, str):
                data[name] = _mask_url(value)
            elif value:
                data[name] = "***"
        return data


def _mask_url(url: str) -> str:
    """Hide the password in a URL such as postgresql://user:PASSWORD@host/db."""
    return re.sub(r"(//[^:/@]+:)[^@]*@", r"\1***@", url)


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Load settings from defaults, TOML, environment and `overrides` (CLI flags win).

    Raises `pydantic.ValidationError` with every invalid field named.
    """
    clean = {k: v for k, v in overrides.items() if v is not None}
    token = _config_file.set(config_file)
    try:
        return Settings(**clean)
    finally:
        _config_file.reset(token)
