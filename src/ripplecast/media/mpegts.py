"""MPEG-2 transport stream muxer (ISO 13818-1) for HLS: H.264/H.265 video, AAC (ADTS) or MP3.

`TsMuxer` turns FLV-style samples (length-prefixed NAL units, raw AAC frames) into 188-byte TS
packets. It is sans-I/O: every call returns the bytes to append to the current segment.

Invariants:
- one program (number 1); PMT on PID 0x1000, video on 0x100, audio on 0x101;
- continuity counters are per PID and never reset, so consecutive segments concatenate into a
  valid stream;
- PTS/DTS are `ms * 90` wrapped to 33 bits; PCR is `DTS - 700 ms` clipped at 0 (never after
  the DTS), sent on the PCR PID on keyframes, on the first PES of each segment and at least
  every 40 ms of media time;
- every video access unit starts with exactly one AUD, and keyframes carry the parameter sets
  from the decoder configuration record unless the frame already has them;
- a call that raises leaves the muxer's state unchanged.
"""

from __future__ import annotations

from ripplecast.errors import UsageError
from ripplecast.media import avc, hevc
from ripplecast.media.aac import AudioSpecificConfig, adts_header, parse_audio_specific_config
from ripplecast.media.avc import AvcConfig, CodecError, avcc_to_annexb, parse_avc_config
from ripplecast.media.hevc import HevcConfig, parse_hevc_config
from ripplecast.media.packet import AudioCodec, VideoCodec

TS_PACKET_SIZE = 188
PAT_PID = 0x0000
PMT_PID = 0x1000
VIDEO_PID = 0x100
AUDIO_PID = 0x101
PROGRAM_NUMBER = 1
TRANSPORT_STREAM_ID = 1

STREAM_TYPE_MPEG1_AUDIO = 0x03
STREAM_TYPE_ADTS_AAC = 0x0F
STREAM_TYPE_H264 = 0x1B
STREAM_TYPE_H265 = 0x24

PCR_DELAY_90K = 63000
"""How far PCR runs behind DTS (0.7 s, ffmpeg's default max_delay)."""
PCR_INTERVAL_90K = 3600
"""Longest media-time gap between two PCRs (40 ms)."""

_PAYLOAD_SIZE = TS_PACKET_SIZE - 4
_TS_MASK = (1 << 33) - 1
_START_CODE = b"\x00\x00\x00\x01"
_MAX_AUDIO_PES_PAYLOAD = 0xFFFF - 8


def _make_crc_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte << 24
        for _ in range(8):
            crc = ((crc << 1) ^ 0x04C11DB7) if crc & 0x80000000 else crc << 1
        table.append(crc & 0xFFFFFFFF)
    return tuple(table)


_CRC_TABLE = _make_crc_table()


def crc32_mpeg2(data: bytes) -> int:
    """Return the MPEG-2 CRC-32 of `data` (poly 0x04C11DB7, init 0xFFFFFFFF, no reflection).

    A PSI section followed by its own CRC gives 0.
    """
    crc = 0xFFFFFFFF
    table = _CRC_TABLE
    for byte in data:
        crc = ((crc << 8) & 0xFFFFFFFF) ^ table[(crc >> 24) ^ byte]
    return crc


def _timestamp(prefix: int, ts: int) -> bytes:
    """The 5-byte PTS/DTS field with its 4-bit prefix and marker bits."""
    return bytes(
        (
            (prefix << 4) | ((ts >> 29) & 0x0E) | 1,
            (ts >> 22) & 0xFF,
            ((ts >> 14) & 0xFE) | 1,
            (ts >> 7) & 0xFF,
            ((ts << 1) & 0xFE) | 1,
        )
    )


def _pes_header(stream_id: int, pts: int, dts: int | None, payload_length: int | None) -> bytes:
    """PES header with PTS (and DTS when given); `payload_length` None means unbounded (0)."""
    if dts is None:
        fields = _timestamp(0x2, pts)
        flags = 0x80
    else:
        fields = _timestamp(0x3, pts) + _timestamp(0x1, dts)
        flags = 0xC0
    length = 0 if payload_length is None else 3 + len(fields) + payload_length
    return (
        bytes((0, 0, 1, stream_id, length >> 8, length & 0xFF, 0x84, flags, len(fields))) + fields
    )


