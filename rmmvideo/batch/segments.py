"""Split a video at keyframes into segments of about a given length (no decoding)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from rmmvideo.batch.media import VideoScan


@dataclass(frozen=True)
class Segment:
    """Frames with start_pts <= pts < end_pts of one input (None = open end).

    index: 0-based position in the file; frames: how many input frames fall in the range;
    start/end: presentation times in seconds (for display and balancing).
    """

    index: int
    start_pts: int | None
    end_pts: int | None
    frames: int
    start: float
    end: float

    def to_dict(self) -> dict:
        return asdict(self)

    @staticmethod
    def from_dict(d: dict) -> Segment:
        return Segment(**d)


def plan_segments(scan: VideoScan, seconds: float) -> list[Segment]:
    """Cut points at keyframes so that each segment lasts about `seconds`.

    A cut is placed at the first keyframe at least `seconds` after the previous cut; a last
    piece shorter than half of `seconds` is merged into the segment before it. `seconds <= 0`
    or a file shorter than 1.5 x `seconds` gives one segment covering everything.
    The first segment starts unbounded (None) and the last one ends unbounded, so frames
    before the first keyframe or after the last one are never lost.
    """
    tb = scan.time_base
    whole = [Segment(0, None, None, scan.frames, scan.start, scan.end)]
    if seconds <= 0 or scan.duration < 1.5 * seconds or len(scan.keyframes) < 2:
        return whole
    cuts: list[int] = []
    last = scan.start
    for k in scan.keyframes:
        t = float(k * tb)
        if t - last >= seconds and scan.end - t >= 0.5 * seconds:
            cuts.append(k)
            last = t
    if not cuts:
        return whole
    bounds: list[int | None] = [None, *cuts, None]
    segs = []
    for i in range(len(bounds) - 1):
        a, b = bounds[i], bounds[i + 1]
        segs.append(Segment(
            index=i,
            start_pts=a,
            end_pts=b,
            frames=scan.frames_in(a, b),
            start=scan.start if a is None else float(a * tb),
            end=scan.end if b is None else float(b * tb),
        ))
    return segs
