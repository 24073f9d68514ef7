"""Request and response models of the REST API (pydantic; they are the OpenAPI schemas too).

Units are in the field names or descriptions: seconds, bits per second, frames per second.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, Field

__all__ = [
    "AudioTrack",
    "StreamInfo",
    "StreamName",
    "Text",
    "VideoCodecName",
    "VideoTrack",
    "Viewers",
]


def _no_nul(value: str) -> str:
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    return value


Text = Annotated[
    str, AfterValidator(_no_nul), Field(json_schema_extra={"pattern": "^[^\\u0000]*$"})
]
"""Free text from a client. PostgreSQL cannot store NUL in text, so every engine refuses it
(a 422 naming the field) instead of the one engine failing."""


class StreamName(BaseModel):
    """The `{name}` path parameter of the stream operations.

    The schema is the shape of a name; `validate_stream_name` (no "..", the configured length)
    still decides, and a name it refuses is a 404 like an unknown one.
    """

    name: str = Field(
        min_length=1,
        max_length=255,
        pattern=r"^[A-Za-z0-9_-][A-Za-z0-9_.-]*$",
        description="A stream name: letters, digits, '_', '-', '.'; no leading dot.",
    )


VideoCodecName = Literal["h264", "hevc", "av1", "unknown"]


class VideoTrack(BaseModel):
    """The video of a live stream, from its sequence header (best effort)."""

    codec: VideoCodecName
    codecs: str | None = Field(default=None, description="RFC 6381 CODECS value, e.g. avc1.64001f.")
    width: int | None = Field(default=None, ge=1, description="Picture width in pixels.")
    height: int | None = Field(default=None, ge=1, description="Picture height in pixels.")
    fps: float = Field(ge=0, description="Video frames received per second since the start.")


class AudioTrack(BaseModel):
    """The audio of a live stream, from its sequence header (best effort)."""

    codec: Literal["aac", "mp3", "unknown"]
    codecs: str | None = Field(default=None, description="RFC 6381 CODECS value, e.g. mp4a.40.2.")
    sample_rate: int | None = Field(default=None, ge=1, description="Sampling frequency in Hz.")
    channels: int | None = Field(default=None, ge=0, description="AAC channelConfiguration.")


class Viewers(BaseModel):
    """Viewers of the stream right now."""

    total: int = Field(ge=0)
    http_flv: int = Field(ge=0, description="HTTP-FLV viewers.")
    rtmp: int = Field(ge=0, description="RTMP players.")
    hls: int = Field(
        0,
        ge=0,
        description="HLS players that fetched the playlist in the last few segment durations"
        " (an estimate: one address and browser count once).",
    )


class StreamInfo(BaseModel):
    """A live stream on this node, or in the cluster."""

    name: str = Field(description="The stream name (the channel slug).")
    state: Literal["live", "waiting"] = Field(
        description="live, or waiting for its publisher to return (grace period)."
    )
    started_at: datetime = Field(description="When the stream started (UTC).")
    uptime_seconds: float = Field(ge=0)
    ingest_bitrate: float = Field(
        ge=0, description="Media bits per second received from the publisher since the start."
    )
    video: VideoTrack | None = None
    audio: AudioTrack | None = None
    viewers: Viewers
    publishes: int = Field(ge=1, description="Publisher sessions (reconnects included).")
    origin: str | None = Field(
        default=None,
        description="In a cluster: the node id of the origin that owns the stream (null on the"
        " node that has it).",
    )
