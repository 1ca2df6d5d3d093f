"""Probe a video file: sizes, rotation, timing, bit depth, greyness and other streams.

`probe(path)` is the one place that turns "this is not a usable video" into a one-line
`UserError` (missing, empty, not media, audio-only, no decodable frame). It never trusts the
file extension, and it never relies on the reported frame count (it may be absent or wrong).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from rmmvideo.errors import UserError

# How many leading frames the greyness check looks at (cheap: decoded at 1/4 size).
_GRAY_CHECK_FRAMES = 3
# Max |R-G|, |G-B| (8-bit units) still counted as grey: compressed grey video has +-1..2 chroma noise.
_GRAY_TOLERANCE = 4
# AVColorTransferCharacteristic values of HDR video: 16 = SMPTE ST 2084 (PQ), 18 = ARIB STD-B67 (HLG)
_HDR_TRANSFERS = (16, 18)


@dataclass(frozen=True)
class VideoInfo:
    """What `probe` learned about a file. Sizes are as displayed (after rotation)."""

    path: Path
    width: int
    height: int
    coded_width: int
    coded_height: int
    rotation: int  # counter-clockwise degrees the decoded image is turned to display: 0/90/180/270
    time_base: Fraction
    average_rate: Fraction | None  # informative only: wrong on VFR files; use pts for time
    frame_count: int | None  # as reported by the container; may be None or wrong
    duration: float | None  # seconds
    bit_depth: int  # 8, 10, 12 (bits per component of the coded pixel format)
    pix_fmt: str
    is_gray: bool
    has_audio: bool
    has_subtitles: bool
    codec: str
    start_pts: int  # pts of the first decoded frame (stream time_base)
    colorspace: int  # swscale colourspace used to convert to RGB (1 = BT.709, 5 = BT.601)
    truncated: bool = False  # the container's own index points past the end of the file
    hdr: bool = False  # PQ or HLG transfer: the writer outputs SDR BT.709 (no tone mapping)


def check_input_file(path: str | os.PathLike) -> Path:
    """Return `path` as a Path, or raise UserError if it is missing, not a file, or empty."""
    p = Path(path)
    if not p.exists():
        raise UserError(f"input not found: {p}")
    if not p.is_file():
        raise UserError(f"input is not a file: {p}")
    if p.stat().st_size == 0:
        raise UserError(f"input is empty (0 bytes): {p}")
    return p


def open_input(path: str | os.PathLike) -> av.container.InputContainer:
    """Open a media file for reading; UserError (one line) when FFmpeg cannot read it."""
    p = check_input_file(path)
    try:
        return av.open(str(p), mode="r")
    except (av.error.FFmpegError, UnicodeDecodeError) as e:
        reason = getattr(e, "strerror", None) or str(e)
        raise UserError(
            f"not a readable media file (unknown format, damaged or truncated): {p} ({reason})"
        ) from None


def video_stream_of(container: av.container.InputContainer, path: Path) -> av.video.stream.VideoStream:
    """The first real video stream (cover art / attached pictures do not count)."""
    for s in container.streams.video:
        if not (s.disposition & av.stream.Disposition.attached_pic):
            return s
    kinds = sorted({s.type for s in container.streams})
    what = "audio-only file" if "audio" in kinds else f"streams: {', '.join(kinds) or 'none'}"
    raise UserError(f"no video stream in {path} ({what})")


def bit_depth_of(pix_fmt: str) -> int:
    """Bits per component of a pixel format name, e.g. yuv420p -> 8, yuv420p10le -> 10."""
    try:
        return int(av.VideoFormat(pix_fmt).components[0].bits)
    except (ValueError, IndexError, av.error.FFmpegError):
        return 8


def frame_colorspace(frame: av.VideoFrame) -> int:
    """swscale colourspace to read `frame` with: its tag if set, else BT.601 (FFmpeg's default).

    Untagged input is converted the way the ffmpeg command line does it, so frames here match
    ffmpeg's and decord's RGB.
    """
    cs = int(frame.colorspace)
    return cs if cs in (1, 4, 5, 6, 7, 9, 10) else 5


def normalise_rotation(degrees: int | float) -> int:
    """Counter-clockwise rotation in [-180, 180] (FFmpeg's display matrix) -> 0/90/180/270."""
    return int(round(float(degrees) / 90.0)) % 4 * 90


def index_points_past_end(container: av.container.InputContainer, size: int) -> bool:
    """True if the container's index (mp4 moov, mkv cues) lists data beyond `size` bytes: the
    file was cut short. Cheap: looks at the last index entries of each stream only."""
    for s in container.streams:
        entries = s.index_entries
        n = len(entries)
        for i in range(max(0, n - 64), n):
            e = entries[i]
            if e.pos >= 0 and e.pos + e.size > size:
                return True
    return False


def expected_video_end(vs: av.video.stream.VideoStream) -> float | None:
    """End time (s) the container announces for the video stream (stream duration, or
    Matroska's per-stream DURATION tag), or None when it announces none."""
    tb = Fraction(vs.time_base) if vs.time_base else None
    if vs.duration and tb is not None:
        return float(((vs.start_time or 0) + vs.duration) * tb)
    tag = vs.metadata.get("DURATION") or vs.metadata.get("duration")
    if tag:
        try:
            h, m, sec = tag.split(":")
            return int(h) * 3600 + int(m) * 60 + float(sec)
        except ValueError:
            return None
    return None


def _frame_is_gray(frame: av.VideoFrame) -> bool:
    if frame.format.name.startswith(("gray", "ya")):
        return True
    w = max(2, frame.width // 4)
    h = max(2, frame.height // 4)
    rgb = frame.to_ndarray(width=w, height=h, format="rgb24").astype(np.int16)
    return bool(
        np.abs(rgb[..., 0] - rgb[..., 1]).max() <= _GRAY_TOLERANCE
        and np.abs(rgb[..., 1] - rgb[..., 2]).max() <= _GRAY_TOLERANCE
    )


def probe(path: str | os.PathLike) -> VideoInfo:
    """Read a file's video properties, decoding only its first few frames.

    Raises UserError (one line) for: missing file, empty file, data FFmpeg cannot read,
    a file with no video stream (e.g. audio-only), a video stream with no decodable frame.
    """
    p = check_input_file(path)
    with open_input(p) as container:
        vs = video_stream_of(container, p)
        vs.thread_type = "AUTO"
        frames: list[av.VideoFrame] = []
        try:
            for frame in container.decode(vs):
                frames.append(frame)
                if len(frames) >= _GRAY_CHECK_FRAMES:
                    break
        except av.error.FFmpegError:
            pass  # judged below: no frame at all is the user-facing error
        if not frames:
            raise UserError(f"no decodable video frame in {p}")
        first = frames[0]
        rotation = normalise_rotation(first.rotation)
        cw, ch = first.width, first.height
        w, h = (ch, cw) if rotation in (90, 270) else (cw, ch)
        pix_fmt = first.format.name
        tb = Fraction(vs.time_base) if vs.time_base else Fraction(1, 90000)
        if vs.duration:
            duration: float | None = float(vs.duration * tb)
        elif container.duration:
            duration = container.duration / 1_000_000
        else:
            duration = None
        return VideoInfo(
            path=p,
            width=w,
            height=h,
            coded_width=cw,
            coded_height=ch,
            rotation=rotation,
            time_base=tb,
            average_rate=Fraction(vs.average_rate) if vs.average_rate else None,
            frame_count=int(vs.frames) if vs.frames else None,
            duration=duration,
            bit_depth=bit_depth_of(pix_fmt),
            pix_fmt=pix_fmt,
            is_gray=all(_frame_is_gray(f) for f in frames),
            has_audio=len(container.streams.audio) > 0,
            has_subtitles=len(container.streams.subtitles) > 0,
            codec=vs.codec_context.name,
            start_pts=int(first.pts) if first.pts is not None else 0,
            colorspace=frame_colorspace(first),
            truncated=index_points_past_end(container, p.stat().st_size),
            hdr=int(first.color_trc) in _HDR_TRANSFERS,
        )
