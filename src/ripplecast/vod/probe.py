"""Probe an uploaded file with PyAV and refuse what cannot become a video.

Owns `InvalidMedia` and the `MediaInfo` description the ladder and the transcoder work from.

Invariants: `probe` either returns a `MediaInfo` whose streams really decode (the first frame of
the video stream, or of the audio stream of an audio-only file, was decoded) and whose duration
and picture size are within the limits it was given, or raises `InvalidMedia` with a stable
`reason` and a sentence a user can act on. It only ever opens the local file it was given:
playlists and other formats that reference further files or URLs are refused. It blocks (run
it in a thread).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import TypeVar

import av
import av.error
from av.audio.frame import AudioFrame
from av.audio.stream import AudioStream
from av.container import InputContainer
from av.stream import Disposition
from av.video.frame import VideoFrame
from av.video.stream import VideoStream

from ripplecast.errors import RipplecastError

MAX_DIMENSION = 16384
"""Widest or tallest picture accepted, whatever `max_pixels` says (the H.264 ceiling is lower)."""

REFERENCE_FORMATS = frozenset({"hls", "applehttp", "concat", "dash", "imf", "ffmetadata"})
"""Demuxers whose files point at other files or URLs: refused, so a crafted upload cannot make
the probe or ffmpeg read anything but itself."""

_AV_TIME_BASE = 1_000_000
_F = TypeVar("_F", VideoFrame, AudioFrame)
_MAX_FPS = 1000.0


class InvalidMedia(RipplecastError):
    """The file cannot be made into a video: `reason` is a short stable code for counters and
    API answers, the message a precise sentence.

    Reasons: unreadable, no_media_streams, no_video_stream, unsupported_codec, bad_duration,
    too_long, bad_dimensions, too_large.
    """

    def __init__(self, message: str, *, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class VideoStreamInfo:
    """The video stream ffmpeg will transcode (the first one that is not cover art)."""

    codec: str
    """Decoder name, e.g. "h264", "hevc", "vp9"."""
    width: int
    """Coded picture width in pixels, as decoded."""
    height: int
    """Coded picture height in pixels, as decoded."""
    display_width: int
    """Width as shown: pixel aspect ratio and rotation applied."""
    display_height: int
    """Height as shown: pixel aspect ratio and rotation applied."""
    rotation: int
    """Display rotation from the container's display matrix: 0, 90, 180 or 270."""
    fps: float
    """Average frame rate; 0.0 when the file does not say."""
    pix_fmt: str | None
    """Pixel format of the decoded frames, e.g. "yuv420p"."""


@dataclass(frozen=True)
class AudioStreamInfo:
    """The audio stream ffmpeg will transcode (the first one)."""

    codec: str
    """Decoder name, e.g. "aac", "mp3", "opus"."""
    sample_rate: int
    """Samples per second."""
    channels: int
    """Channel count."""


@dataclass(frozen=True)
class MediaInfo:
    """What a probed file holds."""

    container: str
    """Demuxer name, e.g. "mov,mp4,m4a,3gp,3g2,mj2", "matroska,webm", "mpegts"."""
    duration: float
    """Seconds, from the container, else from its longest stream."""
    video: VideoStreamInfo | None
    """None for an audio-only file."""
    audio: AudioStreamInfo | None
    """None for a file without (decodable) sound."""
    bit_rate: int | None
    """Overall bit rate in bit/s when the container states one."""


