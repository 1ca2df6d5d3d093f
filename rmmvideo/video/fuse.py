"""Multi-frame fusion of each face's input along its track, before upscaling and restoration.

A video shows a face in many frames, each coded differently: the codec's error (blocks,
ringing, mosquito noise, 4:2:0 colour bleeding) and grain change from frame to frame while the
face does not, much. For each face of track T in frame t, the ``radius`` frames before and after
it that show T too (tracks end at scene cuts, so nothing is fused across a cut) are
motion-compensated onto frame t and averaged in where they agree:

    x'_t = (x_t + sum_d w_d W_d(x_{t+d})) / (1 + sum_d w_d),
    w_d(p) = exp(-(D_d(p) / GATE)^2),   D_d = G_1 * mean_rgb |x_t - W_d(x_{t+d})|,

in the face's region R (its 68 landmarks' box grown by ``GROW`` of its size on each side, in
input pixels): ``W_d`` samples frame t+d at p + flow_d(p) (bicubic), flow_d being OpenCV's DIS
optical flow (medium preset, no learned weights; the fast one costs half and is as good on
compressed input, CRF 30, but on nearly clean input, CRF 18, it misaligns fine detail: FED
1.021-1.030x against medium's 0.995-1.001x) from t to t+d on the luma of R; ``G_1`` a 1 px
Gaussian; ``GATE`` 8 levels of 8 bits. Each pixel's flows to the neighbours are first replaced
by their least-squares fit ``a d + b d^2`` over the offsets d (``smooth_trajectories``): a face
moves along a smooth path, while the flow measured between coded frames also follows the
codec's own errors (block edges, a residual that moved), so the warped neighbours carried the
centre frame's error with them instead of averaging it out. The fit lowered the temporal and
flow-warping errors and raised PSNR at x2 and x4 on every measure (README, "Multi-frame
fusion"). A pixel whose compensated neighbour differs by much more
than codec noise (a mouth opening, a blink, an occlusion, a flow failure) keeps its own value.
R's fused pixels are blended into the frame with a window that falls to 0 at R's edge
(raised cosine over ``FEATHER`` of its size), so the rest of the frame is untouched. ``--fuse
auto`` (the default, ``fusion_for``) fuses 3 frames each side with every ``w_d`` multiplied by
how coarsely the codec coded the face (``quantiser.coarseness`` of ``FacePlan.qp``): faces coded
finely, or with no quantiser, keep their own pixels, because on nearly clean input fusion
softens faces a little (README, "Multi-frame fusion").

Everything downstream (the upscale, the crops the model restores, the paste) sees the fused
frame. Fused at the input's resolution (warps in input pixels) it costs ~s^2 less than fusing
the upscale and measured as well or better (README, "Multi-frame fusion"). The filter is
non-causal and finite: frame t depends on frames t-radius .. t+radius only, so a segment fused
with ``radius`` frames of context on each side equals the single pass.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import numpy as np

from rmmvideo.video.quantiser import coarseness

if TYPE_CHECKING:
    from rmmvideo.video.options import RestoreOptions
    from rmmvideo.video.render import FacePlan, FramePlan

DEFAULT_RADIUS = 3  # what --fuse auto fuses, weighed by how coarsely each face was coded
GATE = 8.0 / 255.0  # in [0, 1] units
GROW = 0.3  # region: landmark box grown by this share of its size on each side
FEATHER = 0.15  # share of the region's size over which the blend window falls to 0
MIN_REGION = 8  # px: smaller faces are not fused
LUMA = np.array([0.299, 0.587, 0.114], np.float32)  # BT.601 luma of RGB, for the flow and --deblock


def face_region(face: FacePlan, height: int, width: int) -> tuple[int, int, int, int] | None:
    """(x0, y0, x1, y1) in pixels of the region fused for ``face``, clipped to the frame; None
    when it is smaller than ``MIN_REGION`` on a side."""
    lm = np.asarray(face.landmarks68, np.float64)
    (ax, ay), (bx, by) = lm.min(0), lm.max(0)
    g = GROW * max(bx - ax, by - ay)
    x0, y0 = max(0, int(np.floor(ax - g))), max(0, int(np.floor(ay - g)))
    x1, y1 = min(width, int(np.ceil(bx + g)) + 1), min(height, int(np.ceil(by + g)) + 1)
    if x1 - x0 < MIN_REGION or y1 - y0 < MIN_REGION:
        return None
    return x0, y0, x1, y1


def feather_window(h: int, w: int) -> np.ndarray:
    """(h, w, 1) float32 blend window: 1 inside, a raised cosine to 0 over ``FEATHER`` of each
    side at the edges."""
    def ramp(n: int) -> np.ndarray:
        k = max(1, int(round(FEATHER * n)))
        r = np.ones(n, np.float32)
        edge = 0.5 - 0.5 * np.cos(np.pi * (np.arange(k, dtype=np.float32) + 0.5) / k)
        r[:k] = np.minimum(r[:k], edge)
        r[n - k:] = np.minimum(r[n - k:], edge[::-1])
        return r

    return (ramp(h)[:, None] * ramp(w)[None, :])[..., None]


def peak_of(image: np.ndarray) -> float:
    """The largest level of ``image``'s dtype (uint8: 255, uint16: 65535), for [0, 1] floats."""
    return 255.0 if image.dtype == np.uint8 else 65535.0


