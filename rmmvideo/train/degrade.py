"""The paper's degradation model (eq. 16), one seeded module for training, evaluation and
test-clip synthesis::

    X_LR = ((X_HR ⊛ {k_G, k_M})↓r + n_σ)_JPEG_q

Primary type: a torch tensor ``(3, H, W)`` float in [0, 1] (what the trainer and the evaluator
use). ``degrade``/``degrade_tb``/``degrade_td`` also accept a numpy ``(H, W, 3)`` image (float in
[0, 1] or uint8) and then return a numpy ``(h, w, 3)`` float32 image.

Steps, each randomly on or off per image (``DegradationConfig`` gives the probabilities):

1. optional grayscale (old film): luminance (BT.601) copied to the 3 channels;
2. blur with a Gaussian kernel (σ in [1, 5] px) or a motion kernel (a line of random length and
   angle), or no blur;
3. downsampling by r in [2, 12] (bicubic with antialiasing, output side ``round(H / r)``);
4. additive Gaussian noise, σ in [1, 15] on the 0-255 scale (one noise map shared by the 3
   channels when grayscale);
5. JPEG compression with Pillow, quality in [40, 80].

Video stages (issue 12; all off in the paper's default config, so its draws are unchanged), at
the low resolution, between steps 3 and 5 in this order:

- film grain (``grain_prob``): monochrome Gaussian grain, spatially correlated (Gaussian of
  ``grain_size`` px), σ ``grain_sigma`` on 0-255;
- (step 4, noise)
- 4:2:0 chroma subsampling (``chroma_prob``): BT.601 YCbCr, Cb/Cr averaged over 2x2 blocks and
  bilinearly upsampled back (luma untouched);
- a video codec (``codec_prob``): H.264 (libx264, CRF ``h264_crf``), MPEG-2 or MPEG-4 part 2
  (constant quantiser ``mpeg_q``), encoded and decoded in memory with PyAV on a short synthetic
  clip: ``codec_frames - 1`` copies of the image shifted by random sub-pixel offsets (up to
  ``codec_shift`` px) and then the image itself, whose decoded frame is kept, so inter-frame
  prediction artefacts appear as well as 8x8 blocking, ringing and the codec's own 4:2:0.

``clean_prob`` is the share of samples that get only the downsampling (and grayscale when
drawn); ``gaussian_sigma`` may start at 0 (σ 0: no blur), so nearly clean samples appear too.
``DegradationMixture`` draws each sample from one of several configs (e.g. the paper's and a
video one), and ``degradation_from_dict`` reads either from a train config.

Pixel sizes (σ, motion length) are in pixels of the input ``hq`` image, as in the paper (512
crops). The model input is the LQ image resized back to the crop size: ``resize_to(lq, size)``.

Determinism: ``sample_params(rng, cfg)`` draws every parameter (and a noise seed) from the numpy
``Generator`` in a fixed order, and ``apply_params`` is a pure function of the image and the
parameters, so the same seed gives the same output on any device. For a video clip, draw the
parameters once and give each frame its own ``noise_seed`` (``dataclasses.replace``) so the
degradation is stable over time while the noise is not frozen.

Example::

    rng = np.random.default_rng(0)
    lq = degrade(hq, rng, DegradationConfig())        # (3, h, w), low resolution
    x_lq = resize_to(lq, hq.shape[-1])                 # (3, S, S), model input
"""

from __future__ import annotations

import io
import math
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from rmmvideo.config import reject_unknown_keys
from rmmvideo.errors import UserError
from rmmvideo.video.quantiser import QPMap, export_qp, qp_map

if TYPE_CHECKING:
    import av

Img = TypeVar("Img", torch.Tensor, np.ndarray)
BlurKind = Literal["none", "gaussian", "motion"]

_LUMA = (0.299, 0.587, 0.114)