def probe(
    path: Path,
    *,
    max_duration: float,
    max_pixels: int,
    accept_audio_only: bool = True,
    max_probe_packets: int = 2000,
) -> MediaInfo:
    """Open `path`, decode its first frames and check it against the limits.

    An audio stream next to a good video stream that yields no frame within the first
    `max_probe_packets` packets is treated as absent (the video is made without sound).
    Returns the `MediaInfo`; raises `InvalidMedia`.
    """
    size = path.stat().st_size  # a missing file is the caller's bug, not the uploader's
    if size == 0:
        raise InvalidMedia("the file is empty (0 bytes)", reason="unreadable")
    try:
        container = av.open(str(path), options={"protocol_whitelist": "file"})
    except av.error.FFmpegError as error:
        raise InvalidMedia(
            "the file cannot be read as video or audio: it is not a media file, or it is"
            f" truncated ({error.strerror})",
            reason="unreadable",
        ) from None
    with container:
        return _inspect(
            container,
            max_duration=max_duration,
            max_pixels=max_pixels,
            accept_audio_only=accept_audio_only,
            max_probe_packets=max_probe_packets,
        )


def _inspect(
    container: InputContainer,
    *,
    max_duration: float,
    max_pixels: int,
    accept_audio_only: bool,
    max_probe_packets: int,
) -> MediaInfo:
    format_name = container.format.name
    if format_name in REFERENCE_FORMATS:
        raise InvalidMedia(
            f"the file is a playlist or reference file ({format_name}), not media: upload the"
            " video file itself",
            reason="unreadable",
        )
    if format_name == "image2" or format_name.endswith("_pipe"):
        raise InvalidMedia(
            f"the file is a still image ({format_name.removesuffix('_pipe')}), not a video",
            reason="no_video_stream",
        )
    video_stream = next(
        (s for s in container.streams.video if not s.disposition & Disposition.attached_pic),
        None,
    )
    audio_stream = next(iter(container.streams.audio), None)
    if video_stream is None and audio_stream is None:
        raise InvalidMedia(
            f"the file has no video or audio stream ({_describe_streams(container)})",
            reason="no_media_streams",
        )
    if video_stream is None and not accept_audio_only:
        raise InvalidMedia(
            "the file has sound but no video stream, and audio-only uploads are not accepted",
            reason="no_video_stream",
        )
    for stream in (video_stream, audio_stream):
        if stream is not None and stream.codec_context is None:
            raise InvalidMedia(
                f"the {stream.type} stream's codec is unknown: it cannot be decoded",
                reason="unsupported_codec",
            )
    if video_stream is not None:
        _check_dimensions(
            video_stream.codec_context.width, video_stream.codec_context.height, max_pixels
        )

    video_frame, audio_frame = _first_frames(
        container, video_stream, audio_stream, max_probe_packets
    )
    if video_stream is not None and video_frame is None:
        raise InvalidMedia(
            f"no picture could be decoded from the {video_stream.codec_context.name} video"
            f" stream in its first {max_probe_packets} packets: the file is truncated or"
            " corrupt",
            reason="unreadable",
        )
    if video_stream is None and audio_stream is not None and audio_frame is None:
        raise InvalidMedia(
            f"no sound could be decoded from the {audio_stream.codec_context.name} audio stream"
            f" in its first {max_probe_packets} packets: the file is truncated or corrupt",
            reason="unreadable",
        )

    video = None
    if video_stream is not None and video_frame is not None:
        video = _video_info(video_stream, video_frame)
        _check_dimensions(video.width, video.height, max_pixels)
        _check_dimensions(video.display_width, video.display_height, max_pixels)
    audio = None
    if audio_stream is not None and audio_frame is not None:
        audio = AudioStreamInfo(
            codec=audio_stream.codec_context.name,
            sample_rate=audio_frame.sample_rate,
            channels=audio_frame.layout.nb_channels,
        )

    duration = _duration(container, video_stream, audio_stream)
    if not math.isfinite(duration) or duration <= 0:
        raise InvalidMedia(
            f"duration {duration:.1f} s: the file is empty or truncated", reason="bad_duration"
        )
    if duration > max_duration:
        raise InvalidMedia(
            f"duration {duration:.1f} s is longer than the limit of {max_duration:g} s",
            reason="too_long",
        )
    return MediaInfo(
        container=format_name,
        duration=duration,
        video=video,
        audio=audio,
        bit_rate=container.bit_rate or None,
    )


