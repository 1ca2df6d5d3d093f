"""Join rendered segments into one file by packet copy, with the input's audio/subtitles.

Video packets are copied from each segment in order (no re-encode). Each segment was encoded on
its own, so its decode timestamps start below its first pts by the encoder's reorder delay
(B-frames); where two segments meet, or where segments have different delays, the copied dts
could go backwards. `rewrite_dts` recomputes one valid dts sequence for the whole stream from
the pts alone. Audio and subtitle packets are copied once from the input over its whole duration,
so they are byte-identical to the input's.
"""

from __future__ import annotations

import heapq
import os
from collections.abc import Iterator, Sequence
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from rmmvideo.errors import UserError
from rmmvideo.video.safe_output import AtomicOutput


_MUXER_TAGS = {"major_brand", "minor_version", "compatible_brands", "encoder"}  # the muxer writes its own


def rewrite_dts(pts: Sequence[int], min_delay: int = 0) -> list[int]:
    """A strictly increasing dts with dts[i] <= pts[i] for packets given in decode order.

    With S the sorted pts and K the reorder delay (the smallest that works,
    max_i(i - rank(pts[i])), or `min_delay` if larger), dts[i] = S[i - K]; the first K packets
    get dts below S[0], spaced by one frame. With `min_delay` = the encoder's own delay this
    reproduces the dts of a single encoder's output.

    Args:
        pts: presentation timestamps, decode order, all distinct.
        min_delay: keep at least this many frames of delay (the encoders' delay).
    Returns:
        dts, same length.
    """
    n = len(pts)
    if n == 0:
        return []
    p = np.asarray(pts, dtype=np.int64)
    order = np.argsort(p, kind="stable")
    s = p[order]
    if n > 1 and np.any(np.diff(s) == 0):
        raise ValueError("duplicate pts in a video stream: cannot build timestamps")
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n)
    k = min(n, max(0, min_delay, int(np.max(np.arange(n) - rank))))
    step = int(s[1] - s[0]) if n > 1 else 1
    dts = np.empty(n, dtype=np.int64)
    dts[k:] = s[: n - k]
    if k:
        dts[:k] = s[0] - step * np.arange(k, 0, -1)
    return [int(x) for x in dts]


def _video_stream(c: av.container.InputContainer) -> av.video.stream.VideoStream:
    for s in c.streams.video:
        if not (s.disposition & av.stream.Disposition.attached_pic):
            return s
    raise UserError(f"no video stream in {c.name}")


def _segment_pts(path: Path) -> tuple[list[int], int, Fraction, bytes]:
    """pts of the video packets (decode order), the encoder's delay in frames, time base,
    codec extradata (parameter sets)."""
    with av.open(str(path)) as c:
        vs = _video_stream(c)
        extradata = bytes(vs.codec_context.extradata or b"")
        pts: list[int] = []
        dts: list[int] = []
        for p in c.demux(vs):
            if p.size and p.pts is not None:
                pts.append(int(p.pts))
                dts.append(int(p.dts) if p.dts is not None else int(p.pts))
        first = min(pts) if pts else 0
        delay = sum(1 for d in dts if d < first)
        return pts, delay, Fraction(vs.time_base), extradata


def _muxer_options(path: Path, tb: Fraction) -> dict[str, str]:
    """mp4/mov: edit lists in the video's own time units (default 1/1000 s rounds the start)."""
    if path.suffix.lower() in (".mp4", ".m4v", ".mov"):
        return {"movie_timescale": str(tb.denominator)}
    return {}


