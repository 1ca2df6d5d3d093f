"""Encode RGB frames to a video file, keeping the input's timestamps and remuxing its audio.

`VideoWriter` writes a temporary file beside the target and renames it on success only
(see `safe_output`). Every frame is written with the pts the caller gives (the input frame's
pts) in the output stream's time_base, which is set to the input's: the output has exactly the
input's frames and timestamps (mp4/mov keep the time_base; Matroska always stores 1/1000 s, so
there pts are rescaled to milliseconds). Audio and subtitle packets of `source` are copied
byte for byte (`add_stream_from_template`), interleaved with the video by time.

Audio the output container cannot hold (found by a dry run: a few of its packets muxed into
memory, e.g. DV's pcm_s16le in .mp4) is re-encoded losslessly instead: FLAC in .mp4/.mkv, PCM
in .mov (sample-identical to the decoded source). `audio_notes` says what was done per stream.

Sample aspect ratio: `sar` tags the stream (e.g. 8/9 for NTSC 4:3). `input_size` lets `write`
take images of another size (square pixels) that swscale resamples to width x height in the
same call that converts them to YUV (`--sar keep`).

Pixel formats (`choose_pix_fmt`):
    libx264 / libx265: yuv420p (8-bit) or yuv420p10le (10-bit). H.264/HEVC 4:2:0 cannot code an
        odd width or height (the crop unit is 2 pixels), so an odd output size switches to
        yuv444p / yuv444p10le (High 4:4:4 / Main 4:4:4): the size stays exactly scale x input,
        at the cost of player support (browsers may refuse 4:4:4).
    prores (prores_ks, profile HQ): yuv422p10le (any size).  ffv1: yuv444p / yuv444p10le.
Colour: RGB is converted with the BT.709 matrix, limited range, and the stream is tagged
BT.709 (primaries, transfer, matrix). Grey RGB (R=G=B) gives chroma exactly 128 (512 at 10
bits), so a grey input stays grey; nothing is tinted.
"""

from __future__ import annotations

import io
import logging
import os
import queue
import threading
from collections.abc import Iterable, Iterator
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING

import av
import numpy as np

from rmmvideo.errors import UserError, check_not_terminated
from rmmvideo.video.safe_output import AtomicOutput, check_output_path, output_error

if TYPE_CHECKING:
    from rmmvideo.video.archive import FrameView
    from rmmvideo.video.probe import VideoInfo

CONTAINERS = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska"}
CODECS = {"libx264": "libx264", "h264": "libx264", "libx265": "libx265", "hevc": "libx265",
          "prores": "prores_ks", "prores_ks": "prores_ks", "ffv1": "ffv1"}
X26X_PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow",
                "slower", "veryslow", "placebo")
_BT709 = 1
_MUXER_TAGS = {"major_brand", "minor_version", "compatible_brands", "encoder"}  # the new muxer writes its own
_LIMITED = 1  # ColorRange.MPEG
_DRY_RUN_PACKETS = 8  # packets of a source stream muxed into memory to test that it can be copied

log = logging.getLogger(__name__)


def container_format_for(path: str | os.PathLike) -> str:
    """FFmpeg muxer name for an output file name (by extension: .mp4 .m4v .mov .mkv)."""
    ext = Path(path).suffix.lower()
    if ext not in CONTAINERS:
        raise UserError(f"unsupported output extension '{ext or '(none)'}': use one of {', '.join(CONTAINERS)}")
    return CONTAINERS[ext]


def normalise_codec(codec: str) -> str:
    """User codec name -> FFmpeg encoder name (libx264, libx265, prores_ks, ffv1)."""
    try:
        return CODECS[codec.lower()]
    except KeyError:
        raise UserError(f"unsupported codec '{codec}': use libx264, libx265, prores or ffv1") from None


