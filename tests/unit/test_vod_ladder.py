"""The rendition ladder and everything derived from it without running anything: the planned
renditions, the ffmpeg argv (golden), the master playlist, bit rates, CODECS and the scrub
preview track."""

from __future__ import annotations

import itertools
import re
from pathlib import Path

import pytest

from ripplecast.errors import UsageError
from ripplecast.vod.ladder import LadderError, Rendition, Rung, parse_ladder, plan_renditions
from ripplecast.vod.playlists import (
    PlaylistError,
    Variant,
    aac_codecs,
    annexb_nal_units,
    avc_codecs,
    average_bitrate,
    parse_media_playlist,
    peak_segment_bitrate,
    render_master_playlist,
)
from ripplecast.vod.probe import AudioStreamInfo, MediaInfo, VideoStreamInfo
from ripplecast.vod.thumbnails import (
    ThumbnailPlan,
    plan_thumbnails,
    poster_time,
    render_vtt,
    sprite_command,
    thumbnail_count,
)
from ripplecast.vod.transcode import TranscodeOptions, build_command, gop_frames

DEFAULT_LADDER = ["1080:5000k:192k", "720:2800k:128k", "480:1400k:128k", "360:800k:96k"]
SMALL_LADDER = ["360:600k:64k", "240:300k:48k"]
AUDIO = AudioStreamInfo(codec="aac", sample_rate=48000, channels=2)


def media(
    width: int,
    height: int,
    *,
    rotation: int = 0,
    audio: AudioStreamInfo | None = AUDIO,
    fps: float = 25.0,
    duration: float = 10.0,
) -> MediaInfo:
    display = (height, width) if rotation in (90, 270) else (width, height)
    video = VideoStreamInfo(
        codec="h264",
        width=width,
        height=height,
        display_width=display[0],
        display_height=display[1],
        rotation=rotation,
        fps=fps,
        pix_fmt="yuv420p",
    )
    return MediaInfo(container="mov", duration=duration, video=video, audio=audio, bit_rate=None)


def sizes(renditions: list[Rendition]) -> list[tuple[str, int, int]]:
    return [(r.name, r.width, r.height) for r in renditions]


# ----------------------------------------------------------------------------------- ladder


def test_parse_ladder() -> None:
    assert parse_ladder(["720:2800k:128k", "240:400k:64k"]) == [
        Rung(height=720, video_kbps=2800, audio_kbps=128),
        Rung(height=240, video_kbps=400, audio_kbps=64),
    ]


@pytest.mark.parametrize("entry", ["720", "720:2800:128k", "x:1k:1k", "720:2800k:128k:1", ""])
def test_parse_ladder_refuses_malformed_entries(entry: str) -> None:
    with pytest.raises(LadderError, match="HEIGHT:VIDEO_BITRATE:AUDIO_BITRATE"):
        parse_ladder([entry])


def test_parse_ladder_refuses_an_empty_ladder() -> None:
    with pytest.raises(LadderError, match="at least one"):
        parse_ladder([])


def test_landscape_1080p_gets_every_rung_best_first() -> None:
    planned = plan_renditions(media(1920, 1080), parse_ladder(DEFAULT_LADDER))
    assert sizes(planned) == [
        ("1080p", 1920, 1080),
        ("720p", 1280, 720),
        ("480p", 854, 480),
        ("360p", 640, 360),
    ]
    assert planned[0] == Rendition("1080p", 1920, 1080, 5000, 192)


def test_portrait_is_named_by_its_shorter_side() -> None:
    planned = plan_renditions(media(1080, 1920), parse_ladder(DEFAULT_LADDER))
    assert sizes(planned) == [
        ("1080p", 1080, 1920),
        ("720p", 720, 1280),
        ("480p", 480, 854),
        ("360p", 360, 640),
    ]


def test_no_upscaling_a_720p_source() -> None:
    planned = plan_renditions(media(1280, 720), parse_ladder(DEFAULT_LADDER))
    assert [r.name for r in planned] == ["720p", "480p", "360p"]
    assert planned[0].width == 1280


