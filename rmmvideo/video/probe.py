"""Probe a video file: sizes, rotation, timing, bit depth, greyness, interlacing flags, sample
aspect ratio, colour tags and other streams.

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
# A tinted monochrome frame (sepia, cyanotype, a faded B&W scan): its chroma is a function of
# luma. Max 99th-percentile deviation (8-bit units) of chroma from the median chroma of its
# luma band, and the largest chroma still called a tint rather than colour.
_TINT_RESIDUAL = 6.0
_TINT_MAX_CHROMA = 96.0
# AVFieldOrder -> name (tt/bb: top/bottom field coded and shown first; tb/bt: coded one way,
# shown the other)
FIELD_ORDERS = {0: "unknown", 1: "progressive", 2: "tt", 3: "bb", 4: "tb", 5: "bt"}
COLOR_RANGES = {1: "tv", 2: "pc"}
COLOR_MATRICES = {0: "rgb", 1: "bt709", 4: "fcc", 5: "bt470bg", 6: "smpte170m", 7: "smpte240m",
                  8: "ycgco", 9: "bt2020nc", 10: "bt2020c"}


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
    field_order: str = "unknown"  # stream flag: progressive | tt | bb | tb | bt | unknown
    interlaced_frames: bool = False  # the first decoded frames are flagged interlaced
    sar: Fraction = Fraction(1)  # sample (pixel) aspect ratio; 1 when the file gives none
    color_range: str = "unknown"  # tv (limited) | pc (full) | unknown (read as tv)
    color_matrix: str = "unknown"  # bt709, bt470bg, smpte170m, ... | unknown (read as BT.601)
    tinted: bool = False  # is_gray because monochrome with a tint (sepia etc.), not neutral grey

    @property
    def display_aspect(self) -> Fraction:
        """Display aspect ratio width/height (upright): the stored size times the SAR."""
        if self.rotation in (90, 270):
            return Fraction(self.width, 1) / (self.height * self.sar)
        return self.width * self.sar / self.height


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


def monochrome_kind(rgb: np.ndarray) -> str:
    """"grey", "tinted" or "colour" for an RGB image (H, W, 3) uint8.

    grey: |R-G| and |G-B| within a few levels everywhere (codec chroma noise).
    tinted: chroma (B-Y, R-Y) is a function of luma: within each band of 16 luma levels it
        stays within a few levels of the band's median (99th percentile), and it is small
        (a tint, not colour). Covers sepia or blue-toned prints and faded B&W scans with grain.
    """
    x = rgb.astype(np.float32)
    if (np.abs(x[..., 0] - x[..., 1]).max() <= _GRAY_TOLERANCE
            and np.abs(x[..., 1] - x[..., 2]).max() <= _GRAY_TOLERANCE):
        return "grey"
    y = 0.299 * x[..., 0] + 0.587 * x[..., 1] + 0.114 * x[..., 2]
    chroma = np.stack([x[..., 2] - y, x[..., 0] - y], -1).reshape(-1, 2)
    if np.percentile(np.abs(chroma), 99) > _TINT_MAX_CHROMA:
        return "colour"
    band = np.clip(y.reshape(-1) // 16, 0, 15).astype(np.int64)
    residual = np.zeros_like(chroma)
    for b in np.unique(band):
        sel = band == b
        residual[sel] = chroma[sel] - np.median(chroma[sel], axis=0)
    return "tinted" if np.percentile(np.abs(residual), 99) <= _TINT_RESIDUAL else "colour"


def _frame_monochrome(frame: av.VideoFrame) -> str:
    if frame.format.name.startswith(("gray", "ya")):
        return "grey"
    w = max(2, frame.width // 4)
    h = max(2, frame.height // 4)
    return monochrome_kind(frame.to_ndarray(width=w, height=h, format="rgb24"))


def _name(table: dict[int, str], value: object) -> str:
    try:
        return table.get(int(value), "unknown")  # type: ignore[call-overload]
    except (TypeError, ValueError):
        return "unknown"


# above this a stream's average rate is a container artefact, not a frame rate (raw DV has
# reported 60000 for 25 frames/s: the mp4 muxer then refuses the file at its trailer)
_MAX_RATE = 1000


def _nominal_rate(vs: av.video.stream.VideoStream) -> Fraction | None:
    """The stream's average frame rate, else its guessed rate, when plausible (<= 1000/s)."""
    for rate in (vs.average_rate, vs.guessed_rate):
        if rate and 0 < rate <= _MAX_RATE:
            return Fraction(rate)
    return None


def _sample_aspect(vs: av.video.stream.VideoStream) -> Fraction:
    """The stream's SAR (container first, then the codec's), 1 when absent or invalid."""
    for sar in (vs.sample_aspect_ratio, vs.codec_context.sample_aspect_ratio):
        if sar is not None and sar.numerator > 0 and sar.denominator > 0:
            return Fraction(sar)
    return Fraction(1)


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
        kinds = [_frame_monochrome(f) for f in frames]
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
            average_rate=_nominal_rate(vs),
            frame_count=int(vs.frames) if vs.frames else None,
            duration=duration,
            bit_depth=bit_depth_of(pix_fmt),
            pix_fmt=pix_fmt,
            is_gray=all(k != "colour" for k in kinds),
            has_audio=len(container.streams.audio) > 0,
            has_subtitles=len(container.streams.subtitles) > 0,
            codec=vs.codec_context.name,
            start_pts=int(first.pts) if first.pts is not None else 0,
            colorspace=frame_colorspace(first),
            truncated=index_points_past_end(container, p.stat().st_size),
            hdr=int(first.color_trc) in _HDR_TRANSFERS,
            field_order=_name(FIELD_ORDERS, vs.codec_context.field_order),
            interlaced_frames=any(f.interlaced_frame for f in frames),
            sar=_sample_aspect(vs),
            color_range=_name(COLOR_RANGES, first.color_range),
            color_matrix=_name(COLOR_MATRICES, first.colorspace),
            tinted="tinted" in kinds and "colour" not in kinds,
        )
