"""Glass-to-glass delay measured in the browser: a clock drawn into the picture, read back.

The publisher (ffmpeg) draws, into every frame, the wall-clock time at which that frame left
the `-re` pacing, as milliseconds since an epoch the test chose: a row of BITS black/white
blocks (most significant bit first) and under it the same row inverted. `setpts` stamps each
frame with RTCTIME (the wall clock, in microseconds) on the encoding side of ffmpeg, `geq`
draws the bits from that stamp, and the timestamps are then reset to a regular 25 fps before
x264 (ultrafast, zerolatency: no lookahead, no B-frames) so the player sees an ordinary stream.

The page reads it back: on each presented frame (requestVideoFrameCallback) it draws the
<video> into a canvas, samples the centre of every block, checks the inverted row agrees, and
subtracts the decoded time from Date.now(). Publisher and browser run on one machine, so both
read one clock. What is measured is everything from the frame leaving the source to the frame
being presented: encode, RTMP, server, HTTP, the player's buffer and decode.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass

from playwright.async_api import Page

from support import require_program

BITS = 24
"""Bits of the drawn clock: 2**24 ms is 4.6 hours after the epoch, far longer than a test."""
BLOCK = 16
"""Side of one drawn bit, in pixels (a macroblock: x264 keeps flat blocks clean)."""
ORIGIN = (64, 64)
"""Top-left corner of the code rows in the picture (macroblock-aligned)."""
SIZE = (512, 288)
"""Published picture size."""
RATE = 25
"""Frames per second; the GOP is one second of frames (one HLS segment per keyframe)."""


def clock_filter(stamp_ms: str) -> str:
    """The filtergraph drawing `stamp_ms` (an ffmpeg expression, in ms) into each frame.

    Input 0 is a BITS x 2 source; the output `[v]` is a SIZE picture at RATE fps.
    """
    width, height = SIZE
    left, top = ORIGIN
    # Column X shows bit BITS-1-X of the ms count; row Y=1 is row 0 inverted.
    bit = f"mod(floor((T*1000+0.5)/pow(2\\,{BITS - 1}-X))\\,2)"
    return (
        f"[0:v]settb=1/1000,setpts='{stamp_ms}',"
        f"format=gray,geq=lum='255*abs(Y-{bit})',"
        f"scale={BITS * BLOCK}:{2 * BLOCK}:flags=neighbor,"
        f"pad={width}:{height}:{left}:{top}:color=gray,format=yuv420p,"
        f"settb=1/{RATE},setpts=N[v]"
    )


X264_LOW_DELAY = ["-c:v", "libx264", "-preset", "ultrafast", "-tune", "zerolatency"]
"""No lookahead, no B-frames, no frame threads: x264 hands each frame out as it comes in."""


def clock_publish_args(url: str, *, epoch_us: int, seconds: float) -> list[str]:
    """argv for ffmpeg publishing, to the RTMP `url`, a picture that carries the wall clock.

    Each frame shows `(RTCTIME - epoch_us) / 1000`: the milliseconds since `epoch_us` when the
    frame left `-re` pacing. A 440 Hz tone goes along, as with any camera (players keep video
    in step with the audio clock).
    """
    return [
        require_program("ffmpeg"), "-hide_banner", "-nostdin", "-v", "error",
        "-re", "-f", "lavfi", "-i", f"color=c=black:s={BITS}x2:r={RATE}",
        "-re", "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100",
        "-t", str(seconds),
        "-filter_complex", clock_filter(f"(RTCTIME-{epoch_us})/1000"),
        "-map", "[v]", "-map", "1:a", *X264_LOW_DELAY, "-r", str(RATE),
        "-g", str(RATE), "-keyint_min", str(RATE), "-sc_threshold", "0",
        "-c:a", "aac", "-b:a", "64k",
        "-f", "flv", "-flvflags", "no_duration_filesize", url,
    ]  # fmt: skip


def fixed_clock_clip_args(path: str, *, value_ms: int, seconds: float = 1) -> list[str]:
    """argv for ffmpeg writing an MP4 whose every frame shows `value_ms` (to test the reader)."""
    return [
        require_program("ffmpeg"), "-hide_banner", "-nostdin", "-v", "error", "-y",
        "-f", "lavfi", "-i", f"color=c=black:s={BITS}x2:r={RATE}", "-t", str(seconds),
        "-filter_complex", clock_filter(str(value_ms)), "-map", "[v]", *X264_LOW_DELAY,
        "-movflags", "+faststart", path,
    ]  # fmt: skip


SAMPLE_JS = """
async ({selector, bits, block, left, top, epochMs, count, everyMs, timeoutMs}) => {
  const video = document.querySelector(selector);
  const canvas = document.createElement('canvas');
  const context = canvas.getContext('2d', {willReadFrequently: true});
  const samples = [];
  const values = [];
  let rejected = 0;
  let last = 0;
  // Decode the clock in the frame on screen now; null when the rows disagree (a frame being
  // replaced, or a picture that is not ours).
  const read = () => {
    if (!video.videoWidth) return null;
    canvas.width = video.videoWidth;
    canvas.height = video.videoHeight;
    context.drawImage(video, 0, 0);
    const pixels = context.getImageData(left, top, bits * block, 2 * block).data;
    const luma = (x, y) => {
      const i = (y * bits * block + x) * 4;
      return (pixels[i] + pixels[i + 1] + pixels[i + 2]) / 3;
    };
    let value = 0;
    for (let i = 0; i < bits; i++) {
      const x = i * block + block / 2;
      const one = luma(x, block / 2) > 128;
      const inverted = luma(x, block + block / 2) > 128;
      if (one === inverted) return null;
      value = value * 2 + (one ? 1 : 0);
    }
    return value;
  };
  return await new Promise((resolve) => {
    const started = performance.now();
    let finished = false;
    const done = () => {
      finished = true;
      resolve({samples, values, rejected});
    };
    const sample = () => {
      if (finished) return;
      const now = Date.now();
      if (now - last >= everyMs && !video.paused) {
        const value = read();
        if (value === null) {
          rejected++;
        } else {
          last = now;
          values.push(value);
          samples.push(now - epochMs - value);
        }
      }
      if (samples.length >= count || performance.now() - started > timeoutMs) return done();
      schedule();
    };
    const schedule = () => {
      if (video.requestVideoFrameCallback) video.requestVideoFrameCallback(sample);
      else setTimeout(sample, 10);
    };
    // A stalled video presents no frames: the timer makes sure the promise still settles.
    setTimeout(done, timeoutMs + 500);
    schedule();
  });
}
"""
"""Page function: `{samples: [ms behind], values: [decoded clock], rejected: n}`."""


@dataclass(frozen=True)
class Delay:
    """Glass-to-glass delay samples of one protocol, in milliseconds."""

    samples: tuple[float, ...]
    """Milliseconds between the frame leaving the publisher and being on screen."""
    values: tuple[int, ...]
    """The clock values read from the frames (ms since the epoch)."""
    rejected: int
    """Frames whose code could not be read (rows disagreeing)."""

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    @property
    def p95(self) -> float:
        ordered = sorted(self.samples)
        return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]

    def __str__(self) -> str:
        return (
            f"median {self.median:.0f} ms, p95 {self.p95:.0f} ms "
            f"({len(self.samples)} samples, {self.rejected} unreadable frames)"
        )


async def measure(
    page: Page,
    *,
    epoch_ms: float,
    selector: str = "#player",
    count: int = 20,
    every_ms: int = 150,
    timeout_ms: int = 8000,
) -> Delay:
    """Sample the delay of the video `selector` on `page` (a Playwright page)."""
    left, top = ORIGIN
    result = await page.evaluate(
        SAMPLE_JS,
        {
            "selector": selector,
            "bits": BITS,
            "block": BLOCK,
            "left": left,
            "top": top,
            "epochMs": epoch_ms,
            "count": count,
            "everyMs": every_ms,
            "timeoutMs": timeout_ms,
        },
    )
    return Delay(
        samples=tuple(float(s) for s in result["samples"]),
        values=tuple(int(v) for v in result["values"]),
        rejected=int(result["rejected"]),
    )