def choose_pix_fmt(codec: str, bit_depth: int, width: int, height: int) -> str:
    """Output pixel format for an encoder, bit depth (8 or 10) and frame size (module doc)."""
    codec = normalise_codec(codec)
    if bit_depth not in (8, 10):
        raise UserError(f"unsupported output bit depth {bit_depth}: use 8 or 10")
    deep = "10le" if bit_depth == 10 else ""
    if codec == "prores_ks":
        return "yuv422p10le"
    if codec == "ffv1":
        return f"yuv444p{deep}"
    odd = width % 2 == 1 or height % 2 == 1
    return f"yuv444p{deep}" if odd else f"yuv420p{deep}"


def encoder_options(codec: str, crf: int, preset: str) -> dict[str, str]:
    """Encoder private options for a codec (crf/preset for x264/x265, profile for ProRes)."""
    codec = normalise_codec(codec)
    if codec in ("libx264", "libx265"):
        if not 0 <= crf <= 51:
            raise UserError(f"crf must be in 0..51, got {crf}")
        if preset not in X26X_PRESETS:
            raise UserError(f"unknown preset '{preset}': use one of {', '.join(X26X_PRESETS)}")
        opts = {"crf": str(crf), "preset": preset}
        if codec == "libx265":
            opts["x265-params"] = "log-level=error"
        return opts
    if codec == "prores_ks":
        return {"profile": "3", "vendor": "apl0"}  # 3 = HQ
    return {"level": "3", "slicecrc": "1", "g": "1"}  # ffv1


_END = object()


def can_copy_stream(source: str | os.PathLike, index: int, fmt: str) -> bool:
    """True when stream `index` of `source` can be copied packet for packet into a `fmt` file:
    its first packets are muxed into memory, header and trailer included (some codecs pass the
    header and fail at the trailer, e.g. pcm_s16le in mp4)."""
    buf = io.BytesIO()
    try:
        with av.open(os.fspath(source)) as src:
            stream = src.streams[index]
            out = av.open(buf, mode="w", format=fmt)
            try:
                ost = out.add_stream_from_template(stream)
                out.start_encoding()
                n = 0
                for p in src.demux(stream):
                    if p.size:
                        p.stream = ost
                        out.mux(p)
                        n += 1
                        if n >= _DRY_RUN_PACKETS:
                            break
            finally:
                out.close()
    except (ValueError, av.error.FFmpegError):
        return False
    return True


def lossless_audio_codec(fmt: str, sample_format: str) -> tuple[str, str]:
    """(encoder, sample format) to re-encode decoded audio of `sample_format` losslessly into a
    `fmt` container: FLAC (16/32-bit integer) in mp4/matroska, PCM in mov and for float samples."""
    base = sample_format.rstrip("p")
    if base in ("u8", "s16"):
        return ("pcm_s16le" if fmt == "mov" else "flac"), "s16"
    if base == "s32":
        return ("pcm_s32le" if fmt == "mov" else "flac"), "s32"
    if fmt in ("mov", "matroska"):
        return ("pcm_f64le" if base == "dbl" else "pcm_f32le"), ("dbl" if base == "dbl" else "flt")
    raise UserError(f"audio with {sample_format} samples cannot be stored losslessly in an .mp4 file: use .mkv or .mov")


