"""Streaming decode and frame-accurate random access (PyAV).

Frames come out upright (the stream's rotation is applied with `np.rot90`), as RGB
`(H, W, 3)` uint8, or uint16 (rgb48, full 16-bit scale) for >8-bit input when asked.
Time always comes from pts (`pts * time_base`), never from index x fps, so VFR is kept exactly.

Archive footage (`view=`, a `rmmvideo.video.archive.FrameView`): interlaced streams go through
FFmpeg's yadif in a PyAV filter graph (one frame per frame with the input pts, or one per field
at double rate with pts in half the time base), and anamorphic frames are resampled to square
pixels in the same swscale call that converts them to RGB.

Damaged input policy (`on_damage`):
  "error" (default): a one-line UserError, as early as the damage is known: before any frame
      if the container's index already proves the file was cut short (mp4 with its index
      first); at the first undecodable packet or read error; otherwise (index lost, e.g.
      Matroska cut before its cues) at the end, when the stream stopped early (fewer packets
      than indexed, or the last frame well before the announced duration). A caller writing
      through `VideoWriter` then discards its output: never a silently short video.
  "warn": every decodable frame is yielded with its own pts (a damaged frame is left out, so
      the output has a gap in time there, never a shifted timeline); a warning is logged at the
      end naming the damaged spans, and a `DamageReport` passed as `damage` holds them.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Literal, TypeVar

import av
import numpy as np

from rmmvideo.errors import UserError
from rmmvideo.video.quantiser import QPMap, export_qp, qp_map
from rmmvideo.video.probe import (
    bit_depth_of,
    expected_video_end,
    index_points_past_end,
    frame_colorspace,
    normalise_rotation,
    open_input,
    video_stream_of,
)

if TYPE_CHECKING:
    from rmmvideo.video.archive import FrameView

log = logging.getLogger(__name__)

OnDamage = Literal["error", "warn"]
ON_DAMAGE = ("error", "warn")


@dataclass
class DamageReport:
    """What was wrong with a decoded input; filled by `decode_frames`, complete once it ends.

    problems: one phrase each ("1 undecodable packets", "truncated: ...").
    spans: ``(start, end)`` seconds of the input's timeline with no decodable frame
        (``end`` is the next decoded frame's time, or the announced end of the stream).
    """

    problems: list[str] = field(default_factory=list)
    spans: list[tuple[float, float]] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.problems)

    def spans_text(self) -> str:
        """``6.100-6.133s, 10.000-12.000s`` (empty when no span is known)."""
        return ", ".join(f"{a:.3f}-{b:.3f}s" for a, b in self.spans)

    def line(self) -> str:
        """One line: the problems and the damaged spans."""
        text = "; ".join(self.problems)
        return f"{text}; damaged spans {self.spans_text()}" if self.spans else text


@dataclass(frozen=True, slots=True)
class DecodedFrame:
    """One decoded frame. `image`: (H, W, 3) RGB, uint8 (or uint16 rgb48 when asked), upright.
    `qp`: the codec's quantiser of each macroblock, upright like `image` (H.264 only, else None)."""

    index: int  # 0-based position in presentation order
    pts: int  # in the stream's time_base
    time: float  # seconds: pts * time_base
    image: np.ndarray
    qp: QPMap | None = None


def decoded_frame(index: int, pts: int, time: float, frame: av.VideoFrame, high_bit_depth: bool,
                  size: tuple[int, int] | None) -> DecodedFrame:
    """`frame` as a `DecodedFrame`: its RGB image (`frame_to_rgb`) and its quantisers, resampled
    and rotated as the image is."""
    image = frame_to_rgb(frame, high_bit_depth, size)
    qp = qp_map(frame)
    if qp is not None:
        scale = (1.0, 1.0) if size is None else (size[1] / frame.height, size[0] / frame.width)
        qp = qp.shown(normalise_rotation(frame.rotation) // 90, scale)
    return DecodedFrame(index, pts, time, image, qp)


def frame_to_rgb(frame: av.VideoFrame, high_bit_depth: bool = False,
                 size: tuple[int, int] | None = None) -> np.ndarray:
    """Convert a decoded frame to upright RGB: (H, W, 3) uint8, or uint16 if `high_bit_depth`
    and the frame has more than 8 bits per component. Colour matrix: the frame's tag, else BT.601
    (as the ffmpeg command line does). `size`: (width, height) to resample to before rotation
    (bicubic, e.g. anamorphic -> square pixels); None keeps the stored size."""
    deep = high_bit_depth and bit_depth_of(frame.format.name) > 8
    rng = int(frame.color_range)
    resize = {} if size is None else {"width": size[0], "height": size[1], "interpolation": "BICUBIC"}
    img = frame.to_ndarray(
        format="rgb48le" if deep else "rgb24",
        src_colorspace=frame_colorspace(frame),
        src_color_range=rng if rng in (1, 2) else 1,
        **resize,
    )
    k = normalise_rotation(frame.rotation) // 90
    if k:
        img = np.ascontiguousarray(np.rot90(img, k=k))
    return img


class _PtsFixer:
    """Keep pts strictly increasing: fill in missing pts (raw streams) from the previous step and
    nudge a repeated or backwards pts (broken muxers) to previous + 1; given pts stay untouched."""

    def __init__(self, default_step: int) -> None:
        self.prev: int | None = None
        self.step = max(1, default_step)
        self.fixed = 0

    def __call__(self, pts: int | None) -> int:
        if pts is None:
            pts = 0 if self.prev is None else self.prev + self.step
            self.fixed += self.prev is not None
        elif self.prev is not None and pts <= self.prev:
            pts = self.prev + 1
            self.fixed += 1
        elif self.prev is not None:
            self.step = pts - self.prev
        self.prev = int(pts)
        return int(pts)


class _Deinterlacer:
    """yadif/bwdif in a PyAV filter graph. Frames in (stream time base, increasing pts),
    progressive frames out with pts in `view.time_base` (exact: the filter works in half the
    input time base)."""

    def __init__(self, vs: av.video.stream.VideoStream, view: FrameView) -> None:
        self.graph = av.filter.Graph()
        src = self.graph.add_buffer(template=vs)
        deint = self.graph.add(*view.filters)
        sink = self.graph.add("buffersink")
        src.link_to(deint)
        deint.link_to(sink)
        self.graph.configure()
        self.out_tb = view.time_base

    def _pull(self) -> list[av.VideoFrame]:
        out = []
        while True:
            try:
                f = self.graph.pull()
            except (av.error.BlockingIOError, av.error.EOFError):
                return out
            pts = Fraction(f.pts) * Fraction(f.time_base) / self.out_tb
            if pts.denominator != 1:
                raise RuntimeError(f"deinterlaced pts {f.pts} in {f.time_base} is not a whole number of {self.out_tb}")
            f.pts = int(pts)
            out.append(f)

    def push(self, frames: list[av.VideoFrame]) -> list[av.VideoFrame]:
        out = []
        for f in frames:
            self.graph.push(f)
            out += self._pull()
        return out

    def flush(self) -> list[av.VideoFrame]:
        self.graph.push(None)
        return self._pull()


def _default_step(vs: av.video.stream.VideoStream) -> int:
    rate = vs.average_rate or vs.guessed_rate or Fraction(25)
    tb = vs.time_base or Fraction(1, 90000)
    return max(1, round(1 / (Fraction(rate) * Fraction(tb))))


def _decode_sequential(
    path: Path,
    high_bit_depth: bool,
    max_frames: int | None,
    on_damage: OnDamage,
    damage: DamageReport | None = None,
    view: FrameView | None = None,
    quantisers: bool = False,
) -> Iterator[DecodedFrame]:
    with open_input(path) as container:
        vs = video_stream_of(container, path)
        vs.thread_type = "AUTO"
        if quantisers:
            export_qp(vs.codec_context)
        tb = Fraction(vs.time_base) if vs.time_base else Fraction(1, 90000)
        stream_tb = tb  # packets' time base (frames may come out of the deinterlacer in another)
        fix = _PtsFixer(_default_step(vs))
        through, deint, resample = _view_stage(vs, view, fix)
        if deint is not None:  # frames come out in the view's time base; count and check them there
            tb = view.time_base
            fix = _PtsFixer(max(1, round(_default_step(vs) * Fraction(vs.time_base or tb) / tb)))
        reported = int(vs.frames or 0)
        if on_damage == "error" and index_points_past_end(container, path.stat().st_size):
            raise UserError(f"damaged input {path}: truncated (its index points past the end of the file)")
        announced_end = expected_video_end(vs)
        gaps: list[int] = []
        packets = 0
        bad_packets = 0
        index = 0
        demux_error: str | None = None
        report = damage if damage is not None else DamageReport()
        packet_pts: list[int] = []  # pts of every video packet read, to find the frames lost to damage
        decoded_pts: set[int] = set()  # pts of every frame the decoder returned (stream time base)

        size: tuple[int, int] | None = None

        def last_time() -> float:
            return float(fix.prev * tb) if fix.prev is not None else 0.0

        def bad(what: str) -> None:
            if on_damage == "error":
                raise UserError(f"damaged input {path}: {what} near t={last_time():.3f}s (after {index} good frames)")

        def decoded(frames: list[av.VideoFrame]) -> list[av.VideoFrame]:
            decoded_pts.update(int(f.pts) for f in frames if f.pts is not None)
            return frames

        def emit(frames: list[av.VideoFrame]) -> Iterator[DecodedFrame]:
            nonlocal index, size
            for f in frames:
                if size is None:
                    size = (f.width, f.height)
                elif (f.width, f.height) != size:
                    raise UserError(
                        f"the video size changes mid-stream at frame {index} of {path} "
                        f"({size[0]}x{size[1]} -> {f.width}x{f.height}): not supported"
                    )
                prev = fix.prev
                if bad_packets and f.pts is not None and prev is not None and f.pts <= prev:
                    continue  # a frame out of order after damage (concealment): left out, never re-timed
                pts = fix(f.pts)
                if prev is not None and pts > prev and len(gaps) < 256:
                    gaps.append(pts - prev)
                yield decoded_frame(index, pts, float(pts * tb), f, high_bit_depth, resample)
                index += 1

        try:
            for packet in container.demux(vs):
                if max_frames is not None and index >= max_frames:
                    return
                if packet.size:
                    packets += 1
                    if packet.pts is not None:
                        packet_pts.append(int(packet.pts))
                try:
                    frames = through(decoded(vs.decode(packet)))
                except av.error.InvalidDataError:
                    bad_packets += 1
                    bad("undecodable packet")
                    continue
                for d in emit(frames):
                    if max_frames is not None and d.index >= max_frames:
                        return
                    yield d
        except av.error.FFmpegError as e:  # read error mid-file: flush what the decoder holds
            demux_error = str(e)
            bad(f"read error ({e})")
            try:
                for d in emit(through(decoded(vs.decode(None)))):
                    if max_frames is not None and d.index >= max_frames:
                        return
                    yield d
            except av.error.FFmpegError:
                pass
        if deint is not None:  # the frames the deinterlacer still holds (it looks one frame ahead)
            for d in emit(deint.flush()):
                if max_frames is not None and d.index >= max_frames:
                    return
                yield d
        if index == 0:
            raise UserError(f"no decodable video frame in {path}")
        if fix.fixed:
            log.warning("%s: %d frames had no pts (raw stream?) or non-increasing pts; timestamps were "
                        "synthesised to keep them increasing", path, fix.fixed)
        problems = []
        gap = float(np.median(gaps) * tb) if gaps else 0.0
        last_end = float(fix.prev * tb) + gap
        cut = False
        if reported and packets < reported:
            problems.append(f"truncated: {packets} of {reported} video packets present")
            cut = True
        elif announced_end is not None and last_end < announced_end - max(0.25, 3 * gap):
            problems.append(f"truncated: video ends at {last_end:.3f}s, the file announces {announced_end:.3f}s")
            cut = True
        if bad_packets:
            problems.append(f"{bad_packets} undecodable packets")
        if demux_error:
            problems.append(f"read error: {demux_error}")
        if bad_packets or demux_error:
            report.spans.extend(_lost_spans(packet_pts, decoded_pts, stream_tb))
        if cut and announced_end is not None and announced_end > last_end:  # runs to the announced end
            report.spans.append((last_end, announced_end))
        if problems:
            report.problems.extend(problems)
            msg = f"damaged input {path}: {report.line()}; decoded {index} frames up to t={last_time():.3f}s"
            if on_damage == "error":
                raise UserError(msg)
            log.warning("%s (every decodable frame kept with its timestamp)", msg)


def _lost_spans(packet_pts: list[int], decoded_pts: set[int], tb: Fraction) -> list[tuple[float, float]]:
    """Seconds ``[start, end)`` of runs of packets whose frame never came out of the decoder:
    from the first lost frame's time to the next decoded frame's time (or the last packet's)."""
    order = sorted(set(packet_pts))
    spans: list[tuple[float, float]] = []
    start: int | None = None
    for p in order:
        if p not in decoded_pts:
            start = p if start is None else start
        elif start is not None:
            spans.append((float(start * tb), float(p * tb)))
            start = None
    if start is not None:
        end = order[-1] + (order[-1] - order[-2] if len(order) > 1 else 1)
        spans.append((float(start * tb), float(end * tb)))
    return spans


def _view_stage(vs: av.video.stream.VideoStream, view: FrameView | None, fix: _PtsFixer) -> tuple[
        Callable[[list[av.VideoFrame]], list[av.VideoFrame]], _Deinterlacer | None, tuple[int, int] | None]:
    """(frames -> frames through the deinterlacer or unchanged, the deinterlacer or None,
    the (width, height) to resample each frame to or None) for a decode `view`."""
    resample = view.decode_size if view is not None else None
    if view is None or view.filters is None:
        return (lambda frames: frames), None, resample
    deint = _Deinterlacer(vs, view)

    def through(frames: list[av.VideoFrame]) -> list[av.VideoFrame]:
        for f in frames:
            f.pts = fix(f.pts)  # the deinterlacer needs increasing input pts
        return deint.push(frames)

    return through, deint, resample


T = TypeVar("T")
_END = object()


class _Failure:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


def prefetch(make_iter: Callable[[], Iterator[T]], size: int) -> Iterator[T]:
    """Run the iterator made by `make_iter` in a background thread, `size` items ahead.

    Memory stays bounded by the queue; exceptions from the producer are re-raised in the
    consumer, in order (after the items produced before them); closing the consumer early
    stops the producer.
    """
    q: queue.Queue = queue.Queue(maxsize=max(1, size))
    stop = threading.Event()

    def put(item: object) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def worker() -> None:
        it = make_iter()
        try:
            for item in it:
                if not put(item):
                    return
            put(_END)
        except BaseException as e:  # noqa: BLE001 - handed to the consumer, which re-raises
            put(_Failure(e))
        finally:
            close = getattr(it, "close", None)
            if close is not None:
                close()

    t = threading.Thread(target=worker, name="rmmvideo-prefetch", daemon=True)
    t.start()
    try:
        while True:
            item = q.get()
            if item is _END:
                return
            if isinstance(item, _Failure):
                raise item.exc
            yield item
    finally:
        stop.set()
        t.join()


def decode_frames(
    path: str | os.PathLike,
    *,
    high_bit_depth: bool = False,
    max_frames: int | None = None,
    prefetch_frames: int = 0,
    on_damage: OnDamage = "error",
    damage: DamageReport | None = None,
    view: FrameView | None = None,
    quantisers: bool = False,
) -> Iterator[DecodedFrame]:
    """Stream the frames of `path` in presentation order, upright, with pts-exact times.

    Args:
        path: any file FFmpeg reads (no extension check).
        high_bit_depth: for >8-bit input, yield uint16 rgb48 images instead of uint8.
        max_frames: stop after this many frames (no damage check then).
        prefetch_frames: if > 0, decode in a background thread up to this many frames ahead
            (overlaps decode and colour conversion with the caller's compute).
        on_damage: "error" or "warn" for truncated / partly undecodable input (module doc).
        damage: filled with the problems and damaged spans found (complete when the iterator
            ends); with on_damage="warn" the caller's way to report them.
        view: deinterlacing and square-pixel resampling (`rmmvideo.video.archive.plan_view`);
            frames then have the view's size and pts in `view.time_base`. None: as stored.
        quantisers: attach the codec's per-macroblock quantisers (`DecodedFrame.qp`; H.264
            only). Off by default: exporting them costs the decoder time (15-20 % for 720p).

    Yields:
        DecodedFrame(index, pts, time, image (H, W, 3), qp).

    Raises:
        UserError: unreadable input, no video, no decodable frame, or damaged input with
            on_damage="error" (raised after the decodable frames were yielded).
    """
    if on_damage not in ON_DAMAGE:
        raise ValueError(f"on_damage must be one of {ON_DAMAGE}, got {on_damage!r}")
    p = Path(path)
    open_input(p).close()  # fail early with a clear message, before any thread starts

    def make() -> Iterator[DecodedFrame]:
        return _decode_sequential(p, high_bit_depth, max_frames, on_damage, damage, view, quantisers)

    if prefetch_frames > 0:
        return prefetch(make, prefetch_frames)
    return make()


# ----------------------------------------------------------------------------- random access


def frame_pts_index(path: str | os.PathLike) -> tuple[np.ndarray, Fraction]:
    """Pts of every video frame in presentation order (by demuxing only, no decoding), and the
    stream time_base. Falls back to decoding when packets carry no pts (raw streams)."""
    p = Path(path)
    with open_input(p) as container:
        vs = video_stream_of(container, p)
        tb = Fraction(vs.time_base) if vs.time_base else Fraction(1, 90000)
        pts: list[int] = []
        missing = False
        try:
            for packet in container.demux(vs):
                if packet.size:
                    if packet.pts is None:
                        missing = True
                        break
                    pts.append(int(packet.pts))
        except av.error.FFmpegError:
            pass
    if missing:
        pts = [d.pts for d in _decode_sequential(p, False, None, "warn")]
    return np.array(sorted(pts), dtype=np.int64), tb


class RandomAccessReader:
    """Frame-accurate random access for preview; keep one open while seeking around a file.

    Frames equal `decode_frames`' frames with the same index and the same `view`. Deinterlaced
    frames are decoded from the stored frame before the window (the deinterlacer reads the
    previous, current and next frames), so they equal the sequential decode's. With a view of
    one frame per field ("field"), indices, `pts` and `time_base` are the fields' (two per stored
    frame: pts 2p and p + p_next in half the stream's time base, as the deinterlacer writes them).
    """

    def __init__(self, path: str | os.PathLike, view: FrameView | None = None, quantisers: bool = False):
        self.view = view
        self.quantisers = quantisers
        self.path = Path(path)
        self._stored, self.time_base = frame_pts_index(self.path)
        if len(self._stored) == 0:
            raise UserError(f"no decodable video frame in {self.path}")
        self.pts = self._stored
        if view is not None and view.deinterlace == "field":
            p = self._stored
            last = int(p[-1] - p[-2]) if len(p) > 1 else 1
            nxt = np.append(p[1:], p[-1] + last)
            self.pts = np.stack([2 * p, p + nxt], 1).ravel()
            self.time_base = self.time_base / 2
        self._open()

    def _open(self) -> None:
        self._container = open_input(self.path)
        self._vs = video_stream_of(self._container, self.path)
        self._vs.thread_type = "AUTO"
        if self.quantisers:
            export_qp(self._vs.codec_context)

    def __len__(self) -> int:
        return len(self.pts)

    def close(self) -> None:
        self._container.close()

    def __enter__(self) -> RandomAccessReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def index_of_time(self, time: float) -> int:
        """Index of the frame shown at `time` seconds (the last frame starting at or before it)."""
        target = time / float(self.time_base)
        i = int(np.searchsorted(self.pts, target + 1e-6, side="right")) - 1
        return min(max(i, 0), len(self.pts) - 1)

    def _check_index(self, index: int) -> int:
        if not 0 <= index < len(self.pts):
            raise UserError(f"frame index {index} out of range 0..{len(self.pts) - 1} in {self.path}")
        return index

    def _pyav_from(self, start: int, count: int, high_bit_depth: bool) -> Iterator[DecodedFrame]:
        """Seek to the keyframe at or before frame `start`, decode forward, yield `count` frames."""
        if self.view is not None and self.view.filters is not None:
            yield from self._deinterlaced(start, count, high_bit_depth)
            return
        first, gen = self._decode_from(start)
        size = self.view.decode_size if self.view is not None else None
        i = start
        f = first
        while True:
            yield decoded_frame(i, int(f.pts), float(f.pts * self.time_base), f, high_bit_depth, size)
            i += 1
            if i >= start + count or i >= len(self.pts):
                return
            f = next(gen, None)
            if f is None:
                return

    def _decode_from(self, index: int) -> tuple[av.VideoFrame, Iterator[av.VideoFrame]]:
        """(stored frame ``index``, the decoder's frames after it). Seeks to the keyframe at or before
        it; where the seek lands after it (an imprecise index; MPEG-TS and MPEG-PS seeks land a
        GOP or more late), seeks again 1, 2, 4 ... 64 s earlier, and past that decodes from the
        start of the file (slow but exact)."""
        target = int(self._stored[index])
        second = 1 / float(self._vs.time_base or Fraction(1, 90000))  # one second in pts units
        first = None
        for back in (0, 1, 2, 4, 8, 16, 32, 64):
            seek_to = target - round(back * second)
            if back and seek_to <= int(self._stored[0]):
                break
            self._container.seek(seek_to, backward=True, any_frame=False, stream=self._vs)
            gen = self._container.decode(self._vs)
            first = next((f for f in gen if f.pts is not None and f.pts >= target), None)
            if first is not None and first.pts == target:
                return first, gen
        self._container.close()
        self._open()
        gen = self._container.decode(self._vs)
        first = next((f for f in gen if f.pts is not None and f.pts >= target), None)
        if first is None or first.pts != target:
            raise UserError(f"cannot seek to frame {index} (pts {target}) in {self.path}")
        return first, gen

    def _deinterlaced(self, start: int, count: int, high_bit_depth: bool) -> Iterator[DecodedFrame]:
        """Frames ``start .. start + count - 1`` (fields with a "field" view) through the view's
        deinterlacer, fed from the stored frame before the first one on, as the sequential
        decode feeds it."""
        assert self.view is not None
        per = len(self.pts) // len(self._stored)  # frames out per stored frame: 1, or 2 fields
        head, gen = self._decode_from(max(0, start // per - 1))
        deint = _Deinterlacer(self._vs, self.view)
        end = min(start + count, len(self.pts))

        def outputs() -> Iterator[av.VideoFrame]:
            yield from deint.push([head])
            for f in gen:
                yield from deint.push([f])
            yield from deint.flush()

        for out in outputs():
            i = int(np.searchsorted(self.pts, out.pts))
            if i >= end:
                return
            if i < start or i >= len(self.pts) or int(self.pts[i]) != out.pts:
                continue
            yield decoded_frame(i, int(out.pts), float(out.pts * self.time_base), out, high_bit_depth,
                                self.view.decode_size)

    def window(self, start_index: int, count: int, *, high_bit_depth: bool = False) -> Iterator[DecodedFrame]:
        """`count` consecutive frames from `start_index` (fewer at the end of the file)."""
        self._check_index(start_index)
        if count <= 0:
            return iter(())
        return self._pyav_from(start_index, count, high_bit_depth)
