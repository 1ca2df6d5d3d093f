"""BiSeNet face parser (rmmvideo.models.face_parser): shapes, checkpoint layout, strict loading."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from rmmvideo.errors import UserError
from rmmvideo.models.face_parser import N_CLASSES, BiSeNet, load_face_parser, normalize


def test_forward_shapes_on_random_weights():
    torch.manual_seed(0)
    net = BiSeNet().eval()
    x = normalize(torch.rand(2, 3, 64, 48))
    with torch.no_grad():
        out = net(x)
        out_aux = net(x, aux=True)
    assert out.shape == (2, N_CLASSES, 64, 48)
    assert len(out_aux) == 3 and all(o.shape == (2, N_CLASSES, 64, 48) for o in out_aux)
    torch.testing.assert_close(out_aux[0], out)
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        net(torch.zeros(1, 1, 32, 32))


def test_state_dict_layout_matches_public_checkpoint():
    sd = BiSeNet().state_dict()
    keys = list(sd)
    # Key names and order of zllrunning/face-parsing.PyTorch's model.py + resnet.py (79999_iter.pth).
    assert keys[0] == "cp.resnet.conv1.weight"
    expected = {
        "cp.resnet.conv1.weight": (64, 3, 7, 7),
        "cp.resnet.bn1.running_var": (64,),
        "cp.resnet.layer1.0.conv1.weight": (64, 64, 3, 3),
        "cp.resnet.layer2.0.downsample.0.weight": (128, 64, 1, 1),
        "cp.resnet.layer2.0.downsample.1.weight": (128,),
        "cp.resnet.layer4.1.bn2.bias": (512,),
        "cp.arm16.conv.conv.weight": (128, 256, 3, 3),
        "cp.arm16.conv_atten.weight": (128, 128, 1, 1),
        "cp.arm16.bn_atten.running_mean": (128,),
        "cp.arm32.conv.conv.weight": (128, 512, 3, 3),
        "cp.conv_head32.conv.weight": (128, 128, 3, 3),
        "cp.conv_head16.bn.weight": (128,),
        "cp.conv_avg.conv.weight": (128, 512, 1, 1),
        "ffm.convblk.conv.weight": (256, 256, 1, 1),
        "ffm.conv1.weight": (64, 256, 1, 1),
        "ffm.conv2.weight": (256, 64, 1, 1),
        "conv_out.conv.conv.weight": (256, 256, 3, 3),
        "conv_out.conv_out.weight": (19, 256, 1, 1),
        "conv_out16.conv.conv.weight": (64, 128, 3, 3),
        "conv_out16.conv_out.weight": (19, 64, 1, 1),
        "conv_out32.conv_out.weight": (19, 64, 1, 1),
    }
    for k, shape in expected.items():
        assert tuple(sd[k].shape) == shape, k
    assert not any(k.startswith("sp.") for k in keys)  # the checkpoint has no spatial-path module
    n_params = sum(p.numel() for p in BiSeNet().parameters())
    assert 13_000_000 < n_params < 13_600_000


def test_load_strict_round_trip(tmp_path: Path):
    torch.manual_seed(1)
    net = BiSeNet().eval()
    # As saved by a DataParallel training run of an older torch: prefix, no batch counters.
    sd = {"module." + k: v for k, v in net.state_dict().items() if not k.endswith("num_batches_tracked")}
    path = tmp_path / "79999_iter.pth"
    torch.save(sd, path)
    loaded = load_face_parser(path)
    assert not loaded.training
    x = normalize(torch.rand(1, 3, 32, 32))
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), net(x))


def test_load_errors(tmp_path: Path):
    with pytest.raises(UserError, match="not found"):
        load_face_parser(tmp_path / "nope.pth")
    bad = BiSeNet(n_classes=11).state_dict()
    torch.save(bad, tmp_path / "bad.pth")
    with pytest.raises(UserError, match="wrong shape"):
        load_face_parser(tmp_path / "bad.pth")
    sd = BiSeNet().state_dict()
    sd.pop("ffm.conv1.weight")
    sd["extra.weight"] = torch.zeros(1)
    torch.save(sd, tmp_path / "partial.pth")
    with pytest.raises(UserError, match="missing: ffm.conv1.weight.*unexpected: extra.weight"):
        load_face_parser(tmp_path / "partial.pth")
    (tmp_path / "junk.pth").write_bytes(b"junk")
    with pytest.raises(UserError, match="cannot read"):
        load_face_parser(tmp_path / "junk.pth")
