"""Shared fixtures: the ../shared/data folder, and small synthetic clips made with PyAV."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def pytest_configure(config: pytest.Config) -> None:
    """Idle OpenMP threads sleep instead of spinning: with several processes on 2 cores, spinning
    threads made torch work many times slower. Runs before any test module is collected, so
    before torch loads its OpenMP runtime (which reads the variable once)."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The shared data folder beside the checkout (skips the test when it is absent)."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data folder not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def shared_videos(shared_data: Path) -> list[Path]:
    """The real clips in ../shared/data/videos (skips when there are none)."""
    clips = sorted((shared_data / "videos").glob("*.mp4"))
    if not clips:
        pytest.skip(f"no clips in {shared_data / 'videos'}")
    return clips


def load_pipeline(name: str):
    """The module of ``pipelines/NAME.py`` (scripts, not a package), loaded from its file."""
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "pipelines" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def synthetic_image(index: int, width: int, height: int, gray: bool = False, seed: int = 0) -> np.ndarray:
    """A smooth, moving, colourful test pattern (H, W, 3) uint8 for frame `index`.

    Smooth content keeps lossy codecs close to the source, so tests can compare pixels."""
    rng = np.random.default_rng(seed)
    fy, fx, phase = rng.uniform(0.4, 1.0), rng.uniform(0.4, 1.0), rng.uniform(0, 2 * np.pi, 3)
    y = np.linspace(0, 1, height)[:, None]
    x = np.linspace(0, 1, width)[None, :]
    t = index * 0.15
    chans = [
        0.5 + 0.45 * np.sin(2 * np.pi * (fx * x + 0.3 * y) + phase[c] + t + c)
        * np.cos(2 * np.pi * fy * y + 0.5 * c)
        for c in range(3)
    ]
    img = np.stack(chans, axis=-1)
    if gray:
        img = np.repeat(img.mean(axis=-1, keepdims=True), 3, axis=-1)
    return np.clip(np.round(img * 255), 0, 255).astype(np.uint8)


