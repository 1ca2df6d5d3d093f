"""What the batch runs per file or per segment: the restoration pipeline, or a plain upscale.

Engines:
    "rmm":     face restoration with `rmmvideo.video.pipeline` (analyze once, render segments
               from the shared track table, so tracks crossing a cut keep their look).
    "upscale": decode + resize (bicubic) + encode, no face work. For archives that only need
               scaling, and to exercise the batch machinery quickly. Interlaced and anamorphic
               input is decoded through the same view as "rmm" (deinterlaced, square pixels).

All three entry points write their output through a temp file + rename and return a dict with
"frames", "faces", "tracks".
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import av

from rmmvideo.errors import UserError
from rmmvideo.video.safe_output import atomic_output

if TYPE_CHECKING:
    from rmmvideo.video.archive import FrameView
    from rmmvideo.video.options import RestoreOptions
    from rmmvideo.video.probe import VideoInfo

ENGINES = ("rmm", "upscale")
Progress = Callable[[int], None]  # called with the number of frames written so far


def _check(engine: str) -> None:
    if engine not in ENGINES:
        raise UserError(f"unknown engine {engine!r} (choose from {', '.join(ENGINES)})")


def _worker_options(options: RestoreOptions) -> RestoreOptions:
    """The options a worker renders with: quiet (the coordinator draws the progress)."""
    return dataclasses.replace(options, quiet=True)


# model + detector per worker process, reused by every file and segment it renders
_COMPONENTS: dict[tuple, Any] = {}


def _components(opts: RestoreOptions) -> Any:
    key = (opts.weights, opts.device, opts.detector, opts.models_dir, opts.parser)
    comps = _COMPONENTS.get(key)
    if comps is None:
        _COMPONENTS.clear()  # one set at a time: weights can be large
        from rmmvideo.video.options import build_components

        comps = _COMPONENTS[key] = build_components(opts)
    return comps


def _summary(s: Any) -> dict[str, Any]:
    """The batch record of a `pipeline.RunSummary`."""
    return {"frames": int(s.frames), "faces": int(s.faces), "tracks": int(s.tracks), "damage": s.damage}


# ---------------------------------------------------------------- upscale engine

def upscale_range(
    input_path: str | os.PathLike,
    output: str | os.PathLike,
    options: RestoreOptions,
    start_pts: int | None = None,
    end_pts: int | None = None,
    progress: Progress | None = None,
    audio: bool = False,
) -> dict[str, int]:
    """Decode frames with start_pts <= pts < end_pts, upscale (bicubic), encode with VideoWriter.

    The same decode -> `upscale_images` -> `VideoWriter` path as `transcode_upscale`, but seeking
    to the range's keyframe first. Output keeps the input's pts and time base; with `audio`, the
    input's audio/subtitles are copied (whole file only). Written to a temp file and renamed.
    Of `options` it uses the encode options: scale, device, codec, crf, preset, bit_depth (None:
    8), on_damage, and the archive view: deinterlace and sar, as the "rmm" engine (interlaced
    frames are deinterlaced one frame per frame, anamorphic pixels made square; `--deinterlace
    auto` is decided on the whole input, so every segment is treated alike).
    """
    from rmmvideo.video.io import VideoWriter, probe
    from rmmvideo.video.io_decode import frame_to_rgb
    from rmmvideo.video.probe import video_stream_of
    from rmmvideo.video.upscale import upscale_images

    warn = options.on_damage == "warn"
    bit_depth = options.bit_depth or 8
    info = probe(input_path)
    view = _upscale_view(info, options)
    if view is not None:
        return _upscale_view_range(Path(input_path), Path(output), options, info, view, start_pts, end_pts,
                                   progress, audio)
    n = 0
    bad = 0
    last: int | None = None

    def decoded(ic: av.container.InputContainer, vs: av.video.stream.VideoStream) -> Iterator[av.VideoFrame]:
        """Frames in decode order; an undecodable packet is skipped (warn) or a UserError."""
        nonlocal bad
        for packet in ic.demux(vs):
            try:
                yield from vs.decode(packet)
            except av.error.InvalidDataError:
                if not warn:
                    raise UserError(f"damaged input {input_path}: undecodable packet at pts {packet.pts}") from None
                bad += 1

    with av.open(str(input_path)) as ic, VideoWriter.for_input(
        info, output, options.scale, codec=options.codec, crf=options.crf, preset=options.preset,
        bit_depth=bit_depth, copy_audio=audio, copy_subtitles=audio,
    ) as writer:
        vs = video_stream_of(ic, Path(input_path))
        vs.thread_type = "AUTO"
        if start_pts is not None:
            ic.seek(start_pts, stream=vs, backward=True, any_frame=False)
        for frame in decoded(ic, vs):
            if frame.pts is None or (start_pts is not None and frame.pts < start_pts):
                continue
            if end_pts is not None and frame.pts >= end_pts:
                break
            if last is not None and frame.pts <= last and bad:  # out of order after damage: left out
                continue
            rgb = frame_to_rgb(frame, high_bit_depth=bit_depth > 8)
            writer.write(upscale_images(rgb, options.scale, options.device), frame.pts)
            last = frame.pts
            n += 1
            if progress is not None:
                progress(n)
        if n == 0:
            raise UserError(f"no frames with pts in [{start_pts}, {end_pts}) in {input_path}")
    return {"frames": n, "faces": 0, "tracks": 0, "damage": f"{bad} undecodable packets" if bad else ""}


def _upscale_view(info: VideoInfo, options: RestoreOptions) -> FrameView | None:
    """The decode view of the "upscale" engine (`info` is the whole input's, so "auto" is
    decided on the whole input for every segment), or None when it shows the frames as stored
    (progressive, square pixels: the direct seek-and-decode path)."""
    from rmmvideo.video.archive import plan_view

    view = plan_view(info, options.deinterlace, options.sar)
    return None if view.as_stored else view


def _upscale_view_range(input_path: Path, output: Path, options: RestoreOptions, info: VideoInfo,
                        view: FrameView, start_pts: int | None, end_pts: int | None,
                        progress: Progress | None, audio: bool) -> dict[str, int]:
    """`upscale_range` through a decode view: the frames of [start_pts, end_pts) decoded as the
    "rmm" engine decodes them (from a packet copy that starts at the frame before the range, which
    the deinterlacer reads), upscaled and written in the view's output geometry."""
    from rmmvideo.video.io import VideoWriter, decode_frames
    from rmmvideo.video.io_decode import DamageReport, frame_pts_index
    from rmmvideo.video.upscale import upscale_images

    bit_depth = options.bit_depth or 8
    src = input_path
    if start_pts is not None:
        pts, _ = frame_pts_index(input_path)
        earlier = pts[pts < start_pts]
        copy_from = int(earlier[-1]) if earlier.size else start_pts
        src = segment_source(input_path, output.with_name(f"{output.stem}.source{input_path.suffix.lower()}"),
                             copy_from, end_pts)
    damage = DamageReport()
    n = 0
    try:
        with VideoWriter.for_input(info, output, options.scale, view=view, codec=options.codec, crf=options.crf,
                                   preset=options.preset, bit_depth=bit_depth, copy_audio=audio,
                                   copy_subtitles=audio) as writer:
            frames = decode_frames(src, high_bit_depth=bit_depth > 8, on_damage=options.on_damage, damage=damage,
                                   view=view)
            for f in frames:
                if start_pts is not None and f.pts < start_pts:
                    continue
                if end_pts is not None and f.pts >= end_pts:
                    break
                writer.write(upscale_images(f.image, options.scale, options.device), f.pts)
                n += 1
                if progress is not None:
                    progress(n)
            if n == 0:
                raise UserError(f"no frames with pts in [{start_pts}, {end_pts}) in {input_path}")
    finally:
        if src != input_path:
            src.unlink(missing_ok=True)
    return {"frames": n, "faces": 0, "tracks": 0, "damage": damage.line() if damage else ""}