class VideoWriter:
    """Encode frames to `path`; a context manager that commits on success, discards on error.

    Example:
        info = probe("in.mp4")
        with VideoWriter.for_input(info, "out.mp4", scale=2) as w:
            for f in decode_frames("in.mp4"):
                w.write(upscaled(f.image), f.pts)

    Args:
        path: output file; the container comes from its extension (.mp4/.m4v/.mov/.mkv).
        width, height: output frame size (the size of every image passed to `write`).
        time_base: the input video stream's time_base; pts passed to `write` are in it.
        rate: nominal frame rate (a hint for rate control; VFR timing comes from pts).
        codec: libx264 (default), libx265, prores, ffv1.
        crf, preset: x264/x265 quality and speed (ignored by prores/ffv1).
        bit_depth: 8 or 10 (10: yuv420p10le etc.); images may be uint8 or uint16 (rgb48).
        pix_fmt: override `choose_pix_fmt`.
        source: input file whose audio and subtitle streams are copied; also protected from
            being overwritten (UserError if `path` is the same file).
        protect: more paths the output must not overwrite.
        copy_audio, copy_subtitles: which stream types to copy from `source`.
        background: convert RGB->YUV, encode and mux in a worker thread fed by a bounded queue
            of `queue_size` frames, overlapping with the caller's compute.
        threads: swscale threads for the RGB->YUV conversion (0 = automatic).
        sar: sample aspect ratio the stream is tagged with (1 = square pixels).
        input_size: (width, height) of the images `write` takes when it differs from
            the encoded size (resampled by swscale, bicubic); None = width x height.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        width: int,
        height: int,
        time_base: Fraction,
        rate: Fraction | None = None,
        codec: str = "libx264",
        crf: int = 18,
        preset: str = "medium",
        bit_depth: int = 8,
        pix_fmt: str | None = None,
        source: str | os.PathLike | None = None,
        protect: Iterable[str | os.PathLike] = (),
        copy_audio: bool = True,
        copy_subtitles: bool = True,
        background: bool = True,
        queue_size: int = 4,
        threads: int = 0,
        sar: Fraction = Fraction(1),
        input_size: tuple[int, int] | None = None,
    ) -> None:
        if width <= 0 or height <= 0:
            raise ValueError(f"output size must be positive, got {width}x{height}")
        if Fraction(sar) <= 0:
            raise ValueError(f"sample aspect ratio must be positive, got {sar}")
        self.sar = Fraction(sar)
        self.input_width, self.input_height = input_size if input_size is not None else (int(width), int(height))
        self.audio_notes: list[str] = []
        self._audio_encoders: dict[int, tuple[av.audio.stream.AudioStream, av.audio.stream.AudioStream]] = {}
        self.codec = normalise_codec(codec)
        protected = [p for p in [source, *protect] if p is not None]
        check_output_path(path, protected)  # a folder or a missing folder before the extension
        self.format = container_format_for(path)
        self.width, self.height = int(width), int(height)
        self.time_base = Fraction(time_base)
        self.bit_depth = bit_depth
        self.pix_fmt = pix_fmt or choose_pix_fmt(self.codec, bit_depth, width, height)
        self.threads = threads
        self.frames_written = 0
        self._last_pts: int | None = None
        options = encoder_options(self.codec, crf, preset)
        self._atomic = AtomicOutput(path, inputs=protected)
        self.path = self._atomic.target
        self._src: av.container.InputContainer | None = None
        self._out: av.container.OutputContainer | None = None
        self._src_packets: Iterator[av.Packet] | None = None
        self._pending: av.Packet | None = None
        self._stream_map: dict[int, av.stream.Stream] = {}
        self._error: BaseException | None = None
        self._queue: queue.Queue | None = None
        self._worker: threading.Thread | None = None
        self._closed = False
        try:
            self._open(rate, options, source, copy_audio, copy_subtitles)
            if background:
                self._queue = queue.Queue(maxsize=max(1, queue_size))
                self._worker = threading.Thread(target=self._work, name="rmmvideo-encode", daemon=True)
                self._worker.start()
        except BaseException as e:  # a signal while starting the worker included
            self.abort()
            err = self._atomic.translate(e)
            if err is e:
                raise
            raise err from None

    @classmethod
    def for_input(
        cls, info: VideoInfo, path: str | os.PathLike, scale: float = 1.0,
        view: FrameView | None = None, **kwargs: object
    ) -> VideoWriter:
        """A writer for `info`'s video upscaled by `scale`: size round(W*s) x round(H*s), the
        input's time_base and rate, its audio/subtitles copied, the input protected.

        With a decode `view` (`rmmvideo.video.archive.plan_view`): frames of the view's size
        (square pixels) scaled, pts in the view's time base (half the input's for one frame per
        field), and the output geometry of its SAR mode (square pixels, or the input's SAR)."""
        from rmmvideo.video.upscale import scaled_size

        kwargs.setdefault("source", info.path)
        if view is None:
            h, w = scaled_size(info.height, info.width, scale)
            kwargs.setdefault("rate", info.average_rate)
            return cls(path, width=w, height=h, time_base=info.time_base, **kwargs)  # type: ignore[arg-type]
        w, h, sar = view.output_geometry(info, scale)
        ih, iw = scaled_size(view.height, view.width, scale)
        kwargs.setdefault("rate", view.rate)
        return cls(path, width=w, height=h, time_base=view.time_base, sar=sar,  # type: ignore[arg-type]
                   input_size=None if (iw, ih) == (w, h) else (iw, ih), **kwargs)

    # ------------------------------------------------------------------ setup and teardown

    def _open(self, rate, options, source, copy_audio, copy_subtitles) -> None:  # noqa: ANN001
        # mp4/mov: edit lists in the video's own time units; the default (1/1000 s) rounds a
        # non-zero start pts (1001 in 1/30000 read back as 990).
        muxer = {"movie_timescale": str(self.time_base.denominator)} if self.format in ("mp4", "mov") else {}
        out = av.open(str(self._atomic.temp), mode="w", format=self.format, options=muxer)
        self._out = out
        try:
            vs = out.add_stream(self.codec, rate=rate if rate else None)
        except ValueError as e:
            raise UserError(f"codec {self.codec} cannot be stored in {self.path.suffix} files ({e}); try .mov or .mkv") from None
        vs.width, vs.height = self.width, self.height
        vs.pix_fmt = self.pix_fmt
        vs.time_base = self.time_base
        cc = vs.codec_context
        cc.time_base = self.time_base
        cc.colorspace = _BT709
        cc.color_primaries = _BT709
        cc.color_trc = _BT709
        cc.color_range = _LIMITED
        if self.sar != 1:
            cc.sample_aspect_ratio = self.sar
        vs.options = options
        self._vs = vs
        if source is not None:
            from rmmvideo.video.probe import open_input

            self._src = open_input(source)
            out.metadata.update({k: v for k, v in self._src.metadata.items() if k.lower() not in _MUXER_TAGS})
            copied = []
            for s in self._src.streams:
                if s.type == "audio" and copy_audio and not can_copy_stream(source, s.index, self.format):
                    self._add_lossless_audio(out, s)
                    copied.append(s)
                    continue
                if (s.type == "audio" and copy_audio) or (s.type == "subtitle" and copy_subtitles):
                    if s.type == "audio":
                        self.audio_notes.append(f"audio #{s.index} ({s.codec_context.name}): copied packet for packet")
                    try:
                        ost = out.add_stream_from_template(s)
                        self._stream_map[s.index] = ost
                        ost.metadata.update(s.metadata)  # language, title, handler name
                        ost.disposition = s.disposition  # default / forced flags
                    except (ValueError, av.error.FFmpegError) as e:
                        raise UserError(
                            f"cannot copy {s.type} stream #{s.index} ({s.codec_context.name}) into a "
                            f"{self.path.suffix} file ({e}); try .mkv"
                        ) from None
                    copied.append(s)
            if copied:
                self._src_packets = self._source_packets(copied)
                self._pending = next(self._src_packets, None)
            for note in self.audio_notes:
                log.info("%s: %s", self.path.name, note)
        try:
            out.start_encoding()
        except OSError as e:  # the output file is created here: permissions, read-only, full disk
            if e.errno is None:
                raise UserError(f"cannot start writing {self.path} with {self.codec}/{self.pix_fmt} ({e})") from None
            raise output_error(e, self.path) from None
        except (ValueError, av.error.FFmpegError) as e:
            if f'avcodec_open2("{self.codec}"' in str(e):  # the video encoder refused its settings
                raise UserError(
                    f"the {self.codec} encoder cannot encode {self.width}x{self.height} {self.pix_fmt} for {self.path} "
                    f"({type(e).__name__}); a smaller --scale may help (libx264 and libx265: at most 16384 px "
                    "wide, and level limits on the frame area)") from None
            hint = "; the copied audio/subtitle streams may not fit this container: try .mkv" if self._stream_map else ""
            raise UserError(f"cannot start writing {self.path.name} with {self.codec}/{self.pix_fmt} ({e}){hint}") from None

    def _add_lossless_audio(self, out: av.container.OutputContainer, s: av.audio.stream.AudioStream) -> None:
        """An output stream that re-encodes source audio stream `s` losslessly (module doc)."""
        cc = s.codec_context
        codec, sample_format = lossless_audio_codec(self.format, cc.format.name if cc.format else "s16")
        try:
            ost = out.add_stream(codec, rate=cc.sample_rate)
            ost.layout = cc.layout
            ost.format = sample_format
            ost.time_base = Fraction(1, cc.sample_rate)
        except (ValueError, av.error.FFmpegError) as e:
            raise UserError(f"cannot store audio stream #{s.index} ({cc.name}) in a {self.path.suffix} "
                            f"file, nor re-encode it as {codec} ({e}); try .mkv") from None
        ost.metadata.update(s.metadata)
        ost.disposition = s.disposition
        self._audio_encoders[s.index] = (s, ost)
        self.audio_notes.append(
            f"audio #{s.index} ({cc.name}) cannot be copied into {self.path.suffix}: "
            f"re-encoded losslessly as {codec}")

    def _source_packets(self, streams: list[av.stream.Stream]) -> Iterator[av.Packet]:
        """Packets for the output, in the source's order: copied ones (still in the source's
        time base; `_copy_source_until` assigns their stream), and re-encoded audio."""
        for p in self._src.demux(*streams):
            enc = self._audio_encoders.get(p.stream.index)
            if enc is None:
                if p.size:
                    yield p
                continue
            src, ost = enc
            try:
                frames = src.decode(p if p.size else None)
            except av.error.InvalidDataError:
                continue  # a damaged audio packet: the video decoder reports damage
            for frame in frames:
                yield from self._encode_audio(ost, frame)
        for src, ost in self._audio_encoders.values():
            yield from self._encode_audio(ost, None)

    @staticmethod
    def _encode_audio(ost: av.audio.stream.AudioStream, frame: av.AudioFrame | None) -> Iterator[av.Packet]:
        if frame is not None and frame.pts is not None and frame.time_base is not None:
            frame.pts = round(Fraction(frame.pts) * Fraction(frame.time_base) / ost.time_base)
            frame.time_base = ost.time_base
        yield from ost.encode(frame)

    def _teardown(self) -> None:
        for c in (self._out, self._src):
            if c is not None:
                try:
                    c.close()
                except Exception:  # noqa: BLE001 - already failing; the temp file is removed next
                    pass
        self._out = self._src = None
        self._atomic.discard()

    # ------------------------------------------------------------------ writing

    def write(self, image: np.ndarray, pts: int) -> None:
        """Queue one RGB frame `image` (H, W, 3) uint8 or uint16 (rgb48) at `pts` (input time_base).

        Converted to YUV by swscale (threaded) in the worker. pts must increase strictly.
        Raises the worker's error if encoding failed, and ``Terminated`` if a termination signal
        came whose first raise was swallowed (``errors.check_not_terminated``)."""
        check_not_terminated()
        if image.shape != (self.input_height, self.input_width, 3) or image.dtype not in (np.uint8, np.uint16):
            raise ValueError(
                f"expected image (H, W, 3) = ({self.input_height}, {self.input_width}, 3) uint8/uint16, "
                f"got {image.shape} {image.dtype}"
            )
        self._submit(image, pts)

    def _submit(self, image: np.ndarray, pts: int) -> None:
        if self._closed:
            raise RuntimeError("write on a closed VideoWriter")
        pts = int(pts)
        if self._last_pts is not None and pts <= self._last_pts:
            raise ValueError(f"pts must increase: {pts} after {self._last_pts}")
        self._last_pts = pts
        if self._queue is None:
            self._encode(image, pts)
            return
        while True:
            self._raise_worker_error()
            try:
                self._queue.put((image, pts), timeout=0.1)
                return
            except queue.Full:
                continue

    def _raise_worker_error(self) -> None:
        if self._error is not None:
            err = self._atomic.translate(self._error)  # e.g. ENOSPC while muxing: name the user's path
            if err is self._error:
                raise err
            raise err from None

    def _work(self) -> None:
        assert self._queue is not None
        while True:
            item = self._queue.get()
            if item is _END:
                return
            if self._error is not None:
                continue  # drain so producers never block on a dead worker
            try:
                self._encode(*item)
            except BaseException as e:  # noqa: BLE001 - re-raised in the caller's thread
                self._error = e

    def _to_frame(self, image: np.ndarray) -> av.VideoFrame:
        fmt = "rgb24" if image.dtype == np.uint8 else "rgb48le"
        # zero-copy wrap; `image` stays alive until reformat has made the YUV copy
        frame = av.VideoFrame.from_numpy_buffer(np.ascontiguousarray(image), format=fmt)
        resize = {"width": self.width, "height": self.height, "interpolation": "BICUBIC"} if self._resamples else {}
        return frame.reformat(
            format=self.pix_fmt, dst_colorspace=_BT709, dst_color_range=_LIMITED, threads=self.threads, **resize
        )

    @property
    def _resamples(self) -> bool:
        """Images arrive at another size than the encoded one (see `input_size`)."""
        return (self.input_width, self.input_height) != (self.width, self.height)

    def _encode(self, image: np.ndarray, pts: int) -> None:
        frame = self._to_frame(image)
        frame.pts = pts
        frame.time_base = self.time_base
        for packet in self._vs.encode(frame):
            self._mux_video(packet)
        self.frames_written += 1

    def _mux_video(self, packet: av.Packet) -> None:
        t = packet.dts if packet.dts is not None else packet.pts
        if t is not None:
            self._copy_source_until(float(t * self.time_base))
        self._out.mux(packet)

    def _copy_source_until(self, seconds: float | None) -> None:
        """Mux copied audio/subtitle packets up to `seconds` (all of them if None)."""
        while self._pending is not None:
            p = self._pending
            t = p.dts if p.dts is not None else p.pts
            if seconds is not None and t is not None and float(t * p.time_base) > seconds:
                return
            if p.stream.container is self._src:
                p.stream = self._stream_map[p.stream.index]
            self._out.mux(p)
            self._pending = next(self._src_packets, None)

    # ------------------------------------------------------------------ finishing

    def close(self) -> Path:
        """Flush the encoder, copy the remaining audio, close the file and move it into place."""
        if self._closed:
            return self.path
        try:
            self._stop_worker()
            self._raise_worker_error()
            if self.frames_written == 0:
                raise UserError(f"no frames were written to {self.path}")
            for packet in self._vs.encode(None):
                self._mux_video(packet)
            self._copy_source_until(None)
            self._out.close()
            self._out = None
            if self._src is not None:
                self._src.close()
                self._src = None
            self._atomic.commit()
        except BaseException as e:
            self.abort()
            err = self._atomic.translate(e)
            if err is e:
                raise
            raise err from None
        self._closed = True
        return self.path

    def abort(self) -> None:
        """Stop, close everything and delete the temporary file; the target is not touched."""
        if self._worker is not None and self._worker.is_alive():
            self._error = self._error or RuntimeError("aborted")
        self._stop_worker()
        self._teardown()
        self._closed = True

    def _stop_worker(self) -> None:
        if self._worker is None:
            return
        assert self._queue is not None
        while self._worker.is_alive():
            try:
                self._queue.put(_END, timeout=0.1)
                break
            except queue.Full:
                continue
        if self._worker.ident is not None:  # started (a signal may stop start() half way)
            self._worker.join()
        self._worker = None

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:  # noqa: ANN001
        if exc_type is None:
            self.close()
        else:
            self.abort()
