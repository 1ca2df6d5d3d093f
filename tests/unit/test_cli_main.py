"""The CLI entry (rmmvideo.cli.main): every subcommand is registered, and the process-wide
torch thread count is set there from --threads, never by library calls."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from rmmvideo.cli.main import SUBCOMMANDS, build_parser, main


def test_every_subcommand_is_registered() -> None:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    assert list(sub.choices) == list(SUBCOMMANDS)


def test_threads_are_set_by_the_cli_not_by_the_library(tmp_path: Path, tiny_weights: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    from rmmvideo.video.options import RestoreOptions, build_components
    from rmmvideo.video.stills import build_still_components

    before = torch.get_num_threads()
    other = 2 if before == 1 else 1
    try:
        opts = RestoreOptions(weights=str(tiny_weights), detector="mtcnn", threads=other)
        build_components(opts)
        build_still_components(opts, need_detector=False)
        assert torch.get_num_threads() == before  # library calls leave the process setting alone
        assert main(["eval-video", str(tmp_path / "missing.mp4"), "--threads", str(other)]) == 2
        assert "clip not found" in capsys.readouterr().err
        assert torch.get_num_threads() == other
    finally:
        torch.set_num_threads(before)
