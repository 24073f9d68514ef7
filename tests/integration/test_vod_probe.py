"""Probing uploads with PyAV: good files of every shape are described exactly, everything else
is refused with its reason and a sentence that says what is wrong. Media is made by ffmpeg."""

from __future__ import annotations

from pathlib import Path

import pytest

from media import (
    make_audio_only,
    make_audio_with_cover,
    make_oversized,
    make_still_image,
    make_subtitle_only,
    make_unknown_codec,
    make_video,
    run_ffmpeg,
    truncated_copy,
)
from ripplecast.vod.probe import (
    AudioStreamInfo,
    InvalidMedia,
    MediaInfo,
    VideoStreamInfo,
    probe,
)

pytestmark = pytest.mark.ffmpeg


def probed(
    path: Path,
    *,
    max_duration: float = 3600.0,
    max_pixels: int = 4096 * 4096,
    accept_audio_only: bool = True,
) -> MediaInfo:
    return probe(
        path,
        max_duration=max_duration,
        max_pixels=max_pixels,
        accept_audio_only=accept_audio_only,
    )


def refused(
    path: Path,
    reason: str,
    *,
    max_duration: float = 3600.0,
    max_pixels: int = 4096 * 4096,
    accept_audio_only: bool = True,
) -> InvalidMedia:
    with pytest.raises(InvalidMedia) as caught:
        probed(
            path,
            max_duration=max_duration,
            max_pixels=max_pixels,
            accept_audio_only=accept_audio_only,
        )
    assert caught.value.reason == reason, str(caught.value)
    return caught.value


