"""rmmvideo.device.pick_device: the one device picker of training and the video commands."""

from __future__ import annotations

import pytest
import torch

from rmmvideo.device import pick_device
from rmmvideo.errors import UserError


def test_pick_device_names_and_errors() -> None:
    assert pick_device("cpu") == torch.device("cpu")
    assert pick_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(UserError, match="unknown device 'gpu0'"):
        pick_device("gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(UserError, match="CUDA is not available"):
            pick_device("cuda:1")
