"""What a restoration runs with: ``RestoreOptions`` and the ``Components`` built from them.

``RestoreOptions`` holds the options shared by every command (``run``, ``preview``, ``faces``,
``batch``, ``eval-video``; its defaults are the CLI's). ``build_components`` loads what they name
(the weights, the face detector, the optional face parser, the device) once per run; a caller
that restores many files passes the same ``Components`` to each. The driver
(``rmmvideo.video.pipeline``) and the render stage (``rmmvideo.video.render``) both take them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import torch

from rmmvideo.device import pick_device
from rmmvideo.errors import UserError
from rmmvideo.video.io_decode import OnDamage

if TYPE_CHECKING:  # heavy modules, imported lazily at run time
    from rmmvideo.models.artefact import ArtefactCNN
    from rmmvideo.models.rmm import RMM
    from rmmvideo.video.detect import DetectorKind, FaceDetector

Temporal = Literal["track", "frame"]
DeblockMode = Literal["off", "auto", "on"]  # auto: by how coarsely the codec coded each face (H.264 QP)
# --fuse: "auto" (3 frames each side, by how coarsely each face was coded) or N frames (0 = off)
FuseSetting = int | Literal["auto"]
# --strength: "auto", one weight in [0, 1], or (luma, chroma) weights (rmmvideo.video.strength)
StrengthSetting = float | tuple[float, float] | Literal["auto"]


@dataclass
class RestoreOptions:
    """Options shared by ``run``, ``preview``, ``batch`` (defaults = the CLI's defaults)."""

    scale: float = 2.0
    weights: str | None = None  # None = bundled default weights
    device: str = "cpu"
    detector: DetectorKind = "auto"
    models_dir: str | None = None  # face-alignment weights folder (offline installs)
    parser: str | None = None  # face-parsing (BiSeNet) checkpoint; None = landmark mask
    temporal: Temporal = "track"
    fuse: FuseSetting = "auto"  # frames before and after fused into each face's input (rmmvideo.video.fuse)
    deblock: DeblockMode = "auto"  # codec-artefact removal in face regions before fusion (rmmvideo.video.deblock)
    strength: StrengthSetting = "auto"  # restoration weight per track: "auto" or 0..1 (0 = plain upscale)
    seed: int = 0
    detect_every: int = 2
    batch_size: int = 8  # frames per render batch
    codec: str = "libx264"
    crf: int = 18
    preset: str = "medium"
    bit_depth: int | None = None  # None: 10 for >8-bit input, else 8
    threads: int = 0  # torch CPU threads (0 = torch's default)
    quiet: bool = False
    on_damage: OnDamage = "warn"  # damaged input: "warn" (keep every decodable frame, report spans) | "error"
    deinterlace: str = "auto"  # auto | off | frame | field (rmmvideo.video.archive)
    sar: str = "square"  # square | keep: output pixel aspect for anamorphic input

    def __post_init__(self) -> None:
        if self.deinterlace not in ("auto", "off", "frame", "field"):
            raise UserError(f"--deinterlace must be auto, off, frame or field, got {self.deinterlace!r}")
        if self.sar not in ("square", "keep"):
            raise UserError(f"--sar must be 'square' or 'keep', got {self.sar!r}")
        if not self.scale > 0 or self.scale > 16:
            raise UserError(f"--scale must be in (0, 16], got {self.scale}")
        st = self.strength
        weights = st if isinstance(st, (tuple, list)) and len(st) == 2 else (st,)  # (luma, chroma) or one
        if st != "auto" and not all(
                isinstance(v, (int, float)) and not isinstance(v, bool) and 0.0 <= float(v) <= 1.0 for v in weights):
            raise UserError(f"--strength must be 'auto', a number in [0, 1] or (luma, chroma) weights in [0, 1], "
                            f"got {st!r}")
        if self.temporal not in ("track", "frame"):
            raise UserError(f"--temporal must be 'track' or 'frame', got {self.temporal!r}")
        if self.fuse != "auto" and not (isinstance(self.fuse, int) and not isinstance(self.fuse, bool)
                                        and 0 <= self.fuse <= 8):
            raise UserError(f"--fuse must be 'auto' or in 0..8, got {self.fuse!r}")
        if self.deblock not in ("off", "auto", "on"):
            raise UserError(f"--deblock must be off, auto or on, got {self.deblock!r}")
        if self.detect_every < 1:
            raise UserError(f"--detect-every must be >= 1, got {self.detect_every}")
        if self.batch_size < 1:
            raise UserError(f"--batch-size must be >= 1, got {self.batch_size}")
        if self.on_damage not in ("warn", "error"):
            raise UserError(f"on_damage must be 'warn' or 'error', got {self.on_damage!r}")


# ----------------------------------------------------------------------------- components


@dataclass
class Components:
    """What the engine needs, built once per run (or passed in by a caller that reuses them)."""

    model: RMM  # eval mode, on `device`
    detector: FaceDetector | None  # None only where no detection is needed (aligned stills)
    detector_reason: str
    parser: torch.nn.Module | None
    device: torch.device
    artefact_model: ArtefactCNN | None = None  # --deblock's CNN (build_components; else loaded by deblock.deblocker_for)

    @property
    def detector_name(self) -> str:
        return self.detector.name if self.detector is not None else ""


def build_components(options: RestoreOptions, log: Callable[[str], None] | None = None) -> Components:
    """Load the weights, the face detector, the optional parser and (unless ``--deblock off``) the
    codec-artefact model named by ``options``, before any output is opened."""
    from rmmvideo.models.weights import from_pretrained
    from rmmvideo.video.detect import make_detector

    device = pick_device(options.device)
    model = from_pretrained(options.weights, device=device)
    detector, reason = make_detector(options.detector, device=device, models_dir=options.models_dir)
    if log is not None:
        log(f"face detector: {detector.name} ({reason})")
    parser = None
    if options.parser:
        from rmmvideo.models.face_parser import load_face_parser

        parser = load_face_parser(options.parser).to(device).eval()
    artefact_model = None
    if options.deblock != "off":
        from rmmvideo.models.artefact import load_artefact

        artefact_model = load_artefact(None, device)
    return Components(model, detector, reason, parser, device, artefact_model)
