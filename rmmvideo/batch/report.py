"""End of batch: per-file results, a summary table on stdout, report.json in DIR."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TextIO

from rmmvideo.video.safe_output import atomic_output

REPORT_NAME = "report.json"


@dataclass
class FileResult:
    """One row of the report. status: "done" (this run), "skipped" (done and verified by an
    earlier run), "failed" (error says why). damage: for a damaged input kept with
    on_damage="warn", its problems and damaged spans (the output has every decodable frame)."""

    input: str
    output: str
    status: str
    frames: int = 0
    faces: int = 0
    tracks: int = 0
    seconds: float = 0.0
    error: str | None = None
    damage: str | None = None
    archive: dict[str, Any] | None = None  # interlacing, SAR, audio handling (video.archive.archive_facts)


def write_report(out_dir: Path, results: list[FileResult], extra: dict[str, Any] | None = None) -> Path:
    """Write DIR/report.json atomically; returns its path."""
    data = {
        "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "files": len(results),
        "done": sum(r.status in ("done", "skipped") for r in results),
        "failed": sum(r.status == "failed" for r in results),
        "damaged": sum(bool(r.damage) for r in results),
        **(extra or {}),
        "results": [asdict(r) for r in results],
    }
    path = out_dir / REPORT_NAME
    with atomic_output(path) as tmp:
        tmp.write_text(json.dumps(data, indent=1), encoding="utf-8")
    return path


def print_summary(results: list[FileResult], out: TextIO) -> None:
    """A fixed-width table: status, frames, faces, tracks, seconds, file, error."""
    head = f"{'status':<8} {'frames':>7} {'faces':>6} {'tracks':>6} {'seconds':>8}  file"
    print(head, file=out)
    print("-" * len(head), file=out)
    for r in results:
        line = f"{r.status:<8} {r.frames:>7} {r.faces:>6} {r.tracks:>6} {r.seconds:>8.1f}  {r.input}"
        if r.error:
            line += f"  ({r.error})"
        if r.damage:
            line += f"  (damaged input, kept: {r.damage})"
        print(line, file=out)
    n_fail = sum(r.status == "failed" for r in results)
    n_skip = sum(r.status == "skipped" for r in results)
    print(f"{len(results)} files: {len(results) - n_fail - n_skip} done, {n_skip} already done, "
          f"{n_fail} failed", file=out)