def blend_region(out: np.ndarray | None, image: np.ndarray, region: tuple[int, int, int, int],
                 cur: np.ndarray, new: np.ndarray) -> np.ndarray:
    """Write ``region`` of ``out`` (a copy of ``image`` made here when None): ``cur`` moved
    towards ``new`` ((h, w, 3) floats in [0, 1]) by ``feather_window``, rounded to ``image``'s
    dtype. Returns ``out``. The one way ``--fuse`` and ``--deblock`` put a region back."""
    x0, y0, x1, y1 = region
    peak = peak_of(image)
    if out is None:
        out = image.copy()
    blended = cur + feather_window(y1 - y0, x1 - x0) * (new - cur)
    out[y0:y1, x0:x1] = np.clip(np.rint(blended * peak), 0, peak).astype(image.dtype)
    return out


class TemporalFusion:
    """Fuses a frame's face regions with the same tracks' faces in its neighbours (module doc).

    Args:
        radius: frames before and after averaged in (0: off).
        auto: weigh each face's neighbours by its ``quantiser.coarseness`` (how coarsely the codec
            coded it, from ``FacePlan.qp``): faces coded finely or with no quantiser keep their
            own pixels (``--fuse auto``).
    """

    def __init__(self, radius: int = DEFAULT_RADIUS, auto: bool = False) -> None:
        if radius < 0:
            raise ValueError(f"fusion radius must be >= 0, got {radius}")
        self.radius = radius
        self.auto = auto
        self.faces_fused = 0  # faces fused so far (with at least one neighbour)
        self._dis: Any = None

    def _flow(self, cur: np.ndarray, other: np.ndarray) -> np.ndarray:
        """(h, w, 2) float32 flow with ``cur(p) ~ other(p + flow(p))`` (uint8 lumas)."""
        if self._dis is None:
            import cv2

            self._dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
        return self._dis.calc(cur, other, None)

    def fuse(self, images: Sequence[np.ndarray], faces: Sequence[Sequence[FacePlan]], centre: int) -> np.ndarray:
        """The fused image of ``images[centre]``.

        Args:
            images: consecutive frames (H, W, 3) uint8 or uint16, the centre and its neighbours.
            faces: each frame's faces.
            centre: index of the frame to fuse.
        Returns:
            A new (H, W, 3) array of the centre's dtype (the centre itself when nothing is fused).
        """
        import cv2

        image = images[centre]
        if self.radius == 0 or not faces[centre]:
            return image
        peak = peak_of(image)
        h, w = image.shape[:2]
        out: np.ndarray | None = None
        for face in faces[centre]:
            region = face_region(face, h, w)
            others = [j for j in range(max(0, centre - self.radius), min(len(images), centre + self.radius + 1))
                      if j != centre and any(f.track_id == face.track_id for f in faces[j])]
            weight = coarseness(face.qp) if self.auto else 1.0
            if region is None or not others or weight == 0.0:
                continue
            x0, y0, x1, y1 = region
            cur = image[y0:y1, x0:x1].astype(np.float32) / peak
            cur8 = _luma8(cur)
            gy, gx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
            num, den = cur.copy(), np.ones(cur.shape[:2] + (1,), np.float32)
            flows = [self._flow(cur8, _luma8(images[j][y0:y1, x0:x1].astype(np.float32) / peak)) for j in others]
            flows = smooth_trajectories(flows, [j - centre for j in others])
            for j, flow in zip(others, flows):
                mx, my = gx + flow[..., 0], gy + flow[..., 1]
                # only the part of frame j the warp samples (with the cubic kernel's reach)
                bx0, by0 = max(0, int(np.floor(mx.min())) - 2), max(0, int(np.floor(my.min())) - 2)
                bx1, by1 = min(w, int(np.ceil(mx.max())) + 3), min(h, int(np.ceil(my.max())) + 3)
                if bx1 <= bx0 or by1 <= by0:
                    continue
                other = images[j][by0:by1, bx0:bx1].astype(np.float32) / peak
                warped = cv2.remap(other, mx - bx0, my - by0, cv2.INTER_CUBIC, borderMode=cv2.BORDER_REPLICATE)
                d = cv2.GaussianBlur(np.abs(warped - cur).mean(-1), (0, 0), 1.0)
                wt = weight * np.exp(-np.square(d / GATE))[..., None]
                num += wt * warped
                den += wt
            self.faces_fused += 1
            out = blend_region(out, image, region, cur, num / den)
        return image if out is None else out