def test_odd_source_gives_even_dimensions() -> None:
    planned = plan_renditions(media(641, 359), parse_ladder(SMALL_LADDER))
    # 360 is taller than 359: left out; 240 keeps 641:359 (428.5 -> 428).
    assert sizes(planned) == [("240p", 428, 240)]
    planned = plan_renditions(media(641, 359), parse_ladder(["359:500k:64k", "240:300k:48k"]))
    assert sizes(planned) == [("359p", 640, 358), ("240p", 428, 240)]
    for rendition in planned:
        assert rendition.width % 2 == 0 and rendition.height % 2 == 0


def test_rotated_source_uses_display_dimensions() -> None:
    # A phone video stored 1920x1080 with a 90 degree rotation is shown 1080x1920.
    planned = plan_renditions(media(1920, 1080, rotation=90), parse_ladder(DEFAULT_LADDER))
    assert sizes(planned)[:2] == [("1080p", 1080, 1920), ("720p", 720, 1280)]
    planned = plan_renditions(media(320, 240, rotation=270), parse_ladder(SMALL_LADDER))
    assert sizes(planned) == [("240p", 240, 320)]


def test_source_smaller_than_every_rung_keeps_its_size() -> None:
    planned = plan_renditions(media(160, 120), parse_ladder(SMALL_LADDER))
    assert planned == [Rendition("120p", 160, 120, 300, 48)]
    planned = plan_renditions(media(161, 121), parse_ladder(SMALL_LADDER))
    assert planned == [Rendition("120p", 160, 120, 300, 48)]


def test_audio_only_gets_one_audio_rendition_at_the_best_audio_rate() -> None:
    info = MediaInfo(container="mp3", duration=3.0, video=None, audio=AUDIO, bit_rate=None)
    planned = plan_renditions(info, parse_ladder(["240:300k:48k", "720:2800k:128k"]))
    assert planned == [Rendition("audio", 0, 0, 0, 128)]
    assert not planned[0].has_video


def test_video_only_has_no_audio_bitrate() -> None:
    planned = plan_renditions(media(640, 360, audio=None), parse_ladder(SMALL_LADDER))
    assert [(r.name, r.audio_kbps) for r in planned] == [("360p", 0), ("240p", 0)]


def test_duplicates_and_order_in_the_configuration() -> None:
    ladder = parse_ladder(["240:300k:48k", "360:600k:64k", "360:900k:96k", "240:200k:32k"])
    planned = plan_renditions(media(1280, 720), ladder)
    assert [(r.name, r.video_kbps) for r in planned] == [("360p", 900), ("240p", 300)]


def test_square_and_extreme_aspect_ratios() -> None:
    assert sizes(plan_renditions(media(720, 720), parse_ladder(SMALL_LADDER))) == [
        ("360p", 360, 360),
        ("240p", 240, 240),
    ]
    # 21:9 cinema and a very tall strip keep their shape, every side even.
    assert sizes(plan_renditions(media(2560, 1080), parse_ladder(SMALL_LADDER)))[0] == (
        "360p",
        854,
        360,
    )
    assert sizes(plan_renditions(media(400, 4000), parse_ladder(SMALL_LADDER))) == [
        ("360p", 360, 3600),
        ("240p", 240, 2400),
    ]


# ------------------------------------------------------------------------------ ffmpeg argv


