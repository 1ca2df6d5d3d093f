"""Face alignment warps on tensors, batched, on the tensors' device.

Conventions:
- Points are (x, y) in pixels with pixel centres at integer coordinates (OpenCV's convention).
- An affine matrix ``M`` (2, 3) maps source pixels to destination pixels: ``dst = M @ [x, y, 1]``.
  ``warp_to_crops`` takes frame -> crop matrices; ``paste_back`` takes crop -> canvas matrices.
- Functions never modify their inputs in place (matrices, frames, canvases) unless asked with
  ``inplace=True``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

# 68-point indices (iBUG layout). Points 36-41 are the eye on the image's left (the subject's
# right eye), 42-47 the eye on the image's right, 30 the nose tip, 48 and 54 the mouth corners.
LEFT_EYE = slice(36, 42)
RIGHT_EYE = slice(42, 48)
NOSE_TIP = 30
MOUTH_LEFT = 48
MOUTH_RIGHT = 54


def five_points(landmarks68: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
    """5 points (left eye centre, right eye centre, nose tip, left and right mouth corner; "left"
    is the image's left) from 68 landmarks. ``(..., 68, 2) -> (..., 5, 2)``, numpy or torch."""
    if landmarks68.shape[-2:] != (68, 2):
        raise ValueError(f"five_points: expected (..., 68, 2), got {tuple(landmarks68.shape)}")
    lm = landmarks68
    parts = [
        lm[..., LEFT_EYE, :].mean(-2),
        lm[..., RIGHT_EYE, :].mean(-2),
        lm[..., NOSE_TIP, :],
        lm[..., MOUTH_LEFT, :],
        lm[..., MOUTH_RIGHT, :],
    ]
    if isinstance(lm, torch.Tensor):
        return torch.stack(parts, -2)
    return np.stack(parts, -2)


def template_points(template: Sequence[Sequence[float]], size: int) -> torch.Tensor:
    """Template normalised to [0, 1] (ModelConfig.template) -> (5, 2) float64 crop pixels.
    A normalised coordinate u maps to ``u * size - 0.5`` (pixel-centre convention)."""
    t = torch.as_tensor(template, dtype=torch.float64)
    if t.shape != (5, 2):
        raise ValueError(f"template: expected (5, 2), got {tuple(t.shape)}")
    return t * size - 0.5


def similarity_transform(src: torch.Tensor, dst: torch.Tensor) -> torch.Tensor:
    """Least-squares similarity (rotation, uniform scale, translation; no reflection) mapping
    ``src`` points onto ``dst`` (Umeyama 1991), batched.

    Args:
        src: (N, P, 2) points per face (e.g. 5 landmarks in the frame).
        dst: (P, 2) or (N, P, 2) target points (e.g. the template in crop pixels).
    Returns:
        (N, 2, 3) matrices M with ``dst ~ M @ [src, 1]``, in src's dtype (computed in float64).
    """
    src = torch.as_tensor(src)
    if src.ndim != 3 or src.shape[-1] != 2:
        raise ValueError(f"similarity_transform: src expected (N, P, 2), got {tuple(src.shape)}")
    out_dtype = src.dtype if src.is_floating_point() else torch.float32
    s = src.to(torch.float64)
    d = torch.as_tensor(dst, device=src.device).to(torch.float64)
    if d.ndim == 2:
        d = d.expand(s.shape[0], -1, -1)
    if d.shape != s.shape:
        raise ValueError(f"similarity_transform: dst {tuple(d.shape)} does not match src {tuple(s.shape)}")
    mu_s, mu_d = s.mean(1, keepdim=True), d.mean(1, keepdim=True)
    sc, dc = s - mu_s, d - mu_d
    var_s = (sc**2).sum((1, 2)) / s.shape[1]  # (N,)
    cov = dc.transpose(1, 2) @ sc / s.shape[1]  # (N, 2, 2)
    u, sig, vh = torch.linalg.svd(cov)
    det = torch.linalg.det(u) * torch.linalg.det(vh)
    e = torch.ones_like(sig)
    e[:, 1] = torch.where(det < 0, -1.0, 1.0)
    r = u @ torch.diag_embed(e) @ vh
    scale = (sig * e).sum(1) / var_s.clamp_min(1e-12)
    a = scale[:, None, None] * r
    t = mu_d.transpose(1, 2) - a @ mu_s.transpose(1, 2)  # (N, 2, 1)
    return torch.cat([a, t], 2).to(out_dtype)


def invert_affine(m: torch.Tensor) -> torch.Tensor:
    """Inverse of (N, 2, 3) affine matrices -> (N, 2, 3) (a new tensor)."""
    if m.shape[-2:] != (2, 3):
        raise ValueError(f"invert_affine: expected (..., 2, 3), got {tuple(m.shape)}")
    a = m[..., :2].to(torch.float64)
    t = m[..., 2:].to(torch.float64)
    ai = torch.linalg.inv(a)
    return torch.cat([ai, -ai @ t], -1).to(m.dtype)


def compose_affine(outer: torch.Tensor, inner: torch.Tensor) -> torch.Tensor:
    """Matrix of ``x -> outer(inner(x))`` for (..., 2, 3) affines (broadcasting)."""
    a = outer[..., :2] @ inner[..., :2]
    t = outer[..., :2] @ inner[..., 2:] + outer[..., 2:]
    return torch.cat([a, t], -1)


def scale_affine(scale: float, dtype: torch.dtype = torch.float32,
                 device: torch.device | str | None = None) -> torch.Tensor:
    """(2, 3) matrix from frame pixels to pixels of the frame resized by ``scale`` (pixel-centre
    convention of ``F.interpolate(..., align_corners=False)``: ``x' = s * x + (s - 1) / 2``)."""
    s = float(scale)
    o = (s - 1.0) / 2.0
    return torch.tensor([[s, 0.0, o], [0.0, s, o]], dtype=dtype, device=device)


def affine_scale(m: torch.Tensor) -> torch.Tensor:
    """Uniform scale factor of (..., 2, 3) affines (sqrt of |det|) -> (...,)."""
    a = m[..., :2].to(torch.float64)
    return torch.linalg.det(a).abs().sqrt().to(m.dtype)


def _affine_grid(m: torch.Tensor, h: int, w: int, in_h: int, in_w: int,
                 offset: torch.Tensor | None = None, sub: int = 1,
                 dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """grid_sample grid for an (h, w) output whose pixel p (origin at ``offset`` (N, 2) in the
    source space of ``m``) samples the (in_h, in_w) input at ``m @ [p + offset, 1]``.

    ``m``: (N, 2, 3) float64 output -> input pixel affines. With ``sub`` > 1 the grid holds
    sub x sub samples per output pixel at ``p + (j + 0.5) / sub - 0.5`` (shape
    (N, h * sub, w * sub, 2)). The pixel affine is folded into grid_sample's normalised
    coordinates in float64 and expanded by ``F.affine_grid`` (one fused kernel)."""
    n, dev = m.shape[0], m.device
    f64 = torch.float64
    a = m[:, :, :2].to(f64)
    t = m[:, :, 2].to(f64)
    if offset is not None:
        t = t + torch.einsum("nij,nj->ni", a, offset.to(dev, f64))
    full = torch.zeros((n, 3, 3), dtype=f64, device=dev)
    full[:, :2, :2], full[:, :2, 2], full[:, 2, 2] = a, t, 1.0
    out_from_norm = torch.tensor([[w / 2, 0, (w - 1) / 2], [0, h / 2, (h - 1) / 2], [0, 0, 1]],
                                 dtype=f64, device=dev)
    norm_from_in = torch.tensor([[2 / in_w, 0, 1 / in_w - 1], [0, 2 / in_h, 1 / in_h - 1], [0, 0, 1]],
                                dtype=f64, device=dev)
    theta = (norm_from_in @ full @ out_from_norm)[:, :2]
    return F.affine_grid(theta.to(dtype), [n, 1, h * sub, w * sub], align_corners=False)


def warp_to_crops(frames: torch.Tensor, frame_idx: torch.Tensor, matrices: torch.Tensor, size: int,
                  max_supersample: int = 4) -> torch.Tensor:
    """Aligned square crops, bilinear, batched.

    Args:
        frames: (B, C, H, W) float.
        frame_idx: (N,) long, the frame of each face.
        matrices: (N, 2, 3) frame -> crop pixel affines (e.g. from :func:`similarity_transform`).
        size: crop side S.
        max_supersample: antialiasing limit. When a face is shrunk (crop pixels per frame pixel
            s < 1), each crop pixel averages k x k bilinear samples with ``k = ceil(1 / s)``
            (capped): area-like resampling, no aliasing on big faces.
    Returns:
        (N, C, S, S) crops, zeros outside the frame.
    """
    if frames.ndim != 4:
        raise ValueError(f"warp_to_crops: frames expected (B, C, H, W), got {tuple(frames.shape)}")
    n = matrices.shape[0]
    if matrices.shape != (n, 2, 3) or frame_idx.shape != (n,):
        raise ValueError(
            f"warp_to_crops: matrices (N, 2, 3) and frame_idx (N,) expected, got "
            f"{tuple(matrices.shape)} and {tuple(frame_idx.shape)}"
        )
    _, c, h, w = frames.shape
    dev = frames.device
    if n == 0:
        return frames.new_zeros((0, c, size, size))
    inv = invert_affine(matrices.to(dev, torch.float64))  # crop -> frame
    shrink = (1.0 / affine_scale(matrices.to(torch.float64))).cpu().numpy()  # frame px per crop px
    ks = np.clip(np.ceil(shrink - 1e-6), 1, max_supersample).astype(int)
    out = frames.new_zeros((n, c, size, size))
    gdtype = torch.float32 if frames.dtype in (torch.float16, torch.bfloat16) else frames.dtype
    for k in np.unique(ks):
        sel = torch.as_tensor(np.nonzero(ks == k)[0], device=dev)
        grid = _affine_grid(inv[sel], size, size, h, w, sub=int(k), dtype=gdtype)
        src = frames[frame_idx.to(dev)[sel]].to(gdtype)
        sampled = F.grid_sample(src, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        if k > 1:
            sampled = F.avg_pool2d(sampled, int(k))
        out[sel] = sampled.to(out.dtype)
    return out


def paste_back(canvas: torch.Tensor, crops: torch.Tensor, masks: torch.Tensor, frame_idx: torch.Tensor,
               matrices_crop_to_canvas: torch.Tensor, inplace: bool = False,
               residual: bool = False) -> torch.Tensor:
    """Blend crops into canvases with soft masks, batched.

    Each crop and its mask are warped (bilinear) into the canvas region the crop covers; the
    crop is sampled premultiplied by its mask so that no dark fringe comes from outside the crop.
    Overlapping faces: the colour is the mask-weighted mean of the faces and the coverage is
    ``1 - prod(1 - m_i)``; then ``out = canvas * (1 - a) + colour * a``. Pixels outside every
    mask's support are left exactly unchanged. With ``residual=True`` the crops are
    corrections added to the canvas instead: ``out = canvas + colour * a``.

    Args:
        canvas: (B, C, H', W') float, e.g. the upscaled frames.
        crops: (N, C, S, S) faces to paste (with ``residual``: signed corrections).
        masks: (N, 1, S, S) in [0, 1].
        frame_idx: (N,) long, the canvas of each face.
        matrices_crop_to_canvas: (N, 2, 3) crop -> canvas pixel affines (for an upscaled canvas,
            ``compose_affine(scale_affine(s), invert_affine(frame_to_crop))``).
        inplace: write into ``canvas`` instead of a copy.
        residual: add the crops (weighted by the masks) instead of blending them in.
    Returns:
        (B, C, H', W') blended canvas.
    """
    n = crops.shape[0]
    if canvas.ndim != 4 or crops.ndim != 4 or masks.shape != (n, 1, crops.shape[2], crops.shape[3]):
        raise ValueError(
            f"paste_back: canvas (B, C, H, W), crops (N, C, S, S), masks (N, 1, S, S) expected, got "
            f"{tuple(canvas.shape)}, {tuple(crops.shape)}, {tuple(masks.shape)}"
        )
    if matrices_crop_to_canvas.shape != (n, 2, 3) or frame_idx.shape != (n,):
        raise ValueError(
            f"paste_back: matrices (N, 2, 3) and frame_idx (N,) expected, got "
            f"{tuple(matrices_crop_to_canvas.shape)} and {tuple(frame_idx.shape)}"
        )
    out = canvas if inplace else canvas.clone()
    if n == 0:
        return out
    _, c, hc, wc = canvas.shape
    s = crops.shape[-1]
    dev = canvas.device
    m = matrices_crop_to_canvas.to(dev, torch.float64)
    # Canvas boxes covered by each crop (corners of the crop square, one pixel of margin).
    corners = torch.tensor([[-0.5, -0.5, 1.0], [s - 0.5, -0.5, 1.0], [-0.5, s - 0.5, 1.0],
                            [s - 0.5, s - 0.5, 1.0]], dtype=torch.float64, device=dev)
    pts = torch.einsum("nij,kj->nki", m, corners)
    lo = torch.floor(pts.amin(1)).cpu().numpy().astype(int) - 1
    hi = torch.ceil(pts.amax(1)).cpu().numpy().astype(int) + 2
    x0 = np.clip(lo[:, 0], 0, wc)
    y0 = np.clip(lo[:, 1], 0, hc)
    x1 = np.clip(hi[:, 0], 0, wc)
    y1 = np.clip(hi[:, 1], 0, hc)
    bw = int(max(1, (x1 - x0).max()))
    bh = int(max(1, (y1 - y0).max()))
    # One batched grid_sample over a common ROI size.
    inv = invert_affine(m)  # canvas -> crop
    off = torch.as_tensor(np.stack([x0, y0], 1), dtype=torch.float64, device=dev)  # (N, 2)
    wdtype = torch.float32 if crops.dtype in (torch.float16, torch.bfloat16) else crops.dtype
    grid = _affine_grid(inv, bh, bw, s, s, offset=off, dtype=wdtype)
    mk = masks.to(dev, wdtype).clamp(0, 1)
    src = torch.cat([crops.to(dev, wdtype) * mk, mk], 1)
    warped = F.grid_sample(src, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    fidx = frame_idx.cpu().numpy()
    for b in np.unique(fidx):
        faces = np.nonzero(fidx == b)[0]
        ux0, uy0 = int(x0[faces].min()), int(y0[faces].min())
        ux1, uy1 = int(x1[faces].max()), int(y1[faces].max())
        if ux1 <= ux0 or uy1 <= uy0:
            continue
        num = torch.zeros((c, uy1 - uy0, ux1 - ux0), dtype=wdtype, device=dev)
        den = torch.zeros((1, uy1 - uy0, ux1 - ux0), dtype=wdtype, device=dev)
        trans = torch.ones_like(den)
        for i in faces:
            hh, ww = int(y1[i] - y0[i]), int(x1[i] - x0[i])
            if hh <= 0 or ww <= 0:
                continue
            ry, rx = int(y0[i] - uy0), int(x0[i] - ux0)
            wi = warped[i, :, :hh, :ww]
            num[:, ry:ry + hh, rx:rx + ww] += wi[:c]
            den[:, ry:ry + hh, rx:rx + ww] += wi[c:]
            trans[:, ry:ry + hh, rx:rx + ww] *= 1.0 - wi[c:].clamp(0, 1)
        alpha = 1.0 - trans
        colour = num / den.clamp_min(1e-8)
        region = out[b, :, uy0:uy1, ux0:ux1]
        if residual:
            blended = region.to(wdtype) + colour * alpha
        else:
            blended = region.to(wdtype) * (1.0 - alpha) + colour * alpha
        out[b, :, uy0:uy1, ux0:ux1] = torch.where(alpha > 0, blended.to(out.dtype), region)
    return out


def align_matrices(points5: torch.Tensor, template: Sequence[Sequence[float]], size: int) -> torch.Tensor:
    """Frame -> crop similarity matrices for (N, 5, 2) points and a normalised template
    (ModelConfig.template) at crop side ``size``. Returns (N, 2, 3) float64."""
    return similarity_transform(torch.as_tensor(points5, dtype=torch.float64),
                                template_points(template, size).to(torch.as_tensor(points5).device))


def crop_scale_ok(matrices: torch.Tensor) -> torch.Tensor:
    """(N,) bool: finite matrices with a sane scale (guards against degenerate landmarks)."""
    sc = affine_scale(matrices.to(torch.float64))
    return torch.isfinite(matrices).all(-1).all(-1) & (sc > 1e-3) & (sc < 1e3) & torch.isfinite(sc)


__all__ = [
    "affine_scale",
    "align_matrices",
    "compose_affine",
    "crop_scale_ok",
    "five_points",
    "invert_affine",
    "paste_back",
    "scale_affine",
    "similarity_transform",
    "template_points",
    "warp_to_crops",
]