def smooth_trajectories(flows: Sequence[np.ndarray], offsets: Sequence[int]) -> list[np.ndarray]:
    """Each pixel's displacements to the frames ``offsets`` away, replaced by their least-squares
    fit ``a d + b d^2`` (zero at d = 0).

    flows: (h, w, 2) per offset. With fewer than 3 offsets the flows are returned as they are."""
    if len(flows) < 3:
        return list(flows)
    d = np.asarray(offsets, np.float64)
    a = np.stack([d, d * d], 1)  # (K, 2)
    proj = a @ np.linalg.pinv(a)  # (K, K): the fit's hat matrix
    f = np.stack(flows).astype(np.float32)  # (K, h, w, 2)
    fitted = np.tensordot(proj.astype(np.float32), f, axes=(1, 0))
    return [np.ascontiguousarray(x) for x in fitted]


def fusion_for(options: RestoreOptions) -> TemporalFusion:
    """The fusion of ``--fuse``: ``auto`` = ``DEFAULT_RADIUS`` weighed by how coarsely each face
    was coded; N = radius N for every face (0: off)."""
    if options.fuse == "auto":
        return TemporalFusion(DEFAULT_RADIUS, auto=True)
    return TemporalFusion(options.fuse)


def _luma8(rgb: np.ndarray) -> np.ndarray:
    """(h, w, 3) float in [0, 1] -> (h, w) uint8 BT.601 luma, for the flow."""
    y = rgb @ LUMA
    return np.ascontiguousarray(np.clip(np.rint(y * 255.0), 0, 255).astype(np.uint8))


def fuse_plans(plans: Iterable[FramePlan], fusion: TemporalFusion,
               needed: Callable[[FramePlan], bool] | None = None) -> Iterator[FramePlan]:
    """The plans in order, each frame's image fused with its neighbours' (a delay of
    ``fusion.radius`` frames; the stream's first and last frames use the neighbours they have).
    ``needed``: asked as each frame leaves; a frame it refuses leaves unfused (the analysis pass
    fuses only the frames that can pin a track)."""
    r = fusion.radius
    if r == 0:
        yield from plans
        return
    window: deque[FramePlan] = deque(maxlen=2 * r + 1)
    centre = 0  # position in ``window`` of the next plan to yield

    def emit() -> FramePlan:
        p = window[centre]
        if needed is not None and not needed(p):
            return p
        image = fusion.fuse([q.frame.image for q in window], [q.faces for q in window], centre)
        return p if image is p.frame.image else replace(p, frame=replace(p.frame, image=image))

    for plan in plans:
        if len(window) == window.maxlen:
            window.popleft()
            centre -= 1
        window.append(plan)
        if len(window) - 1 - centre >= r:  # the next plan has its r successors
            yield emit()
            centre += 1
    while centre < len(window):
        yield emit()
        centre += 1