@dataclass(frozen=True)
class DegradationConfig:
    """Ranges and probabilities of the random degradation (defaults: the paper's ranges).

    Ranges are closed intervals ``(low, high)``; ``scale`` is the downsampling factor r.
    ``motion_prob`` is the share of *blurred* images that get a motion kernel instead of a
    Gaussian one. ``grayscale_prob`` makes the LQ grayscale (old film).
    """

    blur_prob: float = 0.8
    motion_prob: float = 0.3
    gaussian_sigma: tuple[float, float] = (1.0, 5.0)
    motion_length: tuple[int, int] = (3, 21)
    scale: tuple[float, float] = (2.0, 12.0)
    noise_prob: float = 0.8
    noise_sigma: tuple[float, float] = (1.0, 15.0)
    jpeg_prob: float = 0.8
    jpeg_quality: tuple[int, int] = (40, 80)
    grayscale_prob: float = 0.0
    # video stages (see the module docstring); all off by default
    clean_prob: float = 0.0
    grain_prob: float = 0.0
    grain_sigma: tuple[float, float] = (2.0, 8.0)
    grain_size: tuple[float, float] = (0.4, 1.2)
    chroma_prob: float = 0.0
    codec_prob: float = 0.0
    codecs: tuple[str, ...] = ("h264", "mpeg2", "mpeg4")
    h264_crf: tuple[int, int] = (20, 38)
    mpeg_q: tuple[int, int] = (2, 16)
    codec_frames: tuple[int, int] = (2, 5)
    codec_shift: float = 0.75

    def __post_init__(self) -> None:
        probs = ("blur_prob", "motion_prob", "noise_prob", "jpeg_prob", "grayscale_prob", "clean_prob",
                 "grain_prob", "chroma_prob", "codec_prob")
        for name in probs:
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise UserError(f"degradation: {name} must be in [0, 1], got {v}")
        ranges = ("gaussian_sigma", "motion_length", "scale", "noise_sigma", "jpeg_quality", "grain_sigma",
                  "grain_size", "h264_crf", "mpeg_q", "codec_frames")
        for name in ranges:
            lo, hi = getattr(self, name)
            if lo > hi:
                raise UserError(f"degradation: {name} range ({lo}, {hi}) has low > high")
        if self.gaussian_sigma[0] < 0 or self.motion_length[0] < 1:
            raise UserError("degradation: blur sizes must be >= 0 (sigma) and >= 1 (motion length)")
        if self.scale[0] < 1:
            raise UserError(f"degradation: scale must be >= 1, got {self.scale}")
        if self.noise_sigma[0] < 0:
            raise UserError("degradation: noise_sigma must be >= 0")
        if not (1 <= self.jpeg_quality[0] and self.jpeg_quality[1] <= 100):
            raise UserError(f"degradation: jpeg_quality must be in [1, 100], got {self.jpeg_quality}")
        if not self.codecs or any(c not in CODECS for c in self.codecs):
            raise UserError(f"degradation: codecs must be a non-empty list of {sorted(CODECS)}, got {list(self.codecs)}")
        if not (0 <= self.h264_crf[0] and self.h264_crf[1] <= 51):
            raise UserError(f"degradation: h264_crf must be in [0, 51], got {self.h264_crf}")
        if not (1 <= self.mpeg_q[0] and self.mpeg_q[1] <= 31):
            raise UserError(f"degradation: mpeg_q must be in [1, 31], got {self.mpeg_q}")
        if self.codec_frames[0] < 1 or self.codec_shift < 0 or self.grain_sigma[0] < 0 or self.grain_size[0] < 0:
            raise UserError("degradation: codec_frames must be >= 1; codec_shift, grain_sigma, grain_size >= 0")

    @classmethod
    def tb(cls, scale: float, grayscale_prob: float = 0.0) -> "DegradationConfig":
        """The paper's "-TB" test protocol at a fixed scale: blur (Gaussian or motion), noise and
        JPEG always on, downsampling fixed to ``scale``."""
        return cls(blur_prob=1.0, noise_prob=1.0, jpeg_prob=1.0, scale=(float(scale), float(scale)),
                   grayscale_prob=grayscale_prob)

    @classmethod
    def mild(cls, scale: float) -> "DegradationConfig":
        """The "mild" test protocol: Gaussian blur σ 0-1.5 (at the HQ size), downsampling by
        ``scale``, then noise σ 1-8 and JPEG quality 50-90 at the low resolution, all always on."""
        return cls(blur_prob=1.0, motion_prob=0.0, gaussian_sigma=(0.0, 1.5), scale=(float(scale), float(scale)),
                   noise_prob=1.0, noise_sigma=(1.0, 8.0), jpeg_prob=1.0, jpeg_quality=(50, 90))

    @classmethod
    def video(cls, scale: float) -> "DegradationConfig":
        """The "video" test protocol: Gaussian blur σ 0-1.5, downsampling by ``scale``, noise
        σ 1-4, then H.264 (CRF 23-35, a 3-frame clip with sub-pixel shifts; 4:2:0), no JPEG."""
        return cls(blur_prob=1.0, motion_prob=0.0, gaussian_sigma=(0.0, 1.5), scale=(float(scale), float(scale)),
                   noise_prob=1.0, noise_sigma=(1.0, 4.0), jpeg_prob=0.0, codec_prob=1.0, codecs=("h264",),
                   h264_crf=(23, 35), codec_frames=(3, 3))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "DegradationConfig":
        """Build from a YAML/JSON mapping (lists become tuples); unknown keys are an error."""
        reject_unknown_keys(cls, d, "degradation")
        kw = {k: tuple(v) if isinstance(v, (list, tuple)) else v for k, v in d.items()}
        return cls(**kw)

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


