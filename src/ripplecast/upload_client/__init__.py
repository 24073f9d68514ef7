"""The client of `ripplecast upload`: a tus 1.0 uploader that resumes after an interruption.

- `wire`: the pure parts (metadata header, resume key, state file text, problems, delays);
- `store`: the JSON state file, replaced atomically;
- `tus`: one aiohttp request per tus method, and the video's status;
- `uploader`: the loop that creates or resumes, appends and retries;
- `terminal`: Rich progress bars on stderr, the last line on stdout, exit codes.

Invariants: the upload URL is saved before the first byte is sent, so an interruption at any
later moment resumes; where to send from is always the server's word (`Upload-Offset`), never
a local guess; the token is never printed.
"""

from ripplecast.upload_client.store import ResumeStore
from ripplecast.upload_client.terminal import RichProgress, run_upload
from ripplecast.upload_client.tus import TusClient, VideoStatus
from ripplecast.upload_client.uploader import UploadOptions, UploadProgress, upload_file
from ripplecast.upload_client.wire import (
    DEFAULT_CHUNK_SIZE,
    TUS_VERSION,
    VISIBILITIES,
    OutcomeUnknown,
    SavedUpload,
    ServerMisbehaved,
    ServerUnavailable,
    UploadClientError,
    UploadOutcome,
    UploadRefused,
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

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "TUS_VERSION",
    "VISIBILITIES",
    "OutcomeUnknown",
    "ResumeStore",
    "RichProgress",
    "SavedUpload",
    "ServerMisbehaved",
    "ServerUnavailable",
    "TusClient",
    "UploadClientError",
    "UploadOptions",
    "UploadOutcome",
    "UploadProgress",
    "UploadRefused",
    "UploadUsageError",
    "VideoStatus",
    "default_state_file",
    "describe_refusal",
    "drop_expired",
    "encode_metadata",
    "final_line",
    "http_date",
    "mask",
    "parse_state",
    "problem_detail",
    "render_state",
    "resume_key",
    "retry_delay",
    "run_upload",
    "server_base",
    "upload_file",
]
