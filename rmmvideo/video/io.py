"""Video I/O: the public entry points, and the no-face baseline `transcode_upscale`.

    probe(path) -> VideoInfo                                  (rmmvideo.video.probe)
    decode_frames(path, ...) -> Iterator[DecodedFrame]        (rmmvideo.video.io_decode)
    read_frame_at / read_window / RandomAccessReader          (rmmvideo.video.io_decode)
    VideoWriter(path, width=, height=, time_base=, ...)       (rmmvideo.video.io_encode)
    transcode_upscale(input, output, scale, ...)              (here)

`transcode_upscale` is decode -> `upscale` -> `VideoWriter`, the very functions the face
pipeline uses, so a benchmark of the two measures only what face restoration adds.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rmmvideo.video.io_decode import (
    DecodedFrame,
    OnDamage,
    RandomAccessReader,
    decode_frames,
    frame_pts_index,
    read_frame_at,
    read_window,
)
from rmmvideo.video.io_encode import VideoWriter, choose_pix_fmt, container_format_for
from rmmvideo.video.probe import VideoInfo, probe
from rmmvideo.video.safe_output import atomic_output, check_output_path, same_file

__all__ = [
    "DecodedFrame",
    "RandomAccessReader",
    "TranscodeResult",
    "VideoInfo",
    "VideoWriter",
    "atomic_output",
    "check_output_path",
    "choose_pix_fmt",
    "container_format_for",
    "decode_frames",
    "frame_pts_index",
    "probe",
    "read_frame_at",
    "read_window",
    "same_file",
    "transcode_upscale",
]


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
    prefetch_frames: int = 4,
    on_damage: OnDamage = "error",
) -> TranscodeResult:
    """Upscale a whole video without touching faces (the baseline the pipeline is measured against).

    Args:
        input, output: file paths; output container from its extension; never onto the input.
        scale: upscale factor; output size is (round(W*s), round(H*s)).
        codec, crf, preset: encoder settings (see VideoWriter).
        bit_depth: 8 or 10; None = 10 for >8-bit input, else 8. 10-bit input is decoded at 16 bits.
        device: torch device for the upscale. CPU: uint8 bicubic fast path, swscale RGB->YUV in
            the writer thread. Other devices: float upscale and RGB->YUV on the device.
        method: "bicubic" or "lanczos".
        max_frames: only the first N frames (audio is still copied whole).
        prefetch_frames: decode-ahead queue (background thread); 0 = decode inline.
        on_damage: "error" (default) or "warn" for truncated / damaged input.

    Every output frame carries its input frame's pts; audio/subtitles are copied byte for byte.
    """
    import torch

    from rmmvideo.video.upscale import images_to_tensor, upscale, upscale_images

    info = probe(input)
    if bit_depth is None:
        bit_depth = 10 if info.bit_depth > 8 else 8
    deep = bit_depth > 8 and info.bit_depth > 8
    t0 = time.perf_counter()
    frames = decode_frames(
        info.path, high_bit_depth=deep, max_frames=max_frames,
        prefetch_frames=prefetch_frames, on_damage=on_damage,
    )
    with VideoWriter.for_input(
        info, output, scale, codec=codec, crf=crf, preset=preset, bit_depth=bit_depth
    ) as writer:
        on_cpu = torch.device(device).type == "cpu"
        try:
            for f in frames:
                with torch.inference_mode():
                    if on_cpu and method == "bicubic" and f.image.dtype == np.uint8:
                        # uint8 kernel on a channels-last view; its (3, H, W) result goes to
                        # swscale as planar RGB (no interleaving copy), converted in the writer thread
                        x = torch.from_numpy(f.image).permute(2, 0, 1)[None]
                        writer.write_chw(upscale(x, scale, "bicubic")[0].numpy(), f.pts)
                    elif on_cpu:
                        writer.write(upscale_images(f.image, scale, device, method), f.pts)  # type: ignore[arg-type]
                    else:  # upscale and convert to YUV on the device, copy back 4:2:0 planes
                        x = upscale(images_to_tensor(f.image, device), scale, method)  # type: ignore[arg-type]
                        writer.write_tensor(x[0], f.pts)
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