@dataclass(frozen=True)
class DegradationParams:
    """One concrete draw of the degradation. ``noise_sigma`` is on 0-255 (0: no noise);
    ``jpeg_quality`` None: no JPEG; ``noise_seed`` seeds the noise map."""

    grayscale: bool
    blur: BlurKind
    sigma: float
    motion_length: int
    motion_angle: float
    scale: float
    noise_sigma: float
    jpeg_quality: int | None
    noise_seed: int
    grain_sigma: float = 0.0
    grain_size: float = 0.0
    chroma420: bool = False
    codec: str | None = None
    codec_quality: int = 0
    codec_frames: int = 1
    codec_shift: float = 0.0
    stage_seed: int = 0


CODECS = ("h264", "mpeg2", "mpeg4")
"""Codec names of the codec stage: libx264 (CRF), mpeg2video and mpeg4 (constant quantiser)."""


@dataclass(frozen=True)
class DegradationMixture:
    """Each sample is degraded by one of ``components``, drawn with probability proportional to
    ``weights`` (e.g. the paper's degradation, a video one and a mild/clean one)."""

    components: tuple[DegradationConfig, ...]
    weights: tuple[float, ...]

    def __post_init__(self) -> None:
        if not self.components or len(self.components) != len(self.weights):
            raise UserError("degradation mixture: needs one weight per component and at least one component")
        if any(w < 0 for w in self.weights) or sum(self.weights) <= 0:
            raise UserError(f"degradation mixture: weights must be >= 0 with a positive sum, got {self.weights}")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "DegradationMixture":
        """``{"mixture": [{"weight": w, **DegradationConfig keys}, ...]}``."""
        items = d.get("mixture")
        if set(d) != {"mixture"} or not isinstance(items, list):
            raise UserError("degradation: a mixture is {mixture: [{weight: w, ...}, ...]} and nothing else")
        comps, weights = [], []
        for item in items:
            if not isinstance(item, dict) or "weight" not in item:
                raise UserError("degradation mixture: every component needs a weight")
            rest = {k: v for k, v in item.items() if k != "weight"}
            comps.append(DegradationConfig.from_dict(rest))
            weights.append(float(item["weight"]))
        return cls(tuple(comps), tuple(weights))

    def to_dict(self) -> dict[str, Any]:
        return {"mixture": [{"weight": w, **c.to_dict()} for c, w in zip(self.components, self.weights)]}


AnyDegradation = DegradationConfig | DegradationMixture


def degradation_from_dict(d: dict[str, Any]) -> AnyDegradation:
    """A train config's ``degradation`` mapping: a mixture when it has a ``mixture`` key, else
    one ``DegradationConfig`` (missing keys: the paper's defaults)."""
    return DegradationMixture.from_dict(d) if "mixture" in d else DegradationConfig.from_dict(d)


