"""eval-video's standard error of FED x from paired face-frames, and its use in the tables."""

from __future__ import annotations

import math

import numpy as np
import pytest

from rmmvideo.eval.video import (
    ClipResult,
    MethodScore,
    _relative,
    fed_ratio_se,
    fed_worse_beyond_noise,
    to_markdown,
)


def _score(name: str, fed: list[float]) -> MethodScore:
    return MethodScore(name, 30.0, 0.9, float(np.mean(fed)), 1.0, 1.0, 1.0, 0.1, fed_frames=fed)


def test_se_of_paired_differences() -> None:
    base = [0.10, 0.20, 0.30, 0.40]
    diff = np.array([0.01, -0.01, 0.03, 0.01])
    got = fed_ratio_se(list(np.array(base) + diff), base)
    assert got == pytest.approx(diff.std(ddof=1) / 2.0 / 0.25)
    # a constant shift is resolved exactly, whatever the faces' own spread
    assert fed_ratio_se([b + 0.005 for b in base], base) == pytest.approx(0.0, abs=1e-12)
    # fewer than two pairs, or unpaired lists, have no standard error
    assert math.isnan(fed_ratio_se([0.1], [0.1]))
    assert math.isnan(fed_ratio_se([0.1, 0.2, 0.3], [0.1, 0.2]))


def test_worse_beyond_noise_needs_more_than_two_standard_errors() -> None:
    base = _score("bicubic", [0.10, 0.20, 0.30, 0.40])
    shifted = _score("rmm s=1", [0.105, 0.205, 0.305, 0.405])  # 2 % worse on every face
    noisy = _score("rmm s=0", [0.13, 0.17, 0.33, 0.37])  # same mean, +-0.03 per face
    slight = _score("rmm auto", [0.14, 0.17, 0.33, 0.37])  # 1 % worse on the mean, within noise
    for m in (shifted, noisy, slight):
        _relative(m, base)
    assert shifted.fed_ratio > 1 and shifted.fed_se == pytest.approx(0.0, abs=1e-12) and fed_worse_beyond_noise(shifted)
    assert noisy.fed_ratio == pytest.approx(1.0) and not fed_worse_beyond_noise(noisy)
    assert slight.fed_ratio == pytest.approx(1.01) and not fed_worse_beyond_noise(slight)
    assert slight.fed_se > 0.005


def test_markdown_shows_the_se_and_counts_losses_beyond_it() -> None:
    base = _score("bicubic", [0.10, 0.20, 0.30, 0.40])
    methods = [base, _score("rmm s=1", [0.105, 0.205, 0.305, 0.405])]
    _relative(methods[1], base)
    md = to_markdown([ClipResult("a.mp4", 4, frames=20, face_frames=20, methods=methods)])
    row = next(line for line in md.splitlines() if "| rmm s=1 |" in line and "a.mp4" in line)
    assert "1.020 ±0.000" in row
    mean_row = next(line for line in md.splitlines() if line.startswith("| x4 | rmm s=1 |"))
    assert mean_row.rstrip().endswith("| 0 / 1 / 0 | 1 |")
