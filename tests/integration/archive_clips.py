"""Synthetic archive clips built from a real square talking-head clip with PyAV (issue 17):
interlaced 576i MPEG-2 in MPEG-TS with MP2 audio (and its progressive twin with AC-3), an
anamorphic 720x480 H.264 clip at SAR 8:9, a PAL DV .avi (SAR 16:15, bottom field first, PCM
audio), and grey / sepia clips with film grain. Imported explicitly by the tests that use them.

Every builder returns the clip's path and the square-pixel *display* frames it was made from
(the reference the restored output is compared with).
"""

from __future__ import annotations

from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from PIL import Image

SOURCE = "talking_512sq_30fps_audio.mp4"


def source_frames(src: Path, n: int) -> list[np.ndarray]:
    """The first `n` frames of `src` as (H, W, 3) uint8 RGB."""
    out = []
    with av.open(str(src)) as c:
        for f in c.decode(video=0):
            out.append(f.to_ndarray(format="rgb24"))
            if len(out) >= n:
                break
    return out


def source_audio(src: Path, seconds: float, rate: int = 48000) -> np.ndarray:
    """The first `seconds` of `src`'s audio as (2, N) int16 at `rate`."""
    resampler = av.AudioResampler(format="s16p", layout="stereo", rate=rate)
    chunks = []
    with av.open(str(src)) as c:
        for f in c.decode(audio=0):
            for g in resampler.resample(f):
                chunks.append(g.to_ndarray())
        for g in resampler.resample(None):
            chunks.append(g.to_ndarray())
    return np.concatenate(chunks, axis=1)[:, : int(seconds * rate)].astype(np.int16)


def resize(img: np.ndarray, w: int, h: int) -> np.ndarray:
    return np.asarray(Image.fromarray(img).resize((w, h), Image.BICUBIC))


def box_resize(img: np.ndarray, w: int, h: int) -> np.ndarray:
    """Area-average resize (back to the source's lines, to measure combing after an upscale)."""
    if img.shape[:2] == (h, w):
        return img
    return np.asarray(Image.fromarray(img).resize((w, h), Image.BOX))


def place(img: np.ndarray, w: int, h: int, fill: int = 16) -> np.ndarray:
    """`img` centred on a (h, w) canvas (offsets rounded down to even rows/columns)."""
    out = np.full((h, w, 3), fill, np.uint8)
    ih, iw = img.shape[:2]
    y, x = (h - ih) // 2 // 2 * 2, (w - iw) // 2 // 2 * 2
    out[y:y + ih, x:x + iw] = img
    return out


def weave(first: np.ndarray, second: np.ndarray, top_first: bool) -> np.ndarray:
    """One interlaced frame: the first field in time from `first`, the second from `second`."""
    out = first.copy()
    rows = slice(1, None, 2) if top_first else slice(0, None, 2)
    out[rows] = second[rows]
    return out


def _encode_audio(out: av.container.OutputContainer, codec: str, samples: np.ndarray, rate: int,
                  sample_format: str) -> list[av.Packet]:
    stream = out.add_stream(codec, rate=rate)
    stream.layout = "stereo"
    stream.format = sample_format
    packets: list[av.Packet] = []
    step = 1152
    for i in range(0, samples.shape[1], step):
        chunk = np.ascontiguousarray(samples[:, i:i + step])
        if sample_format == "s16":
            frame = av.AudioFrame.from_ndarray(chunk.T.reshape(1, -1), format="s16", layout="stereo")
        else:
            frame = av.AudioFrame.from_ndarray((chunk / 32768.0).astype(np.float32), format="fltp", layout="stereo")
        frame.rate = rate
        frame.pts = i
        packets += stream.encode(frame)
    packets += stream.encode(None)
    return packets


def write_video(path: Path, fmt: str | None, codec: str, frames: Sequence[np.ndarray], rate: Fraction,
           sar: Fraction = Fraction(1), interlaced_top: bool | None = None,
           audio: tuple[str, np.ndarray, str] | None = None, bit_rate: int = 12_000_000,
           pix_fmt: str = "yuv420p", crf: int = 12) -> Path:
    h, w = frames[0].shape[:2]
    with av.open(str(path), mode="w", format=fmt) as out:
        vs = out.add_stream(codec, rate=rate)
        vs.width, vs.height, vs.pix_fmt = w, h, pix_fmt
        cc = vs.codec_context
        if sar != 1:
            cc.sample_aspect_ratio = sar
        if codec == "libx264":
            vs.options = {"crf": str(crf), "preset": "ultrafast"}
        elif codec == "mpeg2video":
            vs.bit_rate = bit_rate
            cc.gop_size = 12
            if interlaced_top is not None:
                cc.flags |= av.codec.context.Flags.interlaced_dct | av.codec.context.Flags.interlaced_me
                vs.options = {"top": "1" if interlaced_top else "0"}
        packets: list[av.Packet] = []
        if audio is not None:
            a_codec, samples, a_fmt = audio
            packets = _encode_audio(out, a_codec, samples, 48000, a_fmt)
        for i, img in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            frame.pts = i
            for p in vs.encode(frame):
                out.mux(p)
        for p in vs.encode(None):
            out.mux(p)
        for p in packets:
            out.mux(p)
    return path