def sample_params(rng: np.random.Generator, cfg: AnyDegradation) -> DegradationParams:
    """Draw one set of parameters. Always consumes the same number of draws from ``rng`` for a
    given config (a mixture draws its component first). The video stages' draws come after the
    paper's, so a config without them gives the same paper parameters as before they existed."""
    if isinstance(cfg, DegradationMixture):
        w = np.asarray(cfg.weights, dtype=np.float64)
        k = int(np.searchsorted(np.cumsum(w / w.sum()), rng.random(), side="right"))
        return sample_params(rng, cfg.components[min(k, len(cfg.components) - 1)])
    u = rng.random(5)  # grayscale, blur on, motion vs gaussian, noise on, jpeg on
    sigma = float(rng.uniform(*cfg.gaussian_sigma))
    length = int(rng.integers(cfg.motion_length[0], cfg.motion_length[1] + 1))
    angle = float(rng.uniform(0.0, 180.0))
    scale = float(rng.uniform(*cfg.scale))
    noise = float(rng.uniform(*cfg.noise_sigma))
    quality = int(rng.integers(cfg.jpeg_quality[0], cfg.jpeg_quality[1] + 1))
    noise_seed = int(rng.integers(0, 2**62))
    v = rng.random(5)  # clean, grain on, chroma on, codec on, which codec
    grain_sigma = float(rng.uniform(*cfg.grain_sigma))
    grain_size = float(rng.uniform(*cfg.grain_size))
    crf = int(rng.integers(cfg.h264_crf[0], cfg.h264_crf[1] + 1))
    mpeg_q = int(rng.integers(cfg.mpeg_q[0], cfg.mpeg_q[1] + 1))
    frames = int(rng.integers(cfg.codec_frames[0], cfg.codec_frames[1] + 1))
    stage_seed = int(rng.integers(0, 2**62))
    clean = bool(v[0] < cfg.clean_prob)
    blur: BlurKind = "none"
    if u[1] < cfg.blur_prob and not clean:
        blur = "motion" if u[2] < cfg.motion_prob else "gaussian"
    codec = cfg.codecs[min(int(v[4] * len(cfg.codecs)), len(cfg.codecs) - 1)]
    codec_on = v[3] < cfg.codec_prob and not clean
    return DegradationParams(
        grayscale=bool(u[0] < cfg.grayscale_prob),
        blur=blur,
        sigma=sigma,
        motion_length=length,
        motion_angle=angle,
        scale=scale,
        noise_sigma=noise if u[3] < cfg.noise_prob and not clean else 0.0,
        jpeg_quality=quality if u[4] < cfg.jpeg_prob and not clean else None,
        noise_seed=noise_seed,
        grain_sigma=grain_sigma if v[1] < cfg.grain_prob and not clean else 0.0,
        grain_size=grain_size,
        chroma420=bool(v[2] < cfg.chroma_prob and not clean),
        codec=codec if codec_on else None,
        codec_quality=(crf if codec == "h264" else mpeg_q) if codec_on else 0,
        codec_frames=frames,
        codec_shift=cfg.codec_shift,
        stage_seed=stage_seed,
    )


# ----------------------------------------------------------------------------- kernels


def gaussian_kernel1d(sigma: float) -> torch.Tensor:
    """Normalised 1-D Gaussian ``(k,)``, k = 2*ceil(3σ)+1, float32."""
    r = max(1, math.ceil(3.0 * sigma))
    x = torch.arange(-r, r + 1, dtype=torch.float64)
    g = torch.exp(-(x**2) / (2.0 * sigma**2))
    return (g / g.sum()).float()