def _pcr_field(pcr: int) -> bytes:
    return bytes(
        (
            (pcr >> 25) & 0xFF,
            (pcr >> 17) & 0xFF,
            (pcr >> 9) & 0xFF,
            (pcr >> 1) & 0xFF,
            ((pcr & 1) << 7) | 0x7E,
            0,
        )
    )


def _stuffing_af(size: int) -> bytes:
    """An adaptation field of exactly `size` bytes (length byte included) holding only stuffing."""
    if size == 1:
        return b"\x00"
    return bytes((size - 1, 0)) + b"\xff" * (size - 2)


class TsMuxer:
    """Muxes one live stream's video and audio samples into MPEG-TS packets.

    Call `set_video_config` / `set_audio_config` with the sequence headers, `start_segment` at
    the start of every segment (on a keyframe), then `write_video` / `write_audio` for every
    sample in decode order. Each call returns whole 188-byte packets.
    """

    def __init__(self) -> None:
        self._video_codec: VideoCodec | None = None
        self._video_config: AvcConfig | HevcConfig | None = None
        self._audio_codec: AudioCodec | None = None
        self._audio_config: AudioSpecificConfig | None = None
        self._cc: dict[int, int] = {PAT_PID: 0, PMT_PID: 0, VIDEO_PID: 0, AUDIO_PID: 0}
        self._pmt_version = 0
        self._pmt_tracks: tuple[int, int] | None = None
        self._last_pcr: int | None = None
        self._pcr_due = True

    # -- configuration ----------------------------------------------------------------------

    @property
    def has_video(self) -> bool:
        """True once a video decoder configuration was set."""
        return self._video_config is not None

    @property
    def has_audio(self) -> bool:
        """True once an audio codec was set."""
        return self._audio_codec is not None

    @property
    def video_config(self) -> AvcConfig | HevcConfig | None:
        """The parsed video decoder configuration (width, height, codecs), if any."""
        return self._video_config

    @property
    def audio_config(self) -> AudioSpecificConfig | None:
        """The parsed AAC AudioSpecificConfig, if the audio track is AAC."""
        return self._audio_config

    def codecs(self) -> str:
        """The RFC 6381 CODECS list of the configured tracks, e.g. "avc1.64001f,mp4a.40.2"."""
        parts: list[str] = []
        if self._video_config is not None:
            parts.append(self._video_config.codecs)
        if self._audio_config is not None:
            parts.append(self._audio_config.codecs)
        elif self._audio_codec is AudioCodec.MP3:
            parts.append("mp4a.40.34")
        return ",".join(parts)

    def set_video_config(self, codec: VideoCodec, config_record: bytes) -> None:
        """Set (or replace) the video track from an AVC or HEVC decoder configuration record.

        Raises `CodecError` for a malformed record, or with reason "unsupported" for codecs
        other than H.264 and H.265.
        """
        config: AvcConfig | HevcConfig
        if codec is VideoCodec.H264:
            config = parse_avc_config(config_record)
        elif codec is VideoCodec.HEVC:
            config = parse_hevc_config(config_record)
        else:
            raise CodecError(
                f"video codec {codec.name} cannot be muxed to MPEG-TS", reason="unsupported"
            )
        self._video_codec = codec
        self._video_config = config

    def set_audio_config(self, codec: AudioCodec, audio_specific_config: bytes = b"") -> None:
        """Set (or replace) the audio track.

        AAC needs its AudioSpecificConfig, which must be expressible in ADTS; MP3 needs none
        (pass b""). Raises `CodecError` for a malformed config or, with reason "unsupported",
        for any other codec or an AAC config ADTS cannot carry.
        """
        if codec is AudioCodec.AAC:
            config = parse_audio_specific_config(audio_specific_config)
            adts_header(config, 0)  # fail now, not on every frame
            self._audio_config = config
        elif codec is AudioCodec.MP3:
            self._audio_config = None
        else:
            raise CodecError(
                f"audio codec {codec.name} cannot be muxed to MPEG-TS", reason="unsupported"
            )
        self._audio_codec = codec

    # -- program tables ---------------------------------------------------------------------

    @property
    def _pcr_pid(self) -> int:
        if self._video_config is not None:
            return VIDEO_PID
        if self._audio_codec is not None:
            return AUDIO_PID
        return 0x1FFF

    def start_segment(self) -> bytes:
        """Return a PAT and a PMT listing the configured tracks; call at each segment start.

        Also makes the next PES on the PCR PID carry a PCR.
        """
        tracks: list[tuple[int, int]] = []
        video_type = 0
        audio_type = 0
        if self._video_codec is not None:
            video_type = (
                STREAM_TYPE_H265 if self._video_codec is VideoCodec.HEVC else STREAM_TYPE_H264
            )
            tracks.append((video_type, VIDEO_PID))
        if self._audio_codec is not None:
            audio_type = (
                STREAM_TYPE_ADTS_AAC if self._audio_config is not None else STREAM_TYPE_MPEG1_AUDIO
            )
            tracks.append((audio_type, AUDIO_PID))
        if self._pmt_tracks is not None and self._pmt_tracks != (video_type, audio_type):
            self._pmt_version = (self._pmt_version + 1) & 0x1F
        self._pmt_tracks = (video_type, audio_type)
        self._pcr_due = True

        pat = self._section(
            0x00,
            TRANSPORT_STREAM_ID,
            0,
            bytes(
                (PROGRAM_NUMBER >> 8, PROGRAM_NUMBER & 0xFF, 0xE0 | PMT_PID >> 8, PMT_PID & 0xFF)
            ),
        )
        pcr_pid = self._pcr_pid
        body = bytearray((0xE0 | pcr_pid >> 8, pcr_pid & 0xFF, 0xF0, 0x00))
        for stream_type, pid in tracks:
            body += bytes((stream_type, 0xE0 | pid >> 8, pid & 0xFF, 0xF0, 0x00))
        pmt = self._section(0x02, PROGRAM_NUMBER, self._pmt_version, bytes(body))
        return self._psi_packet(PAT_PID, pat) + self._psi_packet(PMT_PID, pmt)

    @staticmethod
    def _section(table_id: int, table_id_extension: int, version: int, body: bytes) -> bytes:
        length = 5 + len(body) + 4
        head = bytes(
            (
                table_id,
                0xB0 | length >> 8,
                length & 0xFF,
                table_id_extension >> 8,
                table_id_extension & 0xFF,
                0xC1 | version << 1,
                0,
                0,
            )
        )
        section = head + body
        return section + crc32_mpeg2(section).to_bytes(4, "big")

    def _psi_packet(self, pid: int, section: bytes) -> bytes:
        cc = self._cc[pid]
        self._cc[pid] = (cc + 1) & 0x0F
        head = bytes((0x47, 0x40 | pid >> 8, pid & 0xFF, 0x10 | cc, 0))  # PUSI, pointer_field 0
        return head + section + b"\xff" * (TS_PACKET_SIZE - 5 - len(section))

    # -- samples ----------------------------------------------------------------------------

    def write_video(self, frame: bytes, *, dts_ms: int, pts_ms: int, keyframe: bool) -> bytes:
        """Mux one coded video frame (length-prefixed NAL units) and return its TS packets.

        Returns b"" for a frame without NAL units other than AUDs. Raises `CodecError` for
        malformed NAL framing (state unchanged) and `UsageError` when no video config was set.
        """
        config = self._video_config
        if config is None:
            raise UsageError("write_video before set_video_config")
        nals = avcc_to_annexb(frame, config.nal_length_size)
        if self._video_codec is VideoCodec.HEVC:
            types = [(nal[0] >> 1) & 0x3F for nal in nals]
            aud, aud_type, sps_type = hevc.AUD_NAL, hevc.NAL_AUD, hevc.NAL_SPS
            keyframe = keyframe or any(hevc.is_irap(t) for t in types)
        else:
            types = [nal[0] & 0x1F for nal in nals]
            aud, aud_type, sps_type = avc.AUD_NAL, avc.NAL_AUD, avc.NAL_SPS
            keyframe = keyframe or avc.NAL_IDR in types

        units = [aud]
        if types and types[0] == aud_type:
            units[0] = nals[0]
            nals = nals[1:]
            types = types[1:]
        if aud_type in types:  # AUDs after the first would split the access unit
            kept = [i for i, t in enumerate(types) if t != aud_type]
            nals = [nals[i] for i in kept]
            types = [types[i] for i in kept]
        if not nals:  # nothing but AUDs: no picture, so no PES (a PES with only an AUD is noise)
            return b""
        if keyframe:
            is_vcl = hevc.is_vcl if self._video_codec is VideoCodec.HEVC else avc.is_vcl
            first_vcl = next((i for i, t in enumerate(types) if is_vcl(t)), len(types))
            if sps_type not in types[:first_vcl]:
                # Right after the AUD: before any SEI too, since a buffering period SEI refers
                # to the SPS.
                nals = [*config.parameter_sets, *nals]
        units += nals
        es = _START_CODE + _START_CODE.join(units)

        pts = (pts_ms * 90) & _TS_MASK
        dts = (dts_ms * 90) & _TS_MASK
        pes = _pes_header(0xE0, pts, dts if dts != pts else None, None) + es
        pcr = None
        if self._pcr_pid == VIDEO_PID:
            pcr = self._take_pcr(dts, keyframe)
        return self._packetize(VIDEO_PID, pes, pcr, keyframe)

    def write_audio(self, frame: bytes, *, pts_ms: int) -> bytes:
        """Mux one audio frame and return its TS packets.

        `frame` is a raw AAC frame (FLV payload after the 2-byte AAC header; an ADTS header is
        added) or MP3 frames (after the 1-byte FLV audio header). Raises `CodecError` for a frame
        too long for one PES and `UsageError` when no audio codec was set.
        """
        if self._audio_codec is None:
            raise UsageError("write_audio before set_audio_config")
        if self._audio_config is not None:
            es = adts_header(self._audio_config, len(frame)) + frame
        else:
            es = frame
        if len(es) > _MAX_AUDIO_PES_PAYLOAD:
            raise CodecError(f"audio frame of {len(frame)} bytes does not fit one PES")
        pts = (pts_ms * 90) & _TS_MASK
        pes = _pes_header(0xC0, pts, None, len(es)) + es
        pcr = None
        if self._pcr_pid == AUDIO_PID:
            pcr = self._take_pcr(pts, False)
        return self._packetize(AUDIO_PID, pes, pcr, False)

    def _take_pcr(self, dts: int, keyframe: bool) -> int | None:
        """The PCR base to send with this PES, or None when not due."""
        last = self._last_pcr
        # Wrap-aware distance; a jump backwards (new timeline) also forces a PCR.
        if not (
            keyframe or self._pcr_due or last is None or (dts - last) & _TS_MASK >= PCR_INTERVAL_90K
        ):
            return None
        self._last_pcr = dts
        self._pcr_due = False
        return max(0, dts - PCR_DELAY_90K)

    def _packetize(self, pid: int, pes: bytes, pcr: int | None, random_access: bool) -> bytes:
        """Slice one PES into TS packets: adaptation field for PCR/RAI first, stuffing last."""
        cc = self._cc[pid]
        pid_hi = pid >> 8
        pid_lo = pid & 0xFF
        size = len(pes)

        # First packet: PUSI, optional adaptation field with RAI/PCR, stuffing if the PES is small.
        af = b""
        if pcr is not None or random_access:
            flags = (0x40 if random_access else 0) | (0x10 if pcr is not None else 0)
            af = bytes((1 + 6 * (pcr is not None), flags))
            if pcr is not None:
                af += _pcr_field(pcr)
        take = _PAYLOAD_SIZE - len(af)
        if size < take:
            pad = take - size
            af = (bytes((af[0] + pad,)) + af[1:] + b"\xff" * pad) if af else _stuffing_af(pad)
            take = size
        first = bytes((0x47, 0x40 | pid_hi, pid_lo, (0x30 if af else 0x10) | cc)) + af + pes[:take]
        out = [first]
        cc = (cc + 1) & 0x0F

        # Middle packets: payload only, 184 bytes each.
        full_end = take + (size - take) // _PAYLOAD_SIZE * _PAYLOAD_SIZE
        if full_end > take:
            headers = [bytes((0x47, pid_hi, pid_lo, 0x10 | c)) for c in range(16)]
            for offset in range(take, full_end, _PAYLOAD_SIZE):
                out.append(headers[cc])
                out.append(pes[offset : offset + _PAYLOAD_SIZE])
                cc = (cc + 1) & 0x0F

        # Last packet: stuffing adaptation field before the tail.
        if full_end < size:
            tail = pes[full_end:]
            out.append(bytes((0x47, pid_hi, pid_lo, 0x30 | cc)))
            out.append(_stuffing_af(_PAYLOAD_SIZE - len(tail)))
            out.append(tail)
            cc = (cc + 1) & 0x0F

        self._cc[pid] = cc
        return b"".join(out)