def _describe_streams(container: InputContainer) -> str:
    kinds: dict[str, int] = {}
    for stream in container.streams:
        kinds[stream.type] = kinds.get(stream.type, 0) + 1
    if not kinds:
        return "it has no streams at all"
    listed = ", ".join(f"{count} {kind} stream{'s' * (count > 1)}" for kind, count in kinds.items())
    return f"it has {listed}"


def _check_dimensions(width: int, height: int, max_pixels: int) -> None:
    # The codec context of some containers only knows the size after a frame is decoded:
    # 0 there means "not yet known" and is checked again on the decoded frame.
    if width == 0 and height == 0:
        return
    if width <= 0 or height <= 0 or width > MAX_DIMENSION or height > MAX_DIMENSION:
        raise InvalidMedia(
            f"picture size {width}x{height} is outside 1..{MAX_DIMENSION} pixels per side",
            reason="bad_dimensions",
        )
    if width * height > max_pixels:
        raise InvalidMedia(
            f"picture size {width}x{height} ({width * height} pixels) is larger than the limit"
            f" of {max_pixels} pixels",
            reason="too_large",
        )


def _first_frames(
    container: InputContainer,
    video_stream: VideoStream | None,
    audio_stream: AudioStream | None,
    max_packets: int,
) -> tuple[VideoFrame | None, AudioFrame | None]:
    """Decode until each stream gave one frame, or `max_packets` packets were read."""
    streams = [s for s in (video_stream, audio_stream) if s is not None]
    video_frame: VideoFrame | None = None
    audio_frame: AudioFrame | None = None
    packets = 0
    try:
        for packet in container.demux(streams):
            packets += 1
            if packets > max_packets:
                break
            if packet.stream is video_stream and video_frame is None:
                video_frame = _first_of(packet.decode(), VideoFrame)
            elif packet.stream is audio_stream and audio_frame is None:
                audio_frame = _first_of(packet.decode(), AudioFrame)
            if (video_stream is None or video_frame) and (audio_stream is None or audio_frame):
                break
    except av.error.FFmpegError:
        pass  # a demuxing or decoding error: whatever decoded so far is what the file holds
    return video_frame, audio_frame


def _first_of(frames: Sequence[object], kind: type[_F]) -> _F | None:
    return next((f for f in frames if isinstance(f, kind)), None)


def _video_info(stream: VideoStream, frame: VideoFrame) -> VideoStreamInfo:
    width, height = frame.width, frame.height
    display_width = width
    aspect = stream.sample_aspect_ratio or stream.codec_context.sample_aspect_ratio
    if aspect is not None and aspect > 0 and aspect != 1:
        display_width = max(1, round(width * aspect))
    display_height = height
    rotation = round(frame.rotation / 90) * 90 % 360
    if rotation in (90, 270):
        display_width, display_height = display_height, display_width
    return VideoStreamInfo(
        codec=stream.codec_context.name,
        width=width,
        height=height,
        display_width=display_width,
        display_height=display_height,
        rotation=rotation,
        fps=_frame_rate(stream),
        pix_fmt=frame.format.name if frame.format is not None else None,
    )


def _frame_rate(stream: VideoStream) -> float:
    for rate in (stream.average_rate, stream.guessed_rate, stream.codec_context.framerate):
        if isinstance(rate, Fraction) and 0 < rate <= _MAX_FPS:
            return float(rate)
    return 0.0


def _duration(
    container: InputContainer, video: VideoStream | None, audio: AudioStream | None
) -> float:
    if container.duration is not None and container.duration > 0:
        return container.duration / _AV_TIME_BASE
    longest = 0.0
    for stream in (video, audio):
        if stream is not None and stream.duration is not None and stream.time_base is not None:
            longest = max(longest, float(stream.duration * stream.time_base))
    return longest
