"""Markdown tables of the video-on-demand benchmark's JSON results (pure: dict in, text out)."""

from __future__ import annotations

import statistics
from collections.abc import Callable
from typing import Any

Section = dict[str, Any]


def _median(entry: Any) -> float:
    return float(entry["median"])


def _runs(entry: Any, digits: int = 2) -> str:
    return ", ".join(f"{value:.{digits}f}" for value in entry["runs"])


def _spread(entry: Any, digits: int = 2) -> str:
    """The median and the range: "1.00 (0.90-1.10)"."""
    return f"{entry['median']:.{digits}f} ({entry['min']:.{digits}f}-{entry['max']:.{digits}f})"


def _optional(entry: Any, digits: int) -> str:
    """The median, or nothing for a figure older results files do not have."""
    return "" if entry is None else f"{_median(entry):.{digits}f}"


def _percent(ratio: Any) -> str:
    """A ratio summary as "+x.x % (runs: ...)"."""
    runs = ", ".join(f"{(value - 1) * 100:+.1f}" for value in ratio["runs"])
    return f"{(_median(ratio) - 1) * 100:+.1f} % (runs {runs})"


def machine_lines(data: dict[str, Any]) -> list[str]:
    facts = data.get("machine", {})
    if not facts:
        return []
    return [
        f"Machine: {facts['nproc']} CPUs ({facts['cpu_model']}), {facts['memory_gb']} GB,"
        f" Linux {facts['kernel']}, Python {facts['python']}, {facts['ffmpeg']}.",
        "",
    ]


def transcode_lines(section: Section) -> list[str]:
    source, plan, variants = section["source"], section["plan"], section["variants"]
    names = ", ".join(r["name"] for r in plan["renditions"])
    seconds = source["duration_s"]
    lines = [
        "## Transcode",
        "",
        f"Source: {source['seconds']:g} s {source['width']}x{source['height']} {source['fps']}"
        f" fps ({source['bytes'] / 1e6:.1f} MB); renditions {names}; preset {plan['preset']},"
        f" {plan['segment_seconds']:g} s segments; {section['runs']} runs, order rotated.",
        "",
        "| variant | wall s, median (min-max) | wall s, quiet runs | ffmpeg CPU s | cores busy"
        " | x real time | others' CPU s |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    labels = {
        "ripplecast": "Ripplecast `transcode()` (1 ffmpeg + sprite run + playlists)",
        "bare": "same `build_command` argv, bare `subprocess.run`",
        "one_process": "one ffmpeg, all renditions, no poster/thumbnails",
        "separate": "one ffmpeg per rendition, one after another (sum)",
        "parallel": "one ffmpeg per rendition, all at once",
    }
    for name, label in labels.items():
        if name not in variants:
            continue
        figures = variants[name]
        wall, cpu = figures["wall_s"], figures["ffmpeg_cpu_s"]
        quiet = figures.get("wall_quiet_s")
        flags = figures.get("quiet_runs") or [True] * len(wall["runs"])
        cores = [c / w for c, w, ok in zip(cpu["runs"], wall["runs"], flags, strict=True) if ok]
        cores = cores or [c / w for c, w in zip(cpu["runs"], wall["runs"], strict=True)]
        best = quiet or wall
        quiet_cell = f"{_runs(quiet, 1)}" if quiet else "none"
        lines.append(
            f"| {label} | {_spread(wall, 1)} | {quiet_cell} |"
            f" {_spread(cpu, 1)} | {statistics.median(cores):.2f} |"
            f" {seconds / _median(best):.2f} | {_optional(figures.get('foreign_cpu_s'), 1)} |"
        )
    bare = variants["bare"]
    overhead, ratio = section["overhead"], section["cpu_ratio"]
    lines += [
        "",
        f"- Sprite tiling run (bare): {_spread(bare['sprite_wall_s'], 2)} s wall; Python CPU"
        f" inside `transcode()`: {_spread(variants['ripplecast']['python_cpu_s'], 2)} s.",
        "- Overhead wall, Ripplecast / bare main command - 1:"
        f" {_percent(overhead['wall_vs_bare_main'])};"
        f" against main + sprite run: {_percent(overhead['wall_vs_bare_main_and_sprites'])}.",
        f"- Overhead ffmpeg CPU, same comparison: {_percent(overhead['ffmpeg_cpu_vs_bare_main'])};"
        f" against main + sprite run: {_percent(overhead['ffmpeg_cpu_vs_bare_main_and_sprites'])}.",
    ]
    if "own_work_vs_main_ffmpeg" in overhead:
        rc = variants["ripplecast"]
        lines += [
            "- Inside `transcode()` (each ffmpeg run timed where it is awaited): main ffmpeg"
            f" {_spread(rc['main_ffmpeg_wall_s'], 1)} s, sprite run"
            f" {_spread(rc['sprite_wall_s'], 2)} s, Ripplecast's own work"
            f" {_spread(rc['own_wall_s'], 2)} s: **own work / main ffmpeg"
            f" {_percent(overhead['own_work_vs_main_ffmpeg'])}**, with the sprite run"
            f" {_percent(overhead['own_work_and_sprites_vs_main_ffmpeg'])}; the same main ffmpeg"
            f" under Ripplecast / bare: {_percent(overhead['main_ffmpeg_vs_bare_main'])}.",
        ]
    quiet_pairs = section.get("quiet", {}).get("wall_ripplecast_vs_bare_main")
    if quiet_pairs:
        lines.append(
            f"- Quiet runs ({section['quiet']['rule']}): Ripplecast / bare main command, paired:"
            f" {_percent(quiet_pairs)}."
        )
    lines += [
        "- CPU one process / separate processes: "
        f"**{_median(ratio['one_process_vs_separate']):.3f}x** (runs"
        f" {_runs(ratio['one_process_vs_separate'], 3)}); Ripplecast's full command (with poster"
        f" and thumbnails) / separate: {_median(ratio['ripplecast_command_vs_separate']):.3f}x.",
        "- Wall one process / separate sequential: "
        f"{_median(section['wall_ratio']['one_process_vs_separate_sequential']):.3f}x;"
        f" / all at once: {_median(section['wall_ratio']['one_process_vs_parallel']):.3f}x.",
        "",
    ]
    return lines