def _input_pts(input_path: str | os.PathLike, seg_pts: list[int], seg_sorted: list[int], tb: Fraction) -> list[int]:
    """Replace the segments' pts (decode order) by the input's, matched by rank in time order."""
    with av.open(str(input_path)) as c:
        vs = _video_stream(c)
        if Fraction(vs.time_base) != tb:
            raise ValueError(f"segments have time base {tb}, the input {vs.time_base}")
        ref = sorted(int(p.pts) for p in c.demux(vs) if p.size and p.pts is not None)
    if len(ref) != len(seg_sorted):
        raise ValueError(f"segments hold {len(seg_sorted)} frames, the input {len(ref)}")
    step = min((b - a for a, b in zip(ref, ref[1:])), default=1)
    mapping: dict[int, int] = {}
    for got, want in zip(seg_sorted, ref):
        if abs(got - want) >= max(1, step // 2) + 1 and abs(got - want) > 0.002 / tb:
            raise ValueError(f"segment frame at pts {got} does not match the input's {want}")
        mapping[got] = want
    return [mapping[p] for p in seg_pts]


def join_segments(
    input_path: str | os.PathLike,
    segment_paths: Sequence[str | os.PathLike],
    output: str | os.PathLike,
    *,
    audio: bool = True,
    input_pts: bool = True,
) -> int:
    """Write `output` = video packets of all segments + audio/subtitles of `input_path`.

    Written to a hidden temp file beside `output` and renamed at the end, so `output` appears
    only when complete. Returns the number of video packets written.

    Args:
        input_path: the original input (its audio and subtitle streams are copied).
        segment_paths: rendered segments, in time order, each with pts in the input's units.
        output: final file path.
        audio: copy the input's audio and subtitle streams.
        input_pts: give the k-th frame (in time order) the input's k-th pts. A segment written
            to mp4 starting mid-file gets its start through an edit list in the movie's
            1/1000 s units, which can move its pts by a few ticks; this puts them back exactly.
    """
    segs = [Path(s) for s in segment_paths]
    if not segs:
        raise ValueError("no segments to join")
    all_pts: list[int] = []
    seg_sorted: list[int] = []  # each segment's pts sorted, concatenated: maps onto the input's
    tb: Fraction | None = None
    delay = 0
    params: bytes | None = None
    for s in segs:
        pts, d, t, extra = _segment_pts(s)
        delay = max(delay, d)
        if tb is not None and t != tb:
            raise ValueError(f"segment {s} has time base {t}, expected {tb}")
        if params is not None and extra != params:
            # out-of-band parameter sets (mp4 avcC) are stored once: all segments must share them
            raise ValueError(f"segment {s} was encoded with other codec parameters than the first; "
                             "segments of one file must use the same encoder settings")
        tb, params = t, extra
        all_pts.extend(pts)
        seg_sorted.extend(sorted(pts))
    assert tb is not None
    if input_pts:
        all_pts = _input_pts(input_path, all_pts, seg_sorted, tb)
    dts = rewrite_dts(all_pts, min_delay=delay)

    out_path = Path(output)
    target = AtomicOutput(out_path, [input_path, *segs])
    tmp = target.temp
    first = av.open(str(segs[0]))
    src = av.open(str(input_path))
    written = 0
    try:
        with av.open(str(tmp), mode="w", options=_muxer_options(out_path, tb)) as oc:
            ov = oc.add_stream_from_template(_video_stream(first))
            ov.time_base = tb
            ov.metadata.update(_video_stream(first).metadata)
            # as VideoWriter does for a whole file: container tags, copied streams' tags and flags
            oc.metadata.update({k: v for k, v in src.metadata.items() if k.lower() not in _MUXER_TAGS})
            copy: dict[int, av.stream.Stream] = {}
            if audio:
                for s in src.streams:
                    if s.type in ("audio", "subtitle"):
                        try:
                            ost = oc.add_stream_from_template(s)
                        except (ValueError, av.error.FFmpegError) as e:
                            raise UserError(f"cannot copy {s.type} stream #{s.index} ({s.codec_context.name}) "
                                            f"into a {out_path.suffix} file ({e})") from None
                        ost.metadata.update(s.metadata)  # language, title, handler name
                        ost.disposition = s.disposition  # default / forced flags
                        copy[s.index] = ost

            def video_packets() -> Iterator[tuple[float, int, av.Packet]]:
                i = 0
                for sp in segs:
                    with av.open(str(sp)) as c:
                        vs = _video_stream(c)
                        for pkt in c.demux(vs):
                            if pkt.size == 0 or pkt.pts is None:
                                continue
                            pkt.pts, pkt.dts = all_pts[i], dts[i]
                            i += 1
                            yield float(pkt.dts * tb), 0, pkt

            def other_packets() -> Iterator[tuple[float, int, av.Packet]]:
                if not copy:
                    return
                streams = [src.streams[i] for i in copy]
                for pkt in src.demux(streams):
                    if pkt.size == 0:
                        continue
                    ts = pkt.dts if pkt.dts is not None else pkt.pts
                    t = float(ts * pkt.time_base) if ts is not None else 0.0
                    yield t, 1, pkt

            for _, kind, pkt in heapq.merge(video_packets(), other_packets(), key=lambda x: (x[0], x[1])):
                if kind == 0:
                    pkt.stream = ov
                    written += 1
                else:
                    pkt.stream = copy[pkt.stream.index]
                oc.mux(pkt)
        if written != len(all_pts):
            raise RuntimeError(f"joined {written} video packets, expected {len(all_pts)}")
        target.commit()
    finally:
        target.discard()
        first.close()
        src.close()
    return written