def write_clip(
    path: Path,
    *,
    width: int = 64,
    height: int = 48,
    frames: int = 6,
    codec: str = "libx264",
    pix_fmt: str = "yuv420p",
    time_base: Fraction = Fraction(1, 90000),
    rate: int = 30,
    pts: Sequence[int] | None = None,
    audio: bool = False,
    subtitles: bool = False,
    video: bool = True,
    rotation: int = 0,
    gray: bool = False,
    seed: int = 0,
    color_trc: int = 1,
    options: dict[str, str] | None = None,
    container_options: dict[str, str] | None = None,
) -> Path:
    """Write a small clip with PyAV; returns `path`.

    pts: explicit video pts in `time_base` (VFR); default is a constant `rate`.
    audio: add a 1 kHz AAC tone (44.1 kHz stereo) as long as the video.
    subtitles: add a text subtitle stream with two cues (mov_text in mp4/mov, subrip otherwise).
    video=False makes an audio-only file. rotation: display-matrix rotation (counter-clockwise
    degrees as FFmpeg reports it; the stored frames are not rotated).
    options: extra encoder options (e.g. {"g": "10"}); container_options: muxer options
    (e.g. {"movflags": "faststart"} puts the mp4 index first).
    """
    import av

    if pts is None:
        step = int(round(1 / (rate * time_base)))
        pts = [i * step for i in range(frames)]
    duration = float((pts[-1] + (pts[-1] - pts[-2] if len(pts) > 1 else 1 / (rate * time_base))) * time_base)
    with av.open(str(path), mode="w", options=container_options or {}) as out:
        vs = None
        if video:
            vs = out.add_stream(codec, rate=rate)
            vs.width, vs.height, vs.pix_fmt = width, height, pix_fmt
            vs.time_base = time_base
            vs.codec_context.time_base = time_base
            cc = vs.codec_context  # frames are converted with BT.709 below: say so in the stream
            cc.colorspace = cc.color_primaries = 1
            cc.color_trc = color_trc  # 1 = BT.709; 16 = PQ, 18 = HLG tag an HDR clip
            cc.color_range = 1
            if codec in ("libx264", "libx265"):
                vs.options = {"crf": "12", "preset": "ultrafast"} | (
                    {"x265-params": "log-level=error"} if codec == "libx265" else {}
                )
            if options:
                vs.options = dict(vs.options) | options
            if rotation:
                vs.set_display_rotation(rotation)
        aus = None
        if audio or not video:
            aus = out.add_stream("aac", rate=44100)
            aus.layout = "stereo"
        if subtitles:
            mp4_like = path.suffix.lower() in (".mp4", ".m4v", ".mov")
            ss = out.add_mux_stream("mov_text" if mp4_like else "subrip", time_base=Fraction(1, 1000))
            for k, text in enumerate([b"Hello", b"World"]):
                payload = len(text).to_bytes(2, "big") + text if mp4_like else text
                cue = av.Packet(payload)
                cue.stream = ss
                cue.pts = cue.dts = int(k * duration * 500)
                cue.duration = int(duration * 400)
                cue.time_base = Fraction(1, 1000)
                out.mux(cue)
        src_fmt = "rgb24"
        for i, p in enumerate(pts if video else []):
            img = synthetic_image(i, width, height, gray=gray, seed=seed)
            frame = av.VideoFrame.from_ndarray(img, format=src_fmt)
            frame = frame.reformat(format=pix_fmt, dst_colorspace=1, dst_color_range=1)
            frame.pts = int(p)
            frame.time_base = time_base
            for packet in vs.encode(frame):
                out.mux(packet)
        if vs is not None:
            for packet in vs.encode(None):
                out.mux(packet)
        if aus is not None:
            n = int(duration * 44100)
            t = np.arange(n) / 44100
            tone = (0.2 * np.sin(2 * np.pi * 1000 * t)).astype(np.float32)
            for start in range(0, n, 1024):
                chunk = tone[start : start + 1024]
                planar = np.stack([chunk, chunk])  # fltp: (channels, samples)
                af = av.AudioFrame.from_ndarray(planar, format="fltp", layout="stereo")
                af.sample_rate = 44100
                af.pts = start
                af.time_base = Fraction(1, 44100)
                for packet in aus.encode(af):
                    out.mux(packet)
            for packet in aus.encode(None):
                out.mux(packet)
    return path


@pytest.fixture
def make_clip(tmp_path: Path) -> Callable[..., Path]:
    """Factory: make_clip("name.mp4", **write_clip options) -> a clip in tmp_path."""

    def make(name: str = "clip.mp4", **kwargs: object) -> Path:
        return write_clip(tmp_path / name, **kwargs)  # type: ignore[arg-type]

    return make


@pytest.fixture(scope="session")
def tiny_weights(tmp_path_factory) -> Path:
    """A tiny random RMM (32 px crops) in the small model's template geometry, with a few memory
    slots written so slot pinning is exercised; saved with ``save_pretrained``. Fast pipeline
    tests use it: what they test is the pipeline, not restoration quality."""
    import torch

    from rmmvideo.config import ModelConfig
    from rmmvideo.models.rmm import RMM
    from rmmvideo.models.weights import save_pretrained

    repo = Path(__file__).resolve().parents[1]
    small = ModelConfig.from_yaml(repo / "configs/models/rmm-small.yaml")
    cfg = ModelConfig(name="tiny", size=32, unet_channels=(8, 16, 16), decoder_channels=(16, 16, 8),
                      z_n_dim=16, mapping_layers=2, mapping_dim=16, wavelet_levels=2, memory_size=8,
                      key_dim=16, key_width=8, template=small.template, template_name=small.template_name)
    torch.manual_seed(0)
    model = RMM(cfg).eval()
    g = torch.Generator().manual_seed(1)
    for _ in range(4):  # a few distinct (key, value) pairs
        q = torch.nn.functional.normalize(torch.randn(1, cfg.key_dim, generator=g), dim=1)
        model.update_memory(q, torch.rand(1, cfg.z_w_dim, generator=g) * 0.3)
    path = tmp_path_factory.mktemp("tiny_weights") / "tiny.safetensors"
    save_pretrained(model, path)
    return path