# ---------------------------------------------------------------- entry points

def check_options(engine: str, options: RestoreOptions) -> None:
    """Validate options in the coordinator before any work (UserError, one line): encoder
    settings, what batch cannot do, and, for "rmm", that the weights file is there and readable.
    (Field values are checked by RestoreOptions itself.)"""
    _check(engine)
    from rmmvideo.video.io_encode import encoder_options

    encoder_options(options.codec, options.crf, options.preset)
    if options.deinterlace == "field":
        raise UserError("--deinterlace field (one frame per field, double rate) is not supported by batch: "
                        "its output checks count one frame per input frame; use auto, frame or off, "
                        "or rmmvideo run")
    if engine == "rmm":
        from rmmvideo.models.weights import read_metadata

        read_metadata(options.weights)


def restore_file(
    engine: str, input_path: Path, output: Path, options: RestoreOptions, progress: Progress | None = None
) -> dict[str, int]:
    """Whole file in one process, audio/subtitles included."""
    _check(engine)
    if engine == "rmm":
        from rmmvideo.video.pipeline import restore_video

        opts = _worker_options(options)
        return _summary(restore_video(input_path, output, opts, components=_components(opts), progress=progress))
    return upscale_range(input_path, output, options, progress=progress, audio=True)


def analyze_file(engine: str, input_path: Path, table_path: Path, options: RestoreOptions) -> dict[str, int]:
    """Pass 1 (sequential, whole file): the track table shared by all segments of the file.

    An existing `table_path` (left by an interrupted run) is reused."""
    _check(engine)
    if engine == "rmm":
        from rmmvideo.video.pipeline import TrackTable, analyze_video

        if table_path.is_file():  # resumed: the table of an earlier run (same input and options)
            table = TrackTable.load(table_path)
        else:
            opts = _worker_options(options)
            table = analyze_video(input_path, opts, components=_components(opts))
            table.save(table_path)  # atomic (temp + rename)
        return {"faces": sum(len(f) for f in table.faces.values()), "tracks": len(table.styles)}
    return {"faces": 0, "tracks": 0}