def test_golden_command_for_a_two_rendition_ladder() -> None:
    info = media(1280, 720, duration=30.0)
    renditions = plan_renditions(info, parse_ladder(SMALL_LADDER))
    options = TranscodeOptions(ffmpeg="ffmpeg", segment_seconds=4.0, preset="veryfast")
    thumbnails = plan_thumbnails(30.0, renditions[0], interval=5.0, width=160)
    argv = build_command(Path("/media/source"), info, renditions, options, thumbnails)
    assert argv == [
        "ffmpeg", "-hide_banner", "-nostdin", "-nostats", "-loglevel", "error",
        "-progress", "pipe:1", "-y",
        "-protocol_whitelist", "file", "-i", "file:/media/source",
        "-filter_complex",
        "[0:V:0]split=4[s0][s1][sp][st];"
        "[s0]scale=640:360,setsar=1[v0];"
        "[s1]scale=426:240,setsar=1[v1];"
        "[sp]select='lte(t,3)*(isnan(prev_selected_t)+gte(t-prev_selected_t,0.5)"
        "+gte(t,2.8))',scale=640:360,setsar=1[poster];"
        "[st]select='gte(t,selected_n*5)',scale=160:90,setsar=1[thumbs]",
        "-map", "[v0]", "-map", "0:a:0", "-map", "[v1]", "-map", "0:a:0",
        "-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p",
        "-g", "100", "-keyint_min", "100", "-sc_threshold", "0",
        "-force_key_frames", "expr:gte(t,n_forced*4)",
        "-b:v:0", "600k", "-maxrate:v:0", "660k", "-bufsize:v:0", "1200k", "-profile:v:0", "main",
        "-b:v:1", "300k", "-maxrate:v:1", "330k", "-bufsize:v:1", "600k", "-profile:v:1", "main",
        "-c:a", "aac", "-b:a:0", "64k", "-b:a:1", "48k",
        "-map_metadata", "-1", "-map_chapters", "-1",
        "-max_muxing_queue_size", "4096",
        "-f", "hls", "-hls_time", "4", "-hls_playlist_type", "vod",
        "-hls_segment_type", "mpegts", "-hls_segment_filename", "%v/seg_%05d.ts",
        "-var_stream_map", "v:0,a:0,name:360p v:1,a:1,name:240p",
        "%v/index.m3u8",
        "-map", "[poster]", "-fps_mode", "passthrough", "-update", "1", "-q:v", "3",
        "poster.jpg",
        "-map", "[thumbs]", "-fps_mode", "passthrough", "-q:v", "2", "-start_number", "1",
        ".thumbnails/%06d.jpg",
    ]  # fmt: skip
    # The second, short run tiles the single thumbnails into sheets.
    assert sprite_command("ffmpeg", thumbnails) == [
        "ffmpeg", "-hide_banner", "-nostdin", "-nostats", "-loglevel", "error", "-y",
        "-f", "image2", "-framerate", "1", "-start_number", "1", "-i", ".thumbnails/%06d.jpg",
        "-vf", "tile=6x1", "-fps_mode", "passthrough", "-q:v", "5", "-start_number", "1",
        "thumbs/sprite_%03d.jpg",
    ]  # fmt: skip


def test_command_for_audio_only_and_video_only() -> None:
    options = TranscodeOptions(ffmpeg="ffmpeg")
    audio_info = MediaInfo("mp3", 3.0, None, AudioStreamInfo("mp3", 96000, 6), None)
    argv = build_command(Path("/a"), audio_info, [Rendition("audio", 0, 0, 0, 128)], options, None)
    assert "-filter_complex" not in argv and "libx264" not in argv
    joined = " ".join(argv)
    assert "-map 0:a:0 -c:a aac -b:a:0 128k -ac 2 -ar 48000" in joined
    assert "-var_stream_map a:0,name:audio" in joined

    info = media(640, 360, audio=None)
    renditions = plan_renditions(info, parse_ladder(SMALL_LADDER))
    argv = build_command(Path("/v"), info, renditions, options, None)
    assert "0:a:0" not in argv and "-c:a" not in argv
    assert "v:0,name:360p v:1,name:240p" in argv
    assert "split=2[s0][s1]" in argv[argv.index("-filter_complex") + 1]


def test_high_profile_from_720p_and_gop_from_the_frame_rate() -> None:
    info = media(1920, 1080, fps=30000 / 1001)
    renditions = plan_renditions(info, parse_ladder(DEFAULT_LADDER))
    argv = build_command(Path("/s"), info, renditions, TranscodeOptions("ffmpeg"), None)
    profiles = [argv[argv.index(f"-profile:v:{i}") + 1] for i in range(4)]
    assert profiles == ["high", "high", "main", "main"]
    assert argv[argv.index("-g") + 1] == "120"  # 4 s at 29.97 fps
    assert gop_frames(media(640, 360, fps=0.0), 2.0) == 50  # unknown rate: 25 fps assumed


