"""Packet-level facts about a video file, read without decoding: frame count, timing, keyframes.

`scan_video` demuxes the video stream once (no decode) and is the ground truth the batch uses
to plan segments and to verify outputs: a finished output must have as many video packets as the
input has, covering the same time span.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av

from rmmvideo.errors import UserError


@dataclass(frozen=True)
class VideoScan:
    """Video-stream packets of one file, in decode order.

    Attributes:
        path: the file.
        time_base: the video stream's time base (pts unit, seconds).
        pts: pts of every non-empty video packet, decode order (packets without pts are skipped).
        keyframes: pts of the keyframe packets, in pts order.
        frames: number of non-empty video packets (= decodable frames for normal files).
        start: first presentation time, seconds.
        end: last presentation time plus its duration, seconds.
        reported: frame count the container's index claims (0 = unknown); more than `frames`
            means the file is truncated.
    """

    path: Path
    time_base: Fraction
    pts: list[int] = field(repr=False)
    keyframes: list[int]
    frames: int
    start: float
    end: float
    reported: int = 0

    @property
    def duration(self) -> float:
        return self.end - self.start

    def frames_in(self, start_pts: int | None, end_pts: int | None) -> int:
        """Number of frames with start_pts <= pts < end_pts (None = unbounded)."""
        lo = -(2**63) if start_pts is None else start_pts
        hi = 2**63 if end_pts is None else end_pts
        return sum(1 for p in self.pts if lo <= p < hi)


def _video_stream(container: av.container.InputContainer, path: Path) -> av.video.stream.VideoStream:
    for s in container.streams.video:
        if not (s.disposition & av.stream.Disposition.attached_pic):
            return s
    raise UserError(f"no video stream in {path}")


def scan_video(path: str | os.PathLike) -> VideoScan:
    """Demux the first video stream of `path` without decoding and collect packet timing.

    Raises UserError when the file cannot be opened or has no video packet.
    """
    p = Path(path)
    try:
        container = av.open(str(p), mode="r")
    except (av.error.FFmpegError, UnicodeDecodeError, OSError) as e:
        raise UserError(f"not a readable media file: {p} ({getattr(e, 'strerror', None) or e})") from None
    with container:
        vs = _video_stream(container, p)
        tb = Fraction(vs.time_base) if vs.time_base else Fraction(1, 90000)
        reported = int(vs.frames or 0)
        pts: list[int] = []
        keys: list[int] = []
        last_end: int | None = None
        for pkt in container.demux(vs):
            if pkt.size == 0 or pkt.pts is None:
                continue
            pts.append(int(pkt.pts))
            if pkt.is_keyframe:
                keys.append(int(pkt.pts))
            end = int(pkt.pts) + int(pkt.duration or 0)
            last_end = end if last_end is None else max(last_end, end)
    if not pts:
        raise UserError(f"no video packets in {p}")
    first = min(pts)
    last = max(pts)
    if last_end is None or last_end <= last:  # no packet durations: count the last frame as 0 long
        last_end = last
    return VideoScan(
        path=p,
        time_base=tb,
        pts=pts,
        keyframes=sorted(keys),
        frames=len(pts),
        start=float(first * tb),
        end=float(last_end * tb),
        reported=reported,
    )


def check_complete(scan: VideoScan) -> None:
    """UserError when the container's index lists more video frames than the file holds."""
    if scan.reported and scan.frames < scan.reported:
        raise UserError(f"truncated input: {scan.frames} of {scan.reported} video packets present")


def frame_duration(scan: VideoScan) -> float:
    """Median spacing between consecutive frames, seconds (0 for a one-frame file)."""
    s = sorted(scan.pts)
    if len(s) < 2:
        return 0.0
    d = sorted(b - a for a, b in zip(s, s[1:]))
    return float(d[len(d) // 2] * scan.time_base)


def verify_output(output: str | os.PathLike, frames: int, start: float, end: float, tol: float) -> str | None:
    """Check that `output` is a complete rendering of an input with these facts.

    Frame count (video packets) must match exactly; start and end times must agree within
    `tol` seconds (one frame). Returns None when the output is valid, else a one-line reason.
    """
    out = Path(output)
    if not out.is_file():
        return f"missing output {out}"
    try:
        got = scan_video(out)
    except UserError as e:
        return str(e)
    if got.frames != frames:
        return f"frame count {got.frames} != input's {frames}"
    if abs(got.start - start) > tol + 1e-6:
        return f"starts at {got.start:.3f}s, input at {start:.3f}s"
    if abs(got.end - end) > tol + 1e-6:
        return f"ends at {got.end:.3f}s, input at {end:.3f}s"
    return None