def gaussian_kernel(sigma: float) -> torch.Tensor:
    """Normalised 2-D Gaussian kernel ``(k, k)`` (outer product of ``gaussian_kernel1d``)."""
    g = gaussian_kernel1d(sigma)
    return torch.outer(g, g)


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of ``(C, H, W)`` with replicate padding (same as ``_filter`` with
    ``gaussian_kernel(sigma)``, faster for large σ)."""
    g = gaussian_kernel1d(sigma).to(device=x.device, dtype=x.dtype)
    p, c = g.numel() // 2, x.shape[0]
    y = F.pad(x[None], (p, p, p, p), mode="replicate")
    y = F.conv2d(y, g.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(y, g.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)[0]


def motion_kernel(length: int, angle_deg: float) -> torch.Tensor:
    """Normalised linear motion kernel ``(k, k)``: a segment of ``length`` px through the centre
    at ``angle_deg`` (0 = horizontal), rasterised with bilinear splatting; k is odd."""
    k = length + 1 + (length % 2)  # odd, >= length + 1
    c = (k - 1) / 2.0
    ker = np.zeros((k, k), dtype=np.float64)
    a = math.radians(angle_deg)
    n = max(2, 4 * length)
    for t in np.linspace(-(length - 1) / 2.0, (length - 1) / 2.0, n):
        x, y = c + t * math.cos(a), c - t * math.sin(a)
        x0, y0 = int(math.floor(x)), int(math.floor(y))
        fx, fy = x - x0, y - y0
        for dy, wy in ((0, 1 - fy), (1, fy)):
            for dx, wx in ((0, 1 - fx), (1, fx)):
                if 0 <= y0 + dy < k and 0 <= x0 + dx < k:
                    ker[y0 + dy, x0 + dx] += wx * wy
    return torch.from_numpy(ker / ker.sum()).float()


def _filter(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Depthwise 2-D filter of ``x`` (C, H, W) with replicate padding."""
    k = kernel.to(x.dtype)
    p = k.shape[-1] // 2
    c = x.shape[0]
    y = F.pad(x[None], (p, p, p, p), mode="replicate")
    return F.conv2d(y, k.expand(c, 1, *k.shape), groups=c)[0]


# ----------------------------------------------------------------------------- operations


def to_grayscale(x: torch.Tensor) -> torch.Tensor:
    """BT.601 luminance copied to 3 channels: ``(3, H, W) -> (3, H, W)`` (also ``(B, 3, H, W)``)."""
    w = torch.tensor(_LUMA, dtype=x.dtype, device=x.device).view(3, 1, 1)
    y = (x * w).sum(dim=-3, keepdim=True)
    return y.expand_as(x).contiguous()


def resize_to(x: torch.Tensor, size: int | tuple[int, int]) -> torch.Tensor:
    """Bicubic resize (antialiased when shrinking) of ``(3, h, w)`` or ``(B, 3, h, w)`` to
    ``size`` (int: square), clamped to [0, 1]. Used to bring an LQ image back to the model size."""
    hw = (size, size) if isinstance(size, int) else tuple(size)
    batched = x.dim() == 4
    y = x if batched else x[None]
    if tuple(y.shape[-2:]) != hw:
        y = F.interpolate(y, size=hw, mode="bicubic", align_corners=False, antialias=True)
    y = y.clamp(0.0, 1.0)
    return y if batched else y[0]


def downsample(x: torch.Tensor, scale: float) -> torch.Tensor:
    """Bicubic antialiased downsampling by ``scale``: side ``max(1, round(H / scale))``."""
    h, w = x.shape[-2:]
    return resize_to(x, (max(1, round(h / scale)), max(1, round(w / scale))))


def jpeg(x: torch.Tensor, quality: int, grayscale: bool = False) -> torch.Tensor:
    """JPEG round trip through Pillow of ``(3, H, W)`` in [0, 1] at ``quality``."""
    arr = (x.detach().clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255.0 + 0.5).astype(np.uint8)
    img = Image.fromarray(arr[..., 0], "L") if grayscale else Image.fromarray(arr, "RGB")
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=int(quality))
    buf.seek(0)
    out = np.asarray(Image.open(buf).convert("RGB"), dtype=np.float32) / 255.0
    return torch.from_numpy(out).permute(2, 0, 1).to(device=x.device, dtype=x.dtype)


def film_grain(x: torch.Tensor, sigma: float, size: float, seed: int) -> torch.Tensor:
    """Add monochrome film grain to ``(3, H, W)``: white Gaussian noise blurred with a Gaussian
    of ``size`` px (0: uncorrelated), rescaled to std ``sigma`` (0-255 scale), same on the 3
    channels. Deterministic in ``seed``."""
    g = np.random.default_rng(seed).standard_normal((1, *x.shape[-2:]), dtype=np.float32)
    n = torch.from_numpy(g).to(device=x.device, dtype=x.dtype)
    if size > 0:
        n = gaussian_blur(n, size)
        n = n / n.std().clamp_min(1e-6)
    return (x + n * (sigma / 255.0)).clamp(0.0, 1.0)