def test_command_refuses_an_inconsistent_plan() -> None:
    info = media(640, 360)
    options = TranscodeOptions("ffmpeg")
    with pytest.raises(UsageError, match="at least one"):
        build_command(Path("/s"), info, [], options, None)
    with pytest.raises(UsageError, match="odd"):
        build_command(Path("/s"), info, [Rendition("x", 641, 360, 1, 1)], options, None)
    with pytest.raises(UsageError, match="does not match"):
        build_command(Path("/s"), info, [Rendition("audio", 0, 0, 0, 64)], options, None)
    with pytest.raises(UsageError, match="audio bit rate"):
        build_command(Path("/s"), info, [Rendition("360p", 640, 360, 600, 0)], options, None)


# -------------------------------------------------------------------------------- playlists

FFMPEG_MEDIA_PLAYLIST = """#EXTM3U
#EXT-X-VERSION:3
#EXT-X-TARGETDURATION:4
#EXT-X-MEDIA-SEQUENCE:0
#EXT-X-PLAYLIST-TYPE:VOD
#EXTINF:4.000000,
seg_00000.ts
#EXTINF:4.000000,
seg_00001.ts
#EXTINF:1.000000,
seg_00002.ts
#EXT-X-ENDLIST
"""


def test_parse_media_playlist() -> None:
    playlist = parse_media_playlist(FFMPEG_MEDIA_PLAYLIST)
    assert playlist.target_duration == 4
    assert [(s.duration, s.uri) for s in playlist.segments] == [
        (4.0, "seg_00000.ts"),
        (4.0, "seg_00001.ts"),
        (1.0, "seg_00002.ts"),
    ]
    assert playlist.ended and playlist.duration == 9.0
    assert not parse_media_playlist(FFMPEG_MEDIA_PLAYLIST.replace("#EXT-X-ENDLIST", "")).ended


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "#EXTM3U"),
        ("#EXTM3U\n#EXTINF:4,\na.ts\n", "TARGETDURATION"),
        ("#EXTM3U\n#EXT-X-TARGETDURATION:4\na.ts\n", "no #EXTINF"),
        ("#EXTM3U\n#EXT-X-TARGETDURATION:4\n#EXTINF:four,\na.ts\n", "unreadable number"),
    ],
)
def test_parse_media_playlist_refuses(text: str, message: str) -> None:
    with pytest.raises(PlaylistError, match=message):
        parse_media_playlist(text)


def test_peak_bitrate_follows_rfc_8216() -> None:
    # Runs of 2..6 s (target 4): a lone tiny last segment cannot inflate the peak.
    segments = [(4.0, 500_000), (4.0, 250_000), (0.04, 20_000)]
    assert peak_segment_bitrate(segments, 4) == 1_000_000  # the first segment alone
    assert average_bitrate(segments) == round((770_000 * 8) / 8.04)
    # Two 1.5 s segments of a 4 s target: only runs of >= 2 s count.
    assert peak_segment_bitrate([(1.5, 300_000), (1.5, 100_000)], 4) == round(3_200_000 / 3)
    # A stream shorter than half the target: the only run is all of it.
    assert peak_segment_bitrate([(1.0, 100_000)], 4) == 800_000
    assert average_bitrate([]) == 0


SPS_HIGH_31 = bytes.fromhex("6764001facd9405005bb011000000300100000030320f1831960")
"""An x264 SPS: High profile (0x64), no constraint flags, level 3.1 (0x1f), 1280x720."""


def test_codecs_from_an_annexb_access_unit() -> None:
    access_unit = b"\x00\x00\x00\x01\x09\xf0" + b"\x00\x00\x00\x01" + SPS_HIGH_31
    access_unit += b"\x00\x00\x01\x68\xeb\xe3\xcb\x22\xc0" + b"\x00\x00\x01\x65\x88\x84"
    assert [unit[0] & 0x1F for unit in annexb_nal_units(access_unit)] == [9, 7, 8, 5]
    assert avc_codecs(access_unit) == "avc1.64001f"
    with pytest.raises(PlaylistError, match=r"no H\.264 SPS"):
        avc_codecs(b"\x00\x00\x01\x65\x88\x84")
    assert aac_codecs("LC") == aac_codecs(None) == "mp4a.40.2"
    assert aac_codecs("HE-AAC") == "mp4a.40.5"


