"""Small synthetic clips for the batch tests: moving pattern + tone, chosen keyframe spacing."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np


def make_clip(
    path: Path,
    frames: int = 60,
    size: tuple[int, int] = (128, 96),
    fps: int = 25,
    gop: int = 10,
    audio: bool = True,
    preset: str = "medium",
) -> Path:
    """Write an H.264 clip (B-frames with preset medium) with a keyframe every `gop` frames and,
    optionally, an AAC tone covering the same duration. Time base 1/(fps*512)."""
    w, h = size
    tb = Fraction(1, fps * 512)
    with av.open(str(path), "w") as oc:
        vs = oc.add_stream("libx264", rate=fps)
        vs.width, vs.height, vs.pix_fmt = w, h, "yuv420p"
        vs.time_base = tb
        vs.codec_context.time_base = tb
        vs.options = {"preset": preset, "crf": "23", "g": str(gop), "keyint_min": str(gop), "sc_threshold": "0"}
        as_ = None
        if audio:
            as_ = oc.add_stream("aac", rate=48000)
            as_.layout = "mono"
        yy, xx = np.mgrid[0:h, 0:w]
        for i in range(frames):
            img = np.stack([(xx * 2 + i * 5) % 256, (yy * 3 + i * 2) % 256, ((xx + yy) + i * 7) % 256], -1)
            fr = av.VideoFrame.from_ndarray(img.astype(np.uint8), format="rgb24")
            fr.pts, fr.time_base = i * 512, tb
            for p in vs.encode(fr):
                oc.mux(p)
        for p in vs.encode():
            oc.mux(p)
        if as_ is not None:
            n = int(48000 * frames / fps)
            t = np.arange(n) / 48000
            pcm = (0.2 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)[None]
            for k in range(0, n, 1024):
                af = av.AudioFrame.from_ndarray(pcm[:, k : k + 1024], format="fltp", layout="mono")
                af.sample_rate, af.pts = 48000, k
                for p in as_.encode(af):
                    oc.mux(p)
            for p in as_.encode():
                oc.mux(p)
    return path


def decoded(path: Path) -> list[tuple[int, np.ndarray]]:
    """(pts, rgb24 image) of every frame."""
    with av.open(str(path)) as c:
        return [(int(f.pts), f.to_ndarray(format="rgb24")) for f in c.decode(video=0)]


def audio_packets(path: Path) -> list[tuple[int, bytes]]:
    """(pts, payload) of every audio packet of the first audio stream."""
    with av.open(str(path)) as c:
        if not c.streams.audio:
            return []
        return [(int(p.pts), bytes(p)) for p in c.demux(c.streams.audio[0]) if p.size]
