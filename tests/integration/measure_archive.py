"""Numbers behind issue 17's targets, on the synthetic archive clips (`archive_clips`):

    OMP_NUM_THREADS=1 python -m tests.integration.measure_archive [OUT_DIR]

Prints, for each clip: faces found by the pipeline's tracker in the frames as decoded before
(stored geometry, no deinterlacing) and after (the `auto` view), the comb energy of the restored
output relative to the restored progressive twin, the landmark error of the restored anamorphic
clip against its square-pixel source, and the cost of the idet scan.
"""

from __future__ import annotations

import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import numpy as np

from tests.conftest import SHARED_DATA
from tests.integration import archive_clips as clips


def _face_share(path: Path, comps, view) -> float:
    from rmmvideo.video.io import decode_frames
    from rmmvideo.video.options import RestoreOptions
    from rmmvideo.video.pipeline import make_tracker, plan_frames

    plans = list(plan_frames(decode_frames(path, view=view), make_tracker(comps.detector, RestoreOptions())))
    return sum(bool(p.faces) for p in plans) / len(plans)


def main(out: Path) -> None:
    from rmmvideo.video.archive import plan_view, scan_fields
    from rmmvideo.video.detect import DlibDetector
    from rmmvideo.video.io import probe
    from rmmvideo.video.options import RestoreOptions, build_components
    from rmmvideo.video.pipeline import restore_video

    src = SHARED_DATA / "videos" / clips.SOURCE
    comps = build_components(RestoreOptions(quiet=True))
    opts = {"scale": 1.0, "quiet": True, "preset": "ultrafast", "crf": 12}

    def restore(path: Path, name: str, **kw: object) -> list[np.ndarray]:
        restore_video(path, out / name, RestoreOptions(**(opts | kw)), components=comps)
        return clips.decode_all(out / name)[0]

    inter, prog, _ = clips.interlaced_576i(src, out)
    ana, display = clips.anamorphic_480(src, out)
    dv, _ = clips.dv_pal(src, out)
    squashed = out / "squashed_853x481.mp4"  # a square clip stored at 853x481, SAR 481:853
    clips.write_video(squashed, None, "libx264", [clips.resize(f, 853, 481) for f in clips.source_frames(src, 45)],
                      Fraction(30), sar=Fraction(481, 853), pix_fmt="yuv444p")
    for path in (inter, ana, dv, squashed):
        info = probe(path)
        t = time.perf_counter()
        scan = scan_fields(path)
        dt = time.perf_counter() - t
        raw = _face_share(path, comps, None)
        fixed = _face_share(path, comps, plan_view(info, "auto", scan=scan))
        print(f"{path.name}: {info.width}x{info.height} SAR {info.sar}; {scan.line()} ({dt:.2f} s); "
              f"faces found in {raw:.0%} of frames as stored, {fixed:.0%} with the auto view")
    for scale in (1.0, 2.0):  # at 2x, measured on the output box-averaged back to 576 lines
        def comb(frames: list[np.ndarray]) -> float:
            return clips.comb_energy([clips.box_resize(f, 720, 576) for f in frames])

        e_ref = comb(restore(prog, f"prog_x{scale:g}.mp4", scale=scale))
        for mode in ("auto", "off"):
            e = comb(restore(inter, f"inter_{mode}_x{scale:g}.mp4", deinterlace=mode, scale=scale))
            print(f"576i restored at x{scale:g}, deinterlace {mode}: comb energy {e / e_ref:.2f}x the "
                  f"progressive twin's")
    det = DlibDetector()
    for sar in ("square", "keep"):
        frames = restore(ana, f"ana_{sar}.mp4", scale=2.0, sar=sar)
        h, w = frames[0].shape[:2]
        if sar == "keep":  # back to square pixels for the comparison
            frames = [clips.resize(f, w * 8 // 9, h) for f in frames]
            w = w * 8 // 9
        errs = []
        for g, r in zip(det.detect(frames[::2]), det.detect(display[::2])):
            if g and r:
                r_out = r[0].landmarks * (w / 640.0)
                iod = np.linalg.norm(r_out[36:42].mean(0) - r_out[42:48].mean(0))
                errs.append(np.linalg.norm(g[0].landmarks - r_out, axis=1).mean() / iod)
        print(f"anamorphic --sar {sar}: landmarks vs the square source {np.mean(errs):.3f} x inter-ocular "
              f"distance (mean of {len(errs)} frames)")
    stored = clips.decode_all(ana)[0]  # shown with square pixels, as if the SAR were ignored
    errs = []
    for g, r in zip(det.detect(stored[::2]), det.detect(display[::2])):
        if g and r:
            r_out = r[0].landmarks + np.array([40.0, 0.0])  # same height, centred in 720 columns
            iod = np.linalg.norm(r_out[36:42].mean(0) - r_out[42:48].mean(0))
            errs.append(np.linalg.norm(g[0].landmarks - r_out, axis=1).mean() / iod)
    print(f"anamorphic with the SAR ignored (stored pixels shown square): {np.mean(errs):.3f} x inter-ocular distance")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp(prefix="archive-")))