@pytest.fixture(scope="module")
def good_mp4(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("probe")
    return make_video(folder / "good.mp4", seconds=4, size="320x240")


@pytest.fixture(scope="module")
def good_ts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("probe-ts")
    return make_video(folder / "good.ts", seconds=4, size="320x240")


def test_good_file(good_mp4: Path) -> None:
    info = probed(good_mp4)
    assert info.container.startswith("mov,mp4")
    assert info.duration == pytest.approx(4.0, abs=0.05)
    assert info.video == VideoStreamInfo(
        codec="h264",
        width=320,
        height=240,
        display_width=320,
        display_height=240,
        rotation=0,
        fps=25.0,
        pix_fmt="yuv420p",
    )
    assert info.audio == AudioStreamInfo(codec="aac", sample_rate=48000, channels=2)
    assert info.bit_rate is not None and info.bit_rate > 0
    # Stored uploads have no file name extension: the content alone decides.
    nameless = good_mp4.with_name("source")
    nameless.write_bytes(good_mp4.read_bytes())
    assert probed(nameless) == info


def test_mpeg_ts_and_matroska(good_ts: Path, tmp_path: Path) -> None:
    info = probed(good_ts)
    assert info.container == "mpegts"
    assert info.duration == pytest.approx(4.0, abs=0.1)
    assert info.video is not None and info.audio is not None
    mkv = make_video(tmp_path / "v.mkv", seconds=2, size="160x90", rate=30, audio=False)
    info = probed(mkv)
    assert info.container == "matroska,webm"
    assert info.video is not None and info.video.fps == 30.0
    assert info.audio is None


def test_rotated_phone_video(tmp_path: Path) -> None:
    path = make_video(tmp_path / "phone.mp4", seconds=2, size="320x240", rotate=90)
    video = probed(path).video
    assert video is not None
    assert (video.width, video.height) == (320, 240)
    assert (video.display_width, video.display_height) == (240, 320)
    assert video.rotation in (90, 270)


def test_portrait_odd_and_anamorphic_sizes(tmp_path: Path) -> None:
    video = probed(make_video(tmp_path / "p.mp4", seconds=1, size="180x320")).video
    assert video is not None and (video.display_width, video.display_height) == (180, 320)
    video = probed(make_video(tmp_path / "odd.mp4", seconds=1, size="641x359")).video
    assert video is not None and (video.width, video.height) == (641, 359)
    assert video.pix_fmt == "yuv444p"
    # A DVD-style picture: 720x576 stored, 16:9 shown (pixels 64:45 wide).
    dvd = tmp_path / "dvd.mkv"
    make_video(dvd, seconds=1, size="720x576", audio=False)
    wide = tmp_path / "wide.mkv"
    run_ffmpeg("-i", str(dvd), "-c", "copy", "-aspect", "16:9", str(wide))
    video = probed(wide).video
    assert video is not None and (video.width, video.display_width) == (720, 1024)


def test_truncated_mp4_with_its_index_at_the_end(good_mp4: Path, tmp_path: Path) -> None:
    cut = truncated_copy(good_mp4, tmp_path / "cut.mp4", fraction=0.3)
    error = refused(cut, "unreadable")
    assert "truncated" in str(error)


def test_mpeg_ts_cut_short(good_ts: Path, tmp_path: Path) -> None:
    # Three TS packets: the tables and the start of a picture that never ends.
    error = refused(truncated_copy(good_ts, tmp_path / "cut.ts", size=3 * 188), "unreadable")
    assert "no picture could be decoded" in str(error)
    # Cut at 30 %: what is there still plays, and the duration says how much that is.
    info = probed(truncated_copy(good_ts, tmp_path / "part.ts", fraction=0.3))
    assert 0.3 < info.duration < 2.5


def test_empty_text_image_and_subtitle_files(tmp_path: Path) -> None:
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    assert str(refused(empty, "unreadable")) == "the file is empty (0 bytes)"
    text = tmp_path / "notes.mp4"
    text.write_text("these are not the frames you are looking for\n" * 50)
    assert "not a media file" in str(refused(text, "unreadable"))
    image = make_still_image(tmp_path / "photo.png")
    assert "still image" in str(refused(image, "no_video_stream"))
    jpeg = make_still_image(tmp_path / "photo.jpg")
    assert "still image" in str(refused(jpeg, "no_video_stream"))
    subtitles = make_subtitle_only(tmp_path / "subs.mkv")
    error = refused(subtitles, "no_media_streams")
    assert str(error) == "the file has no video or audio stream (it has 1 subtitle stream)"


def test_unknown_codec(tmp_path: Path) -> None:
    error = refused(make_unknown_codec(tmp_path / "unknown.mkv"), "unsupported_codec")
    assert "codec is unknown" in str(error)


def test_playlists_are_refused_and_not_followed(good_ts: Path, tmp_path: Path) -> None:
    playlist = tmp_path / "upload.m3u8"
    playlist.write_text(
        f"#EXTM3U\n#EXT-X-TARGETDURATION:4\n#EXTINF:4,\n{good_ts}\n#EXT-X-ENDLIST\n"
    )
    assert "playlist or reference file (hls)" in str(refused(playlist, "unreadable"))
    # A relative name passes the concat demuxer's own "safe" check, so ours is what refuses it.
    (tmp_path / "part.ts").write_bytes(good_ts.read_bytes())
    concat = tmp_path / "upload.ffconcat"
    concat.write_text("ffconcat version 1.0\nfile 'part.ts'\n")
    assert "(concat)" in str(refused(concat, "unreadable"))


def test_limits(good_mp4: Path, tmp_path: Path) -> None:
    error = refused(good_mp4, "too_long", max_duration=3.5)
    assert str(error) == "duration 4.0 s is longer than the limit of 3.5 s"
    error = refused(good_mp4, "too_large", max_pixels=320 * 240 - 1)
    assert "320x240 (76800 pixels) is larger than the limit of 76799 pixels" in str(error)
    probed(good_mp4, max_duration=4.1, max_pixels=320 * 240)  # exactly at the limits: fine
    wide = make_oversized(tmp_path / "wide.mkv", width=16400)
    error = refused(wide, "bad_dimensions", max_pixels=10**9)
    assert "16400x2 is outside 1..16384" in str(error)


def test_audio_only(tmp_path: Path) -> None:
    m4a = make_audio_only(tmp_path / "tone.m4a", seconds=3, sample_rate=44100)
    info = probed(m4a)
    assert info == MediaInfo(
        container=info.container,
        duration=pytest.approx(3.0, abs=0.05),  # type: ignore[arg-type]
        video=None,
        audio=AudioStreamInfo(codec="aac", sample_rate=44100, channels=1),
        bit_rate=info.bit_rate,
    )
    error = refused(m4a, "no_video_stream", accept_audio_only=False)
    assert "audio-only uploads are not accepted" in str(error)
    # Cover art is a picture stream, not a video: an MP3 with one is still audio-only.
    mp3 = make_audio_with_cover(tmp_path / "song.mp3", seconds=2)
    info = probed(mp3)
    assert info.video is None and info.audio is not None and info.audio.codec.startswith("mp3")