_YCC = ((0.299, 0.587, 0.114), (-0.168736, -0.331264, 0.5), (0.5, -0.418688, -0.081312))


def _ycc(x: torch.Tensor) -> torch.Tensor:
    """``(3, H, W)`` RGB -> BT.601 full-range YCbCr (Cb, Cr centred on 0)."""
    return torch.einsum("ij,jhw->ihw", torch.tensor(_YCC, dtype=x.dtype, device=x.device), x)


def _rgb(ycc: torch.Tensor) -> torch.Tensor:
    """Inverse of ``_ycc``, clamped to [0, 1]."""
    inv = torch.linalg.inv(torch.tensor(_YCC, dtype=torch.float64)).to(device=ycc.device, dtype=ycc.dtype)
    return torch.einsum("ij,jhw->ihw", inv, ycc).clamp(0.0, 1.0)


def _chroma_down(c: torch.Tensor) -> torch.Tensor:
    """``(2, H, W)`` chroma -> ``(2, ceil(H/2), ceil(W/2))``: 2x2 averages, odd sides replicated."""
    h, w = c.shape[-2:]
    return F.avg_pool2d(F.pad(c[None], (0, w % 2, 0, h % 2), mode="replicate"), 2)[0]


def _chroma_up(c: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Bilinear x2 upsampling of half-resolution chroma, cropped to ``(2, h, w)``."""
    return F.interpolate(c[None], scale_factor=2.0, mode="bilinear", align_corners=False)[0, :, :h, :w]


def chroma_subsample_420(x: torch.Tensor) -> torch.Tensor:
    """4:2:0 round trip of ``(3, H, W)`` in [0, 1]: BT.601 full-range YCbCr, Cb and Cr averaged
    over 2x2 blocks (odd sides padded by replication) and bilinearly upsampled back, luma kept."""
    _check_chw(x)
    ycc = _ycc(x)
    h, w = x.shape[-2:]
    return _rgb(torch.cat([ycc[:1], _chroma_up(_chroma_down(ycc[1:]), h, w)]))


_CODEC_SETUP = {  # name -> (encoder, container, options(quality))
    "h264": ("libx264", "mp4",
             lambda q: {"crf": str(q), "preset": "medium", "threads": "1", "x264-params": "mbtree=0"}),
    "mpeg2": ("mpeg2video", "mpeg", lambda q: {"qmin": str(q), "qmax": str(q), "threads": "1"}),
    "mpeg4": ("mpeg4", "avi", lambda q: {"qmin": str(q), "qmax": str(q), "threads": "1"}),
}


def shift_image(x: torch.Tensor, dx: float, dy: float) -> torch.Tensor:
    """``(C, H, W)`` translated by (dx, dy) pixels, bilinear, border values replicated."""
    h, w = x.shape[-2:]
    theta = torch.tensor([[[1.0, 0.0, -2.0 * dx / w], [0.0, 1.0, -2.0 * dy / h]]], dtype=x.dtype, device=x.device)
    grid = F.affine_grid(theta, [1, x.shape[0], h, w], align_corners=False)
    return F.grid_sample(x[None], grid, mode="bilinear", padding_mode="border", align_corners=False)[0]


def codec_roundtrip(
    x: torch.Tensor, codec: str, quality: int, frames: int = 1, shift: float = 0.75, seed: int = 0
) -> torch.Tensor:
    """``codec_roundtrip_qp``'s decoded image alone."""
    return codec_roundtrip_qp(x, codec, quality, frames, shift, seed)[0]


def codec_roundtrip_qp(
    x: torch.Tensor, codec: str, quality: int, frames: int = 1, shift: float = 0.75, seed: int = 0
) -> tuple[torch.Tensor, QPMap | None]:
    """Encode and decode ``(3, H, W)`` in [0, 1] with a video codec, in memory (PyAV).

    The clip is ``frames - 1`` copies of ``x`` shifted by random sub-pixel offsets (uniform in
    ``[-shift, shift]`` px, from ``seed``) followed by ``x``; returns the last decoded frame
    ``(3, H, W)`` and its per-macroblock quantisers (H.264; None for the other codecs).
    """
    _check_chw(x)
    if frames < 1:
        raise ValueError(f"frames must be >= 1, got {frames}")
    h, w = x.shape[-2:]
    xp = F.pad(x[None].float(), (0, w % 2, 0, h % 2), mode="replicate")[0]
    g = np.random.default_rng(seed)
    clip = [shift_image(xp, *g.uniform(-shift, shift, 2)) for _ in range(frames - 1)] + [xp]
    image, qp = codec_clip(clip, codec, quality)[-1]
    return image[:, :h, :w].to(device=x.device, dtype=x.dtype), qp


def codec_clip(clip: list[torch.Tensor], codec: str, quality: int) -> list[tuple[torch.Tensor, QPMap | None]]:
    """Encode the frames ``clip`` (each ``(3, H, W)`` in [0, 1], one size) as one video and decode
    it, in memory (PyAV): each decoded frame ``(3, H, W)`` with its per-macroblock quantisers
    (H.264; None for the other codecs). ``codec``: "h264" (``quality`` = CRF), "mpeg2" or
    "mpeg4" (``quality`` = constant quantiser). Odd sides are padded by replication for 4:2:0
    and cropped back.

    Colour conversion is done here, as in ``chroma_subsample_420`` (BT.601 full range, 2x2
    chroma averages in, bilinear chroma out). Codecs run on one thread, and x264's MB-tree is
    off: with it, these few-frame clips gave different bits in different processes (on about
    one face in six, up to 29 levels apart).
    """
    import av

    if not clip:
        raise ValueError("codec_clip needs at least one frame")
    for x in clip:
        _check_chw(x)
    if codec not in _CODEC_SETUP:
        raise ValueError(f"unknown codec {codec!r}: choose from {', '.join(CODECS)}")
    encoder, fmt, options = _CODEC_SETUP[codec]
    h, w = clip[0].shape[-2:]
    padded = [F.pad(x[None].float().cpu(), (0, w % 2, 0, h % 2), mode="replicate")[0] for x in clip]
    hp, wp = padded[0].shape[-2:]
    buf = io.BytesIO()
    with av.open(buf, "w", format=fmt) as out:
        stream = out.add_stream(encoder, rate=25)
        stream.width, stream.height, stream.pix_fmt = wp, hp, "yuv420p"
        stream.options = options(int(quality))
        stream.codec_context.thread_count = 1  # one thread: the same bits in every process
        for f in padded:
            for packet in stream.encode(_yuv_frame(f)):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    buf.seek(0)
    with av.open(buf) as inp:
        export_qp(inp.streams.video[0].codec_context)
        decoded = list(inp.decode(video=0))
    if len(decoded) != len(clip):
        raise RuntimeError(f"codec {codec}: decoded {len(decoded)} frames of {len(clip)}")
    result = []
    for frame in decoded:
        y, cb, cr = (torch.from_numpy(p.astype(np.float32) / 255.0) for p in _planes(frame))
        chroma = _chroma_up(torch.stack([cb, cr]) - 128.0 / 255.0, hp, wp)
        result.append((_rgb(torch.cat([y[None], chroma]))[:, :h, :w], qp_map(frame)))
    return result


def _yuv_frame(x: torch.Tensor) -> "av.VideoFrame":
    """``(3, H, W)`` in [0, 1], H and W even -> a yuv420p ``av.VideoFrame`` (BT.601 full range)."""
    import av

    ycc = _ycc(x.detach().cpu().float())
    planes = [ycc[0], *(_chroma_down(ycc[1:]) + 128.0 / 255.0)]
    frame = av.VideoFrame(x.shape[-1], x.shape[-2], "yuv420p")
    for plane, p in zip(frame.planes, planes):
        rows = np.zeros((p.shape[0], plane.line_size), dtype=np.uint8)
        rows[:, : p.shape[1]] = (p.clamp(0, 1).numpy() * 255.0 + 0.5).astype(np.uint8)
        plane.update(rows.tobytes())
    return frame


def _planes(frame: "av.VideoFrame") -> list[np.ndarray]:
    """The Y, U, V planes of a decoded yuv420p frame as uint8 arrays (line padding removed)."""
    if frame.format.name != "yuv420p":
        raise RuntimeError(f"decoded frame format {frame.format.name}, expected yuv420p")
    return [np.frombuffer(p, np.uint8).reshape(p.height, p.line_size)[:, : p.width].copy() for p in frame.planes]


def apply_params(hq: torch.Tensor, p: DegradationParams) -> torch.Tensor:
    """Degrade ``hq`` (3, H, W) in [0, 1] with the fixed parameters ``p``; returns the LQ image
    ``(3, h, w)`` at low resolution, in [0, 1]."""
    _check_chw(hq)
    x = hq.float() if hq.dtype not in (torch.float32, torch.float64) else hq
    if p.grayscale:
        x = to_grayscale(x)
    if p.blur == "gaussian" and p.sigma > 0:
        x = gaussian_blur(x, p.sigma)
    elif p.blur == "motion":
        x = _filter(x, motion_kernel(p.motion_length, p.motion_angle).to(x.device))
    x = downsample(x, p.scale)
    if p.grain_sigma > 0:
        x = film_grain(x, p.grain_sigma, p.grain_size, p.stage_seed)
    if p.noise_sigma > 0:
        g = np.random.default_rng(p.noise_seed)
        shape = (1 if p.grayscale else 3, *x.shape[-2:])
        n = g.standard_normal(shape, dtype=np.float32) * (p.noise_sigma / 255.0)
        x = (x + torch.from_numpy(n).to(device=x.device, dtype=x.dtype)).clamp(0.0, 1.0)
    if p.chroma420:
        x = chroma_subsample_420(x)
    if p.codec is not None:
        x = codec_roundtrip(x, p.codec, p.codec_quality, p.codec_frames, p.codec_shift, p.stage_seed + 1)
    if p.jpeg_quality is not None:
        x = jpeg(x, p.jpeg_quality, grayscale=p.grayscale)
    return x.clamp(0.0, 1.0)


# ----------------------------------------------------------------------------- public entry points


def degrade(hq: Img, rng: np.random.Generator, cfg: DegradationConfig | None = None) -> Img:
    """Random degradation (eq. 16) of one image.

    Args:
        hq: ``(3, H, W)`` torch float in [0, 1], or numpy ``(H, W, 3)`` float [0, 1] / uint8.
        rng: numpy Generator; the output is a deterministic function of its state.
        cfg: ranges and probabilities (default: the paper's ranges).
    Returns:
        The LQ image at low resolution, same kind as ``hq`` (numpy: float32 ``(h, w, 3)``).
    """
    params = sample_params(rng, cfg or DegradationConfig())
    return _wrap(hq, lambda x: apply_params(x, params))


def degrade_tb(hq: Img, scale: float, rng: np.random.Generator, grayscale: bool = False) -> Img:
    """The paper's "-TB" protocol: blur + downsampling by ``scale`` + noise + JPEG."""
    cfg = DegradationConfig.tb(scale, grayscale_prob=1.0 if grayscale else 0.0)
    return degrade(hq, rng, cfg)


def degrade_td(hq: Img, scale: float) -> Img:
    """The paper's "-TD" protocol: plain bicubic (antialiased) downsampling by ``scale``."""
    return _wrap(hq, lambda x: downsample(_as_float(x), scale))


# ----------------------------------------------------------------------------- helpers


def _as_float(x: torch.Tensor) -> torch.Tensor:
    return x if x.dtype in (torch.float32, torch.float64) else x.float()


def _check_chw(x: torch.Tensor) -> None:
    if x.dim() != 3 or x.shape[0] != 3:
        raise ValueError(f"expected an image of shape (3, H, W), got {tuple(x.shape)}")


def _wrap(hq: Img, fn) -> Img:  # type: ignore[no-untyped-def]
    if isinstance(hq, np.ndarray):
        if hq.ndim != 3 or hq.shape[2] != 3:
            raise ValueError(f"expected a numpy image of shape (H, W, 3), got {hq.shape}")
        arr = hq.astype(np.float32) / 255.0 if hq.dtype == np.uint8 else hq.astype(np.float32)
        out = fn(torch.from_numpy(np.ascontiguousarray(arr)).permute(2, 0, 1))
        return out.permute(1, 2, 0).numpy()
    if not isinstance(hq, torch.Tensor):
        raise TypeError(f"expected a torch tensor or numpy array, got {type(hq).__name__}")
    _check_chw(hq)
    return fn(hq)