def upload_lines(section: Section) -> list[str]:
    lines = [
        "## Upload",
        "",
        f"File: {section['file']['description']} ({section['file']['bytes'] / 1e6:.1f} MB);"
        f" S3 parts of {section['part_size'] / 2**20:g} MiB; {section['runs']} runs, order"
        " rotated. MB/s = 10^6 bytes per second of wall time; ratios are paired per run"
        " (baseline wall / variant wall).",
        "",
        "| target | variant | MB/s, median (min-max) | wall s | this process CPU s |"
        " children CPU s | moto CPU s | others' CPU s | throughput vs baseline |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in section["rows"]:
        versus = "; ".join(
            f"{_median(ratio):.2f}x {baseline}" for baseline, ratio in row["versus"].items()
        )
        peer = _median(row["peer_cpu_s"])
        lines.append(
            f"| {row['target']} | {row['variant']} | {_spread(row['mb_s'], 1)} |"
            f" {_median(row['wall_s']):.2f} | {_median(row['self_cpu_s']):.2f} |"
            f" {_median(row['children_cpu_s']):.2f} | {f'{peer:.2f}' if peer >= 0.05 else ''} |"
            f" {_optional(row.get('foreign_cpu_s'), 2)} | {versus} |"
        )
    lines.append("")
    return lines


def workers_lines(section: Section) -> list[str]:
    lines = [
        "## Workers",
        "",
        f"{section['jobs']} jobs per run, each a {section['source']['description']}"
        f" to the default ladder ({', '.join(section['renditions'])}); {section['runs']} runs"
        " per row, order rotated.",
        "",
        "| database | workers | jobs/min, median (min-max) | jobs/min, quiet runs | wall s |"
        " machine CPU busy | ffmpeg CPU s | others' CPU s | speed-up vs 1 worker |"
        " speed-up, quiet pairs |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in section["rows"]:
        speedup = row.get("speedup")
        quiet = row.get("jobs_per_min_quiet")
        quiet_speedup = row.get("speedup_quiet")
        lines.append(
            f"| {row['database']} | {row['workers']} | {_spread(row['jobs_per_min'], 2)} |"
            f" {_runs(quiet, 2) if quiet else 'none'} |"
            f" {_median(row['wall_s']):.1f} | {_median(row['machine_busy']) * 100:.0f} % |"
            f" {_median(row['ffmpeg_cpu_s']):.1f} | {_optional(row.get('foreign_cpu_s'), 1)} |"
            f" {f'{_median(speedup):.2f}x' if speedup else ''} |"
            f" {_runs(quiet_speedup, 2) if quiet_speedup else ''} |"
        )
    lines.append("")
    return lines


RENDERERS: dict[str, Callable[[Section], list[str]]] = {
    "transcode": transcode_lines,
    "upload": upload_lines,
    "workers": workers_lines,
}


def render_markdown(data: dict[str, Any]) -> str:
    """The whole results file as Markdown: machine, then each section present."""
    lines = ["# Video-on-demand benchmark", ""]
    if data.get("quick"):
        lines += ["**Quick mode: tiny media, one run; these figures mean nothing.**", ""]
    if "date" in data:
        lines += [f"Measured {data['date']} (the last section's end).", ""]
    if data.get("note"):
        lines += [f"Note: {data['note']}.", ""]
    lines += machine_lines(data)
    for name, render in RENDERERS.items():
        if name in data:
            lines += render(data[name])
            lines.append(f"Command: `{data[name].get('command', '')}`")
            lines.append("")
    return "\n".join(lines)