SOURCE_SUFFIXES = (".mp4", ".m4v", ".mov")  # containers whose timestamps a remux keeps exactly


def _probe_key(path: Path) -> tuple:
    """What the renderer takes from `probe` besides the frames: must match for a segment source."""
    from rmmvideo.video.probe import probe

    i = probe(path)
    return (i.width, i.height, i.rotation, i.time_base, i.average_rate, i.bit_depth, i.pix_fmt, i.is_gray)


def segment_source(input_path: Path, dst: Path, start_pts: int | None, end_pts: int | None) -> Path:
    """A packet copy of the input's video around [start_pts, end_pts), so a segment's render
    decodes its own range instead of everything before it (decode cost O(n) per file, not O(n^2)).
    ``start_pts``: the first frame the render reads (its context before the range included).

    Copies from the keyframe at or before start_pts up to the second keyframe at or after end_pts
    (one spare GOP: open-GOP leading pictures shown before end_pts are decoded after the cut),
    keeping pts/dts and time base exactly (mp4/mov edit lists in the stream's own units).
    Returns `input_path` itself (decode from the start, always correct) when the input is not
    mp4/mov, or when the copy would probe differently (size, rotation, rate, greyness: what the
    renderer reads from `probe`), so the segment renders exactly as in a single pass.
    """
    if start_pts is None or input_path.suffix.lower() not in SOURCE_SUFFIXES:
        return input_path
    from rmmvideo.batch.join import _muxer_options, _video_stream

    with atomic_output(dst, [input_path]) as tmp, av.open(str(input_path)) as ic:
        vs = _video_stream(ic)
        tb = vs.time_base
        ic.seek(start_pts, stream=vs, backward=True, any_frame=False)
        with av.open(str(tmp), "w", options=_muxer_options(tmp, tb)) as oc:
            ov = oc.add_stream_from_template(vs)
            ov.time_base = tb
            keys_after_end = 0
            for pkt in ic.demux(vs):
                if pkt.size == 0:
                    continue
                if end_pts is not None and pkt.is_keyframe and pkt.pts is not None and pkt.pts >= end_pts:
                    keys_after_end += 1
                    if keys_after_end == 2:
                        break
                pkt.stream = ov
                oc.mux(pkt)
    try:
        same = _probe_key(dst) == _probe_key(input_path)
    except UserError:
        same = False
    if not same:
        dst.unlink(missing_ok=True)
        return input_path
    return dst


def render_segment(
    engine: str,
    input_path: Path,
    output: Path,
    options: RestoreOptions,
    table_path: Path | None,
    start_pts: int | None,
    end_pts: int | None,
    progress: Progress | None = None,
) -> dict[str, int]:
    """Pass 2 for one segment: frames start_pts <= pts < end_pts, video only, input pts kept."""
    _check(engine)
    if engine == "rmm":
        from rmmvideo.video.pipeline import TrackTable, context_before, render_video

        if table_path is None:
            raise RuntimeError("segment render without the analysis pass's track table")
        table = TrackTable.load(table_path)
        opts = _worker_options(options)
        if opts.deinterlace == "auto":  # decided on the whole input: a segment copy's first frames could vote otherwise
            from rmmvideo.video.archive import auto_deinterlace

            opts = dataclasses.replace(opts, deinterlace=auto_deinterlace(input_path))
        copy_from, lead = start_pts, context_before(opts)  # the copy holds the context before the range too
        if start_pts is not None and lead:
            earlier = [p for p in sorted(table.faces) if p < start_pts]
            if earlier:
                copy_from = earlier[max(0, len(earlier) - lead)]
        src = segment_source(input_path, output.with_name(f"{output.stem}.source{input_path.suffix.lower()}"),
                             copy_from, end_pts)
        try:
            s = render_video(src, output, opts, table, start_pts=start_pts, end_pts=end_pts, audio=False,
                             components=_components(opts), progress=progress)
        finally:
            if src != input_path:
                src.unlink(missing_ok=True)
        return _summary(s)
    return upscale_range(input_path, output, options, start_pts, end_pts, progress)