def test_master_playlist() -> None:
    text = render_master_playlist(
        [
            Variant(
                "720p/index.m3u8", 3_000_000, 2_500_000, "avc1.64001f,mp4a.40.2", (1280, 720), 29.97
            ),
            Variant("audio/index.m3u8", 140_000, 130_000, "mp4a.40.2", None, None),
        ]
    )  # fmt: skip
    assert text == (
        "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-INDEPENDENT-SEGMENTS\n"
        '#EXT-X-STREAM-INF:BANDWIDTH=3000000,AVERAGE-BANDWIDTH=2500000,CODECS="avc1.64001f,'
        'mp4a.40.2",RESOLUTION=1280x720,FRAME-RATE=29.970\n720p/index.m3u8\n'
        '#EXT-X-STREAM-INF:BANDWIDTH=140000,AVERAGE-BANDWIDTH=130000,CODECS="mp4a.40.2"\n'
        "audio/index.m3u8\n"
    )
    with pytest.raises(PlaylistError):
        render_master_playlist([])


# ----------------------------------------------------------------------- poster and sprites


def test_poster_time() -> None:
    assert poster_time(4.0) == 1.0
    assert poster_time(1.0) == 0.5
    assert poster_time(30.0) == 3.0
    assert poster_time(7200.0) == 60.0


def test_thumbnail_plan_fits_the_sheet_to_the_video() -> None:
    best = Rendition("360p", 640, 360, 600, 64)
    assert thumbnail_count(9.0, 2.0) == 5
    assert thumbnail_count(8.0, 2.0) == 4
    assert thumbnail_count(8.0000001, 2.0) == 4  # rounding in EXTINF sums
    assert thumbnail_count(0.0, 2.0) == 0
    plan = plan_thumbnails(9.0, best, interval=2.0, width=160)
    assert (plan.columns, plan.rows, plan.tile_width, plan.tile_height) == (5, 1, 160, 90)
    plan = plan_thumbnails(3600.0, best, interval=5.0, width=160)
    assert (plan.columns, plan.rows, plan.per_sheet) == (10, 10, 100)
    portrait = plan_thumbnails(60.0, Rendition("360p", 360, 640, 600, 64), interval=5, width=161)
    assert (portrait.tile_width, portrait.tile_height) == (160, 284)
    tiny = plan_thumbnails(60.0, Rendition("120p", 96, 72, 300, 0), interval=5, width=160)
    assert (tiny.tile_width, tiny.tile_height) == (96, 72)  # never wider than the video


def _cues(vtt: str) -> list[tuple[float, float, str]]:
    def seconds(stamp: str) -> float:
        hours, minutes, secs = stamp.split(":")
        return int(hours) * 3600 + int(minutes) * 60 + float(secs)

    cues = re.findall(r"(\S+) --> (\S+)\n(\S+)\n", vtt)
    return [(seconds(start), seconds(end), ref) for start, end, ref in cues]


def test_vtt_cues_cover_the_duration_across_sheets() -> None:
    plan = ThumbnailPlan(
        interval=5.0, tile_width=160, tile_height=90, columns=10, rows=10,
        poster_time=60.0, poster_width=640, poster_height=360,
    )  # fmt: skip
    vtt = render_vtt(plan, 1002.5, 201)
    assert vtt.startswith("WEBVTT\n\n")
    cues = _cues(vtt)
    assert len(cues) == 201
    assert cues[0] == (0.0, 5.0, "thumbs/sprite_001.jpg#xywh=0,0,160,90")
    assert cues[11] == (55.0, 60.0, "thumbs/sprite_001.jpg#xywh=160,90,160,90")
    assert cues[100] == (500.0, 505.0, "thumbs/sprite_002.jpg#xywh=0,0,160,90")
    assert cues[-1] == (1000.0, 1002.5, "thumbs/sprite_003.jpg#xywh=0,0,160,90")
    assert all(a[1] == b[0] for a, b in itertools.pairwise(cues))
    assert render_vtt(plan, 1002.5, 500) == vtt  # never a cue past the end
    # Fewer thumbnails than the duration asks for: the last one stretches to the end.
    cues = _cues(render_vtt(plan, 1002.5, 100))
    assert len(cues) == 100 and cues[-1][:2] == (495.0, 1002.5)
    assert "01:00:00.000" in render_vtt(plan, 3605.0, 1000)
