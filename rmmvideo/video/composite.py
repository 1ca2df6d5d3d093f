"""Soft face masks and compositing of restored faces into (upscaled) frames, batched on tensors.

Masks, all (N, 1, S, S) in [0, 1] in crop space, feathered, zero at the crop border (no visible
box after pasting):

- :func:`parsing_mask`: from the BiSeNet face parser (when the user has its weights): keep skin,
  brows, eyes, glasses, ears, earrings, nose, mouth and lips (optionally hair), drop background,
  neck, necklace, cloth and hat; blur heavily (sigma = 15.6 px at 512, the usual two 11-px
  Gaussian passes) and fade a thin border to zero.
- :func:`landmark_mask`: without a parser: the convex hull of the 68 points plus the brows lifted
  towards the forehead, with a smooth ramp inside the hull edge.
- :func:`ellipse_mask`: without landmarks: an ellipse fitted to the 5-point template.

:func:`restoration_detail` is what the compositor takes from a restoration (its detail band);
:func:`composite_faces` adds it to the upscaled frames (inverse similarity warp composed with the
upscale), keeping grey frames grey. It is the one paste path: ``run``, ``preview``, ``faces``,
``batch`` and ``eval-video`` all render through ``rmmvideo.video.render.FaceRenderer``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from rmmvideo.video.align import compose_affine, invert_affine, paste_back

# CelebAMask-HQ labels kept in the paste mask (see rmmvideo.models.face_parser.LABELS).
FACE_LABELS = (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13)
HAIR_LABEL = 17


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of (N, C, H, W) with reflect padding (radius 3 sigma)."""
    if sigma <= 0:
        return x
    r = int(math.ceil(3.0 * sigma))
    r = min(r, x.shape[-1] - 1, x.shape[-2] - 1)
    t = torch.arange(-r, r + 1, dtype=x.dtype, device=x.device)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = k / k.sum()
    c = x.shape[1]
    y = F.pad(x, (r, r, 0, 0), mode="reflect")
    y = F.conv2d(y, k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    y = F.pad(y, (0, 0, r, r), mode="reflect")
    return F.conv2d(y, k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


def border_ramp(size: int, width: float, device: torch.device | str | None = None,
                dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(1, 1, S, S): 0 on the outermost ``width`` pixels, smooth ramp to 1 over the next
    ``width`` pixels (smoothstep), 1 inside."""
    i = torch.arange(size, dtype=dtype, device=device)
    d = torch.minimum(i, size - 1 - i)  # distance to the nearest border, pixels
    r = ((d - width) / max(width, 1e-6)).clamp(0, 1)
    r = r * r * (3 - 2 * r)
    return (r[:, None] * r[None, :])[None, None]


def labels_to_mask(labels: torch.Tensor, size: int, keep_hair: bool = False,
                   blur_sigma: float | None = None, border: float | None = None) -> torch.Tensor:
    """Parsing labels (N, h, w) long -> soft paste mask (N, 1, S, S).

    Kept classes become 1, the rest 0; resized to S (area), blurred with ``blur_sigma`` pixels
    (default 15.6 * S / 512) and faded to zero over a border (default 10 * S / 512 px)."""
    keep = list(FACE_LABELS) + ([HAIR_LABEL] if keep_hair else [])
    keep_t = torch.tensor(keep, device=labels.device)
    m = torch.isin(labels, keep_t).float()[:, None]
    if m.shape[-1] != size or m.shape[-2] != size:
        m = F.interpolate(m, size=(size, size), mode="area" if m.shape[-1] > size else "bilinear",
                          align_corners=None if m.shape[-1] > size else False)
    sigma = 11.0 * math.sqrt(2.0) * size / 512.0 if blur_sigma is None else blur_sigma
    width = 10.0 * size / 512.0 if border is None else border
    m = gaussian_blur(m, sigma)
    return (m * border_ramp(size, width, m.device, m.dtype)).clamp(0, 1)


@torch.no_grad()
def parsing_mask(parser: torch.nn.Module, crops: torch.Tensor, keep_hair: bool = False,
                 parse_size: int = 512) -> torch.Tensor:
    """Soft mask from the face parser.

    Args:
        parser: a :class:`rmmvideo.models.face_parser.BiSeNet` in eval mode, on crops' device.
        crops: (N, 3, S, S) RGB in [0, 1] (the restored faces, aligned).
        keep_hair: also keep hair (off by default: hair often runs into the crop border).
        parse_size: side the parser sees (its checkpoint was trained at 512).
    Returns:
        (N, 1, S, S) in [0, 1].
    """
    from rmmvideo.models.face_parser import normalize

    s = crops.shape[-1]
    x = crops.float()
    if s != parse_size:
        x = F.interpolate(x, size=(parse_size, parse_size), mode="bilinear", align_corners=False,
                          antialias=s > parse_size)
    labels = parser(normalize(x)).argmax(1)
    return labels_to_mask(labels, s, keep_hair=keep_hair).to(crops.dtype)


def transform_points(matrices: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Apply (N, 2, 3) affines to (N, P, 2) points -> (N, P, 2)."""
    m = matrices.to(torch.float64)
    p = torch.as_tensor(points, dtype=torch.float64, device=m.device)
    return torch.einsum("nij,npj->npi", m[:, :, :2], p) + m[:, None, :, 2]


def _convex_hulls(points: np.ndarray) -> list[np.ndarray]:
    from scipy.spatial import ConvexHull

    hulls = []
    for p in points:
        h = ConvexHull(p)
        hulls.append(p[h.vertices])  # edge normals are oriented outwards below
    return hulls


def _soft_convex_polygons(hulls: list[np.ndarray], size: int, feather: float,
                          device: torch.device | str | None, dtype: torch.dtype) -> torch.Tensor:
    """(N, 1, S, S): smoothstep of the inside distance to each convex polygon's edges, 0 at the
    edge, 1 at ``feather`` pixels inside."""
    n_e = max(len(h) for h in hulls)
    normals = np.zeros((len(hulls), n_e, 2))
    offsets = np.zeros((len(hulls), n_e))
    for i, h in enumerate(hulls):
        c = h.mean(0)
        for e in range(n_e):
            a, b = h[e % len(h)], h[(e + 1) % len(h)]
            d = b - a
            nrm = np.array([d[1], -d[0]]) / max(np.linalg.norm(d), 1e-9)
            if np.dot(nrm, c - a) > 0:  # make it point outwards
                nrm = -nrm
            normals[i, e] = nrm
            offsets[i, e] = np.dot(nrm, a)
    ys, xs = torch.meshgrid(torch.arange(size, dtype=dtype, device=device),
                            torch.arange(size, dtype=dtype, device=device), indexing="ij")
    nt = torch.as_tensor(normals, dtype=dtype, device=device)
    ot = torch.as_tensor(offsets, dtype=dtype, device=device)
    # Signed distance to the polygon (exact inside, <= outside): max over edges.
    sd = (nt[:, :, 0, None, None] * xs + nt[:, :, 1, None, None] * ys - ot[:, :, None, None]).amax(1)
    r = (-sd / max(feather, 1e-6)).clamp(0, 1)
    return (r * r * (3 - 2 * r))[:, None]


def landmark_mask(landmarks_crop: torch.Tensor, size: int, forehead: float = 0.5,
                  feather: float | None = None, border: float | None = None) -> torch.Tensor:
    """Soft face mask from 68 landmarks already in crop pixels.

    The hull is taken over the 68 points plus the 10 brow points moved up (away from the mouth)
    by ``forehead`` x the eye-to-mouth distance; the mask ramps from 0 on the hull to 1 at
    ``feather`` pixels inside (default 10 % of S) and fades over a crop border (default 2 %).

    Args:
        landmarks_crop: (N, 68, 2).
    Returns:
        (N, 1, S, S) float32 in [0, 1].
    """
    lm = torch.as_tensor(landmarks_crop, dtype=torch.float64)
    if lm.ndim != 3 or lm.shape[1:] != (68, 2):
        raise ValueError(f"landmark_mask: expected (N, 68, 2), got {tuple(lm.shape)}")
    dev = lm.device
    if lm.shape[0] == 0:
        return torch.zeros((0, 1, size, size), device=dev)
    eyes = lm[:, 36:48].mean(1)
    mouth = lm[:, 48:68].mean(1)
    up = eyes - mouth  # towards the forehead, length = eye-to-mouth distance
    lifted = lm[:, 17:27] + forehead * up[:, None, :]
    pts = torch.cat([lm, lifted], 1).cpu().numpy()
    feather = 0.1 * size if feather is None else feather
    border = 0.02 * size if border is None else border
    # The mask is smooth: rasterise at a quarter of the size and upsample (16x cheaper).
    lo = min(size, max(32, size // 4))
    f = lo / size
    hulls = [(h + 0.5) * f - 0.5 for h in _convex_hulls(pts)]
    m = _soft_convex_polygons(hulls, lo, feather * f, dev, torch.float32)
    if lo != size:
        m = F.interpolate(m, size=(size, size), mode="bilinear", align_corners=False)
    return m * border_ramp(size, border, dev, torch.float32)


def ellipse_mask(size: int, template: Sequence[Sequence[float]], n: int = 1, feather: float = 0.4,
                 device: torch.device | str | None = None) -> torch.Tensor:
    """Elliptical face mask from a normalised 5-point template (ModelConfig.template).

    The ellipse spans about one eye distance either side of the face centre and from 1.2x the
    eye-to-mouth distance above the eyes to 0.9x below the mouth; ``feather`` is the fraction
    of the radius over which it fades. Returns (n, 1, S, S) float32."""
    t = np.asarray(template, dtype=np.float64) * size - 0.5
    eye_l, eye_r, _, m_l, m_r = t
    eyes, mouth = (eye_l + eye_r) / 2, (m_l + m_r) / 2
    d = np.linalg.norm(mouth - eyes)
    a = 1.0 * np.linalg.norm(eye_r - eye_l)
    b = 1.55 * d
    c = eyes + (mouth - eyes) / max(d, 1e-9) * 0.35 * d
    ang = math.atan2(eye_r[1] - eye_l[1], eye_r[0] - eye_l[0])
    ys, xs = torch.meshgrid(torch.arange(size, dtype=torch.float32, device=device),
                            torch.arange(size, dtype=torch.float32, device=device), indexing="ij")
    dx, dy = xs - float(c[0]), ys - float(c[1])
    u = dx * math.cos(ang) + dy * math.sin(ang)
    v = -dx * math.sin(ang) + dy * math.cos(ang)
    r = torch.sqrt((u / a) ** 2 + (v / b) ** 2)
    x = ((1.0 - r) / feather).clamp(0, 1)
    m = x * x * (3 - 2 * x) * border_ramp(size, 0.02 * size, device)[0, 0]
    return m[None, None].expand(n, 1, size, size).contiguous()


def face_masks(restored_crops: torch.Tensor, matrices: torch.Tensor,
               landmarks68: torch.Tensor | np.ndarray | None = None, parser: torch.nn.Module | None = None,
               template: Sequence[Sequence[float]] | None = None, keep_hair: bool = False) -> torch.Tensor:
    """Paste masks for restored crops with the best available method: the parser when given,
    else the landmark hull when ``landmarks68`` (N, 68, 2, frame pixels) are given, else the
    template ellipse. ``matrices`` (N, 2, 3) are the frame -> crop affines. Returns
    (N, 1, S, S) on the crops' device."""
    n, s = restored_crops.shape[0], restored_crops.shape[-1]
    dev = restored_crops.device
    if parser is not None:
        return parsing_mask(parser, restored_crops, keep_hair=keep_hair).float()
    if landmarks68 is not None:
        return landmark_mask(transform_points(matrices.to(dev), landmarks68), s).to(dev)
    if template is None:
        raise ValueError("face_masks: need a parser, landmarks68 or a template")
    return ellipse_mask(s, template, n=n, device=dev)


def detail_sigma(size: int) -> float:
    """Gaussian sigma (crop pixels) that separates colour and shading from detail: S / 10
    (12.8 px at 128), i.e. structures wider than about half the face (colour, broad shading)
    are low band. A narrower band (S / 40) threw away half of what the model gains on real
    footage: codec blocks (8 input pixels, 12-16 crop pixels at x4) are mid band."""
    return size / 10.0


def restoration_detail(restored: torch.Tensor, lq: torch.Tensor, sigma: float | None = None) -> torch.Tensor:
    """The part of a restoration that the compositor adds to the upscaled frame.

    ``restored - lq`` minus its low band (Gaussian, ``sigma`` = :func:`detail_sigma` by
    default): colour and shading stay the input's, only the higher bands come from the model.

    Args:
        restored: (N, 3, S, S) restored crops in [0, 1].
        lq: (N, 3, S, S) the aligned input crops they were restored from.
    Returns:
        (N, 3, S, S) signed detail residual.
    """
    if restored.shape != lq.shape:
        raise ValueError(f"restoration_detail: shapes differ: {tuple(restored.shape)} vs {tuple(lq.shape)}")
    d = restored - lq
    s = detail_sigma(restored.shape[-1]) if sigma is None else sigma
    return d - gaussian_blur(d, s)


def is_grey(frames: torch.Tensor, tol: float = 4.0 / 255.0, max_fraction: float = 1e-3) -> torch.Tensor:
    """(B, 3, H, W) in [0, 1] -> (B,) bool: at most ``max_fraction`` of (subsampled) pixels
    have a channel spread above ``tol``."""
    step = max(1, min(frames.shape[-2:]) // 256)
    x = frames[:, :, ::step, ::step].float()
    spread = x.amax(1) - x.amin(1)
    return (spread > tol).float().mean((1, 2)) <= max_fraction


def to_grey(x: torch.Tensor) -> torch.Tensor:
    """RGB (N, 3, H, W) -> luma Y (BT.601 weights) replicated on 3 channels."""
    w = torch.tensor([0.299, 0.587, 0.114], dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x * w).sum(1, keepdim=True).expand_as(x).contiguous()


def canvas_matrix(h: int, w: int, oh: int, ow: int) -> torch.Tensor:
    """(2, 3) frame pixel -> upscaled canvas pixel (pixel-centre convention, per-axis scale)."""
    sx, sy = ow / w, oh / h
    return torch.tensor([[sx, 0.0, (sx - 1) / 2], [0.0, sy, (sy - 1) / 2]], dtype=torch.float64)


def composite_faces(canvas: np.ndarray, detail: torch.Tensor, masks: torch.Tensor, frame_of: Sequence[int],
                    matrices: torch.Tensor, frame_size: tuple[int, int],
                    grey: Sequence[bool] | None = None) -> None:
    """Add restored detail to upscaled frames, in place: ``canvas += mask * detail`` (warped).

    Only the region each frame's faces cover is converted to float and back; every other pixel
    stays bit-exact, and a face whose mask is zero changes nothing.

    Args:
        canvas: (B, H', W', 3) uint8 or uint16, the upscaled frames (modified in place).
        detail: (N, 3, S, S) signed detail per face (:func:`restoration_detail` weighed by the
            face's strength, :func:`rmmvideo.video.strength.weigh_detail`).
        masks: (N, 1, S, S) in [0, 1], the paste masks.
        frame_of: (N,) the canvas of each face.
        matrices: (N, 2, 3) frame -> crop affines (original frame pixels, before upscaling).
        frame_size: (H, W) of the original frames.
        grey: (B,) frames that are grey: faces pasted into them add luma only.
    """
    n = detail.shape[0]
    if n == 0:
        return
    dev = detail.device
    peak = 255.0 if canvas.dtype == np.uint8 else 65535.0
    h, w = frame_size
    hc, wc = canvas.shape[1:3]
    if grey is not None:
        g = torch.tensor([bool(grey[b]) for b in frame_of], device=dev)
        if bool(g.any()):
            detail = torch.where(g[:, None, None, None], to_grey(detail), detail)
    to_canvas = compose_affine(canvas_matrix(h, w, hc, wc).to(dev), invert_affine(matrices.to(dev, torch.float64)))
    s = detail.shape[-1]
    corners = torch.tensor([[-0.5, -0.5, 1.0], [s - 0.5, -0.5, 1.0], [-0.5, s - 0.5, 1.0],
                            [s - 0.5, s - 0.5, 1.0]], dtype=torch.float64, device=dev)
    pts = torch.einsum("nij,kj->nki", to_canvas, corners)
    lo = torch.floor(pts.amin(1)).cpu().numpy().astype(int) - 2
    hi = torch.ceil(pts.amax(1)).cpu().numpy().astype(int) + 3
    frame_of_np = np.asarray(frame_of)
    for b in np.unique(frame_of_np):
        sel = np.nonzero(frame_of_np == b)[0]
        x0, y0 = max(0, int(lo[sel, 0].min())), max(0, int(lo[sel, 1].min()))
        x1, y1 = min(wc, int(hi[sel, 0].max())), min(hc, int(hi[sel, 1].max()))
        if x1 <= x0 or y1 <= y0:
            continue
        roi_np = canvas[b, y0:y1, x0:x1]
        roi = torch.from_numpy(roi_np.astype(np.float32)).to(dev).permute(2, 0, 1)[None] / peak
        shift = torch.tensor([[0.0, 0.0, -x0], [0.0, 0.0, -y0]], dtype=torch.float64, device=dev)
        idx = torch.zeros(len(sel), dtype=torch.long, device=dev)
        out = paste_back(roi, detail[sel], masks[sel], idx, to_canvas[sel] + shift, residual=True)
        out_np = out[0].permute(1, 2, 0).mul(peak).round_().clamp_(0, peak).cpu().numpy()
        canvas[b, y0:y1, x0:x1] = out_np.astype(canvas.dtype)
