"""Video I/O: the public entry points, and the no-face baseline `transcode_upscale`.

    probe(path) -> VideoInfo                                  (rmmvideo.video.probe)
    decode_frames(path, ...) -> Iterator[DecodedFrame]        (rmmvideo.video.io_decode)
    RandomAccessReader(path).window(start, count)             (rmmvideo.video.io_decode)
    VideoWriter(path, width=, height=, time_base=, ...)       (rmmvideo.video.io_encode)
    transcode_upscale(input, output, scale, ...)              (here)

`transcode_upscale` is decode_frames -> batches of `upscale_images` -> `VideoWriter.write`,
the very calls the face pipeline (`rmmvideo.video.pipeline`) makes, so a benchmark of the two
measures only what face restoration adds.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import numpy as np

from rmmvideo.video.io_decode import (
    DecodedFrame,
    OnDamage,
    RandomAccessReader,
    decode_frames,
    frame_pts_index,
)
from rmmvideo.video.io_encode import VideoWriter, choose_pix_fmt, container_format_for
from rmmvideo.video.probe import VideoInfo, probe
from rmmvideo.video.safe_output import atomic_output, check_output_path, same_file

if TYPE_CHECKING:
    from rmmvideo.video.archive import FrameView

log = logging.getLogger(__name__)

__all__ = [
    "DecodedFrame",
    "RandomAccessReader",
    "TranscodeResult",
    "VideoInfo",
    "VideoWriter",
    "atomic_output",
    "batched",
    "check_output_path",
    "choose_pix_fmt",
    "container_format_for",
    "decode_frames",
    "frame_pts_index",
    "probe",
    "same_file",
    "transcode_upscale",
]


T = TypeVar("T")


def batched(it: Iterable[T], n: int) -> Iterator[list[T]]:
    """Consecutive lists of ``n`` items (the last one shorter) from a stream."""
    batch: list[T] = []
    for x in it:
        batch.append(x)
        if len(batch) == n:
            yield batch
            batch = []
    if batch:
        yield batch


@dataclass(frozen=True)
class TranscodeResult:
    """What `transcode_upscale` wrote, and how fast."""

    output: Path
    frames: int
    width: int
    height: int
    pix_fmt: str
    seconds: float

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else float("inf")


def transcode_upscale(
    input: str | os.PathLike,
    output: str | os.PathLike,
    scale: float = 2.0,
    *,
    codec: str = "libx264",
    crf: int = 18,
    preset: str = "medium",
    bit_depth: int | None = 8,
    device: str = "cpu",
    method: str = "bicubic",
    max_frames: int | None = None,
    batch_size: int = 8,
    prefetch_frames: int = 8,
    on_damage: OnDamage = "error",
    view: FrameView | None = None,
) -> TranscodeResult:
    """Upscale a whole video without touching faces (the baseline the pipeline is measured against).

    Args:
        input, output: file paths; output container from its extension; never onto the input.
        scale: upscale factor; output size is (round(W*s), round(H*s)).
        codec, crf, preset: encoder settings (see VideoWriter).
        bit_depth: 8 or 10; None = 10 for >8-bit input, else 8. 10-bit input is decoded at 16 bits.
        device: torch device for the upscale (`upscale_images`: uint8 bicubic fast path on the
            CPU, float elsewhere); RGB->YUV by swscale in the writer thread.
        method: "bicubic" or "lanczos".
        max_frames: only the first N frames (audio is still copied whole).
        batch_size: frames upscaled together (as the face pipeline renders them).
        prefetch_frames: decode-ahead queue (background thread); 0 = decode inline.
        on_damage: "error" (default) or "warn" for truncated / damaged input.
        view: deinterlacing and square pixels as the face pipeline does them
            (`rmmvideo.video.archive.plan_view`); None: frames as stored.

    Every output frame carries its input frame's pts; audio/subtitles are copied byte for byte.
    """
    from rmmvideo.video.upscale import upscale_images

    info = probe(input)
    if info.hdr:
        log.warning("%s is HDR (PQ/HLG): the output is tagged SDR BT.709 without tone mapping", info.path)
    if bit_depth is None:
        bit_depth = 10 if info.bit_depth > 8 else 8
    deep = bit_depth > 8 and info.bit_depth > 8
    t0 = time.perf_counter()
    frames = decode_frames(
        info.path, high_bit_depth=deep, max_frames=max_frames,
        prefetch_frames=prefetch_frames, on_damage=on_damage, view=view,
    )
    with VideoWriter.for_input(
        info, output, scale, view=view, codec=codec, crf=crf, preset=preset, bit_depth=bit_depth
    ) as writer:
        try:
            for batch in batched(frames, batch_size):
                canvas = upscale_images(np.stack([f.image for f in batch]), scale, device, method)  # type: ignore[arg-type]
                for f, image in zip(batch, canvas):
                    writer.write(image, f.pts)
        finally:
            frames.close()  # stops the decode thread at once if the writer failed
    return TranscodeResult(
        output=writer.path,
        frames=writer.frames_written,
        width=writer.width,
        height=writer.height,
        pix_fmt=writer.pix_fmt,
        seconds=time.perf_counter() - t0,
    )
