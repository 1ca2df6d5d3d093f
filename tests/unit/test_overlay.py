"""Preview overlay drawing, mask outlines and --at time parsing (no model, no video)."""

from __future__ import annotations

import numpy as np
import pytest

from rmmvideo.errors import UserError
from rmmvideo.video.preview import (
    OUTLINE_COLOUR,
    PreviewFace,
    draw_overlay,
    mask_outline,
    parse_timestamp,
    track_colour,
)


def _disk(h: int, w: int, cx: float, cy: float, r: float) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    return ((xx - cx) ** 2 + (yy - cy) ** 2 <= r * r).astype(np.float32)


def test_mask_outline_is_the_inner_boundary() -> None:
    alpha = _disk(40, 50, 25, 20, 10)
    edge = mask_outline(alpha)
    inside = alpha >= 0.5
    assert edge.any()
    assert not (edge & ~inside).any()  # on the mask, never outside it
    # every edge pixel has a 4-neighbour outside the mask, every other inside pixel has none
    pad = np.pad(inside, 1)
    touches_out = inside & ~(pad[:-2, 1:-1] & pad[2:, 1:-1] & pad[1:-1, :-2] & pad[1:-1, 2:])
    assert np.array_equal(edge, touches_out)
    thick = mask_outline(alpha, width=3)
    assert thick.sum() > edge.sum() and not (thick & ~inside).any() and (thick >= edge).all()


def test_mask_outline_of_soft_mask_follows_the_level() -> None:
    _yy, xx = np.mgrid[0:30, 0:30]
    ramp = (xx / 29.0).astype(np.float32)  # 0 at the left, 1 at the right
    edge = mask_outline(ramp, level=0.5)
    cols = np.unique(np.nonzero(edge)[1])
    # left boundary of x >= 14.5 is column 15; right image border is not an outline (no outside pixel there)
    assert 15 in cols
    assert set(cols.tolist()) <= {15, 29} and edge[:, 15].all()


def test_draw_overlay_draws_box_label_and_outline_without_touching_input() -> None:
    img = np.full((120, 160, 3), 40, np.uint8)
    alpha = _disk(120, 160, 80, 60, 25)
    quad = np.array([[40.0, 20.0], [120.0, 20.0], [120.0, 100.0], [40.0, 100.0]])
    face = PreviewFace(track_id=3, detected=True, quad=quad, box=np.array([40.0, 20.0, 120.0, 100.0]), alpha=alpha)
    before = img.copy()
    out = draw_overlay(img, [face])
    assert np.array_equal(img, before)  # input untouched
    assert out.shape == img.shape and out.dtype == np.uint8
    colour = np.array(track_colour(3), np.uint8)
    # box sides in the track colour (mid-points of the left and bottom edges)
    assert np.array_equal(out[60, 40], colour) and np.array_equal(out[100, 80], colour)
    # mask outline in the outline colour exactly on the disk's boundary (away from the box/label)
    edge = mask_outline(alpha)
    ys, xs = np.nonzero(edge)
    far = (np.abs(xs - 40) > 2) & (np.abs(xs - 120) > 2) & (np.abs(ys - 20) > 2) & (np.abs(ys - 100) > 2) & (ys > 30)
    assert far.sum() > 20
    assert (out[ys[far], xs[far]] == np.array(OUTLINE_COLOUR, np.uint8)).all()
    # the disk's interior and the far background keep their pixels
    assert np.array_equal(out[60, 80], before[60, 80]) and np.array_equal(out[115, 5], before[115, 5])
    # a label was drawn above the box: coloured pixels in the band above y=20 near x=40
    band = out[:20, 40:100]
    assert (band != before[:20, 40:100]).any(axis=-1).sum() > 30


def test_draw_overlay_label_goes_below_when_no_room_above_and_colours_differ_per_track() -> None:
    img = np.zeros((80, 100, 3), np.uint8)
    quad = np.array([[10.0, 0.0], [50.0, 0.0], [50.0, 40.0], [10.0, 40.0]])
    f0 = PreviewFace(0, True, quad, np.array([10.0, 0.0, 50.0, 40.0]))
    f1 = PreviewFace(1, False, quad + [45.0, 0.0], np.array([55.0, 0.0, 95.0, 40.0]))
    out = draw_overlay(img, [f0, f1])
    assert track_colour(0) != track_colour(1)
    below = out[41:60]
    assert (below == np.array(track_colour(0), np.uint8)).all(-1).any()
    assert (below == np.array(track_colour(1), np.uint8)).all(-1).any()


def test_draw_overlay_rejects_bad_input() -> None:
    with pytest.raises(ValueError):
        draw_overlay(np.zeros((10, 10), np.uint8), [])
    f = PreviewFace(0, True, np.zeros((4, 2)), np.zeros(4), alpha=np.zeros((5, 5), np.float32))
    with pytest.raises(ValueError):
        draw_overlay(np.zeros((10, 10, 3), np.uint8), [f])


@pytest.mark.parametrize("text, seconds", [
    ("12", 12.0), ("12.5", 12.5), (".25", 0.25), ("01:02", 62.0), ("1:02.250", 62.25),
    ("00:00:01.500", 1.5), ("1:00:00", 3600.0), ("0", 0.0), (" 3.0 ", 3.0), ("90", 90.0),
])
def test_parse_timestamp(text: str, seconds: float) -> None:
    assert parse_timestamp(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "-1", "1:60", "1:61:00", "abc", "1::2", "1:2:3:4", "12s"])
def test_parse_timestamp_rejects(text: str) -> None:
    with pytest.raises(UserError):
        parse_timestamp(text)