def interlaced_576i(src: Path, dst: Path, frames: int = 20) -> tuple[Path, Path, list[np.ndarray]]:
    """(interlaced .ts with MP2 audio, its progressive twin .ts with AC-3 audio, the progressive
    frames). Frame k weaves source frames 2k (top field, first in time) and 2k + 1 (bottom);
    the twin holds source frame 2k whole. 720x576, 15 frames/s (30 fields/s), square pixels."""
    raw = source_frames(src, 2 * frames)
    canvas = [place(f, 720, 576) for f in raw]
    woven = [weave(canvas[2 * k], canvas[2 * k + 1], top_first=True) for k in range(frames)]
    prog = [canvas[2 * k] for k in range(frames)]
    samples = source_audio(src, frames / 15)
    i = write_video(dst / "interlaced_576i.ts", "mpegts", "mpeg2video", woven, Fraction(15),
               interlaced_top=True, audio=("mp2", samples, "s16"))
    p = write_video(dst / "progressive_576p.ts", "mpegts", "mpeg2video", prog, Fraction(15),
               audio=("ac3", samples, "fltp"))
    return i, p, prog


def anamorphic_480(src: Path, dst: Path, frames: int = 24) -> tuple[Path, list[np.ndarray]]:
    """H.264 720x480 at SAR 8:9 (display 640x480, 4:3) with the source's AAC packets copied;
    returns (path, the 640x480 square-pixel display frames)."""
    display = [place(resize(f, 480, 480), 640, 480) for f in source_frames(src, frames)]
    stored = [resize(d, 720, 480) for d in display]
    path = dst / "anamorphic_480_sar8-9.mp4"
    write_video(path, None, "libx264", stored, Fraction(30), sar=Fraction(8, 9))
    _add_source_audio(src, path, frames / 30)
    return path, display


def _add_source_audio(src: Path, path: Path, seconds: float) -> None:
    """Remux `path` with the first `seconds` of `src`'s audio packets copied in."""
    tmp = path.with_name("tmp-" + path.name)
    with av.open(str(path)) as vin, av.open(str(src)) as ain, av.open(str(tmp), "w") as out:
        v = out.add_stream_from_template(vin.streams.video[0])
        a = out.add_stream_from_template(ain.streams.audio[0])
        for p in vin.demux(vin.streams.video[0]):
            if p.size:
                p.stream = v
                out.mux(p)
        for p in ain.demux(ain.streams.audio[0]):
            if p.size and p.pts is not None and float(p.pts * p.time_base) < seconds:
                p.stream = a
                out.mux(p)
    tmp.replace(path)


def dv_pal(src: Path, dst: Path, frames: int = 12) -> tuple[Path, list[np.ndarray]]:
    """PAL DV in .avi: 720x576 at SAR 16:15 (display 768x576), bottom field first (fields from
    consecutive source frames), PCM s16 48 kHz stereo; returns (path, the 768x576 display frames
    of the first field of each frame)."""
    raw = [place(resize(f, 576, 576), 768, 576) for f in source_frames(src, 2 * frames)]
    stored = [resize(d, 720, 576) for d in raw]
    woven = [weave(stored[2 * k], stored[2 * k + 1], top_first=False) for k in range(frames)]
    samples = source_audio(src, frames / 25)
    path = write_video(dst / "dv_pal.avi", "avi", "dvvideo", woven, Fraction(25), sar=Fraction(16, 15),
                  audio=("pcm_s16le", samples, "s16"))
    return path, [raw[2 * k] for k in range(frames)]


def luma(img: np.ndarray) -> np.ndarray:
    x = img.astype(np.float64)
    return 0.299 * x[..., 0] + 0.587 * x[..., 1] + 0.114 * x[..., 2]


def monochrome_grain(src: Path, dst: Path, frames: int = 12, sepia: bool = False) -> tuple[Path, list[np.ndarray]]:
    """A black-and-white film-like clip (luma + monochrome Gaussian grain, sigma 6), optionally
    sepia-toned; H.264 512x512 with the source's audio."""
    rng = np.random.default_rng(17)
    out = []
    for f in source_frames(src, frames):
        y = luma(f) + rng.normal(0.0, 6.0, f.shape[:2])
        if sepia:
            rgb = np.stack([y * 1.0 + 12, y * 0.86 + 8, y * 0.66 + 4], axis=-1)
        else:
            rgb = np.repeat(y[..., None], 3, axis=-1)
        out.append(np.clip(np.round(rgb), 0, 255).astype(np.uint8))
    path = dst / ("sepia_grain.mp4" if sepia else "grey_grain.mp4")
    write_video(path, None, "libx264", out, Fraction(30))
    return path, out


def comb_energy(frames: Sequence[np.ndarray]) -> float:
    """Mean energy of the difference between each even line and the odd line below it (luma),
    over all frames: combing from woven fields raises it."""
    total = 0.0
    for img in frames:
        y = luma(img)
        h = y.shape[0] // 2 * 2
        total += float(np.mean((y[0:h:2] - y[1:h:2]) ** 2))
    return total / len(frames)


def decode_all(path: Path) -> tuple[list[np.ndarray], list[int], Fraction]:
    """(RGB frames, pts, time base) of the video stream of `path`."""
    frames, pts = [], []
    with av.open(str(path)) as c:
        vs = c.streams.video[0]
        for f in c.decode(vs):
            frames.append(f.to_ndarray(format="rgb24"))
            pts.append(int(f.pts))
        return frames, pts, Fraction(vs.time_base)


def audio_packets(path: Path) -> list[bytes]:
    with av.open(str(path)) as c:
        return [bytes(p) for p in c.demux(c.streams.audio[0]) if p.size]


def audio_samples(path: Path) -> np.ndarray:
    with av.open(str(path)) as c:
        return np.concatenate([f.to_ndarray() for f in c.decode(audio=0)], axis=-1)
