"""The coordinator with the plain upscale engine: isolation, report, resume rules, Ray absent."""

from __future__ import annotations

import io
import json
import sys
from dataclasses import replace

import pytest
from _batch_clips import audio_packets, make_clip

from rmmvideo.batch.media import scan_video
from rmmvideo.batch.runner import BatchConfig, run_batch
from rmmvideo.batch.state import STATE_NAME, BatchState
from rmmvideo.errors import UserError
from rmmvideo.video.options import RestoreOptions

OPTS = RestoreOptions(scale=1.0, preset="ultrafast", crf=23)


def _run(inputs, out, **kw):
    cfg = BatchConfig(out_dir=out, engine="upscale", options=OPTS, quiet=True, **kw)
    buf = io.StringIO()
    outcome = run_batch([str(i) for i in inputs], cfg, out=buf)
    return outcome, buf.getvalue()


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    d = tmp_path_factory.mktemp("in")
    (d / "sub").mkdir()
    make_clip(d / "a.mp4", frames=30, gop=10)
    make_clip(d / "sub" / "b.mkv", frames=20, gop=10, audio=False, preset="ultrafast")
    (d / "broken.mp4").write_bytes((d / "a.mp4").read_bytes()[:3000])
    return d


def test_batch_isolates_failure_reports_and_resumes(tmp_path, inputs):
    out = tmp_path / "out"
    outcome, text = _run([inputs / "a.mp4", inputs / "sub", inputs / "broken.mp4"], out, jobs=2)
    by = {r.input.split("/")[-1]: r for r in outcome.results}
    assert by["broken.mp4"].status == "failed" and by["broken.mp4"].error
    assert by["a.mp4"].status == "done" and by["a.mp4"].frames == 30
    assert by["b.mkv"].status == "done" and by["b.mkv"].frames == 20
    assert outcome.failed == 1
    assert any(line.startswith("FAILED") and "broken.mp4" in line for line in text.splitlines())
    assert "1 failed" in text
    rep = json.loads((out / "report.json").read_text())
    assert [r["status"] for r in rep["results"]] == ["done", "done", "failed"]
    assert {"status", "frames", "faces", "tracks", "seconds", "error"} <= set(rep["results"][0])
    assert scan_video(out / "a.mp4").frames == 30 and scan_video(out / "b.mkv").frames == 20
    assert audio_packets(out / "a.mp4") == audio_packets(inputs / "a.mp4")
    st = BatchState.load(out / STATE_NAME)
    assert st.jobs["a.mp4"].status == "done" and st.jobs["broken.mp4"].status == "failed"
    assert not (out / ".rmmbatch").exists() or not any((out / ".rmmbatch").iterdir())

    # re-run: finished outputs verified and skipped (same inode and mtime), broken one retried
    before = {k: ((out / k).stat().st_ino, (out / k).stat().st_mtime_ns) for k in ("a.mp4", "b.mkv")}
    outcome2, _ = _run([inputs / "a.mp4", inputs / "sub", inputs / "broken.mp4"], out, jobs=1)
    assert [r.status for r in outcome2.results] == ["skipped", "skipped", "failed"]
    assert before == {k: ((out / k).stat().st_ino, (out / k).stat().st_mtime_ns) for k in ("a.mp4", "b.mkv")}

    # a damaged output is redone; a leftover temp file of a killed run is removed
    (out / "a.mp4").write_bytes((out / "a.mp4").read_bytes()[:2000])
    (out / ".a.partial-deadbeef.mp4").write_bytes(b"junk")
    outcome3, _ = _run([inputs / "a.mp4"], out)
    assert outcome3.results[0].status == "done" and scan_video(out / "a.mp4").frames == 30
    assert not (out / ".a.partial-deadbeef.mp4").exists()

    # other options: redone
    ino = (out / "a.mp4").stat().st_ino
    cfg = BatchConfig(out_dir=out, engine="upscale", options=replace(OPTS, crf=30), quiet=True)
    outcome4 = run_batch([str(inputs / "a.mp4")], cfg, out=io.StringIO())
    assert outcome4.results[0].status == "done" and (out / "a.mp4").stat().st_ino != ino


def test_segmented_file_equals_single_pass(tmp_path, inputs):
    """Lossless encode: the segmented + joined output decodes to the very same frames."""
    from _batch_clips import decoded

    opts = replace(OPTS, crf=0)
    one = run_batch([str(inputs / "a.mp4")], BatchConfig(out_dir=tmp_path / "one", engine="upscale",
                    options=opts, quiet=True, segment_seconds=0), out=io.StringIO())
    seg = run_batch([str(inputs / "a.mp4")], BatchConfig(out_dir=tmp_path / "seg", engine="upscale",
                    options=opts, quiet=True, segment_seconds=0.4, jobs=2), out=io.StringIO())
    assert one.results[0].status == seg.results[0].status == "done"
    assert seg.stats["tasks"] == 1 + 3 + 1  # prepare, 3 segments (cuts at 0.4 s and 0.8 s keyframes), join
    a, b = decoded(tmp_path / "one" / "a.mp4"), decoded(tmp_path / "seg" / "a.mp4")
    assert [p for p, _ in a] == [p for p, _ in b] == [p for p, _ in decoded(inputs / "a.mp4")]
    assert all((x == y).all() for (_, x), (_, y) in zip(a, b))
    assert audio_packets(tmp_path / "seg" / "a.mp4") == audio_packets(inputs / "a.mp4")


def test_ray_missing_gives_install_hint(tmp_path, inputs, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    with pytest.raises(UserError, match=r"pip install 'rmmvideo\[ray\]'"):
        _run([inputs / "a.mp4"], tmp_path / "out", ray="auto")


def test_no_videos_is_user_error(tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "x.txt").write_text("x")
    with pytest.raises(UserError, match="no video files"):
        _run([tmp_path / "in"], tmp_path / "out")


def test_bad_options_stop_before_work_and_bad_manifest_cells_fail_one_file(tmp_path, inputs):
    with pytest.raises(UserError, match="weights file not found"):
        run_batch([str(inputs / "a.mp4")], BatchConfig(out_dir=tmp_path / "o1", engine="rmm",
                  options=RestoreOptions(weights=str(tmp_path / "none.safetensors"))), out=io.StringIO())
    with pytest.raises(UserError, match="crf"):
        run_batch([str(inputs / "a.mp4")], BatchConfig(out_dir=tmp_path / "o2", engine="upscale",
                  options=replace(OPTS, crf=99)), out=io.StringIO())
    assert not (tmp_path / "o1").exists() and not (tmp_path / "o2").exists()
    (tmp_path / "m.csv").write_text(f"path,crf\n{inputs / 'a.mp4'},99\n{inputs / 'sub' / 'b.mkv'},\n")
    outcome, text = _run([tmp_path / "m.csv"], tmp_path / "o3")
    assert [r.status for r in outcome.results] == ["failed", "done"]
    assert "crf" in outcome.results[0].error and "FAILED" in text


def test_second_batch_on_same_dir_is_refused(tmp_path, inputs):
    fcntl = pytest.importorskip("fcntl")
    out = tmp_path / "out"
    out.mkdir()
    with open(out / ".batch.lock", "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)  # as a running coordinator holds it
        with pytest.raises(UserError, match="another rmmvideo batch is running"):
            _run([inputs / "a.mp4"], out)
    assert not (out / "a.mp4").exists()


def test_changed_input_is_redone(tmp_path, inputs):
    import os
    import shutil

    src = tmp_path / "in.mp4"
    shutil.copy(inputs / "a.mp4", src)
    out = tmp_path / "out"
    assert _run([src], out)[0].results[0].status == "done"
    st = src.stat()
    os.utime(src, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # touched: maybe replaced
    assert _run([src], out)[0].results[0].status == "done"
    assert _run([src], out)[0].results[0].status == "skipped"


def test_cli_batch_reports_unreadable_media_and_exits_1(tmp_path, inputs, capsys):
    """A truncated .mp4 and a text file named .mp4 in a folder: both failed in report.json with
    their reasons, exit code 1 (0 only when every file is done)."""
    from rmmvideo.cli.main import main

    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "a.mp4").write_bytes((inputs / "a.mp4").read_bytes())
    (folder / "cut.mp4").write_bytes((inputs / "a.mp4").read_bytes()[:3000])
    (folder / ".mp4").write_text("this is text\n")
    (folder / "readme.txt").write_text("not media")
    out = tmp_path / "out"
    args = ["batch", str(folder), "--out", str(out), "--engine", "upscale", "--scale", "1", "--preset", "ultrafast",
            "--quiet"]
    assert main(args) == 1
    rep = json.loads((out / "report.json").read_text())
    by = {r["input"].split("/")[-1]: r for r in rep["results"]}
    assert set(by) == {"a.mp4", "cut.mp4", ".mp4"}
    assert by["a.mp4"]["status"] == "done"
    assert by["cut.mp4"]["status"] == by[".mp4"]["status"] == "failed"
    assert by["cut.mp4"]["error"] and by[".mp4"]["error"]
    assert rep["failed"] == 2
    (folder / "cut.mp4").unlink()
    (folder / ".mp4").unlink()
    assert main(args) == 0  # everything done (a.mp4 verified and skipped)
    capsys.readouterr()
    assert main(["batch", str(folder), "--out", str(out), "--jobs", "0"]) == 2  # usage error
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--jobs" in err and "out of range" in err


def test_upscale_engine_keeps_damaged_input_or_fails_it(tmp_path):
    """Mid-stream damage with the plain upscale engine: warn (default) keeps every decodable
    frame and flags the file; on_damage="error" fails it and writes nothing."""
    from test_damage import damage_keyframe

    clip = make_clip(tmp_path / "ok.mp4", frames=60, gop=10, audio=False)
    (tmp_path / "in").mkdir()
    damage_keyframe(clip, tmp_path / "in" / "d.mp4", 30)
    outcome, _ = _run([tmp_path / "in" / "d.mp4"], tmp_path / "out")
    r = outcome.results[0]
    assert r.status == "done" and "undecodable" in (r.damage or "")
    kept = scan_video(tmp_path / "out" / "d.mp4").frames
    assert 40 < kept < 60 and r.frames == kept
    cfg = BatchConfig(out_dir=tmp_path / "out2", engine="upscale", options=replace(OPTS, on_damage="error"), quiet=True)
    failed = run_batch([str(tmp_path / "in" / "d.mp4")], cfg, out=io.StringIO()).results[0]
    assert failed.status == "failed" and "undecodable" in failed.error
    assert not (tmp_path / "out2" / "d.mp4").exists()


def test_batch_takes_every_run_option_with_its_default(capsys):
    """`rmmvideo batch --help` lists every option of `rmmvideo run` but run's single-file ones
    (input, -o, --max-frames, --overwrite), each with run's default."""
    import argparse

    from rmmvideo.cli import batch, run
    from rmmvideo.cli.main import main

    def options(mod) -> dict[str, argparse.Action]:
        p = argparse.ArgumentParser()
        mod.add_arguments(p)
        return {s: a for a in p._actions for s in a.option_strings}

    run_opts, batch_opts = options(run), options(batch)
    wanted = set(run_opts) - {"-h", "--help", "-o", "--output", "--max-frames", "--overwrite"}
    assert {"--parser", "--models-dir", "--temporal", "--detect-every", "--bit-depth"} <= wanted
    assert wanted - set(batch_opts) == set()
    assert {o: batch_opts[o].default for o in wanted} == {o: run_opts[o].default for o in wanted}
    assert main(["batch", "--help"]) == 0
    text = capsys.readouterr().out
    assert [o for o in sorted(wanted) if o not in text] == []


def test_per_run_options_in_batch(tmp_path, inputs):
    """--threads N sets each local worker's threads (0: cores / jobs); threads and quiet do not
    change the state fingerprint, so they keep finished files."""
    out = tmp_path / "out"
    outcome, _ = _run([inputs / "a.mp4"], out)
    assert outcome.stats["threads_per_worker"] >= 1
    cfg = BatchConfig(out_dir=out, engine="upscale", options=replace(OPTS, threads=3, quiet=True), quiet=True)
    again = run_batch([str(inputs / "a.mp4")], cfg, out=io.StringIO())
    assert again.results[0].status == "skipped"
    (out / "a.mp4").unlink()
    again = run_batch([str(inputs / "a.mp4")], cfg, out=io.StringIO())
    assert again.results[0].status == "done" and again.stats["threads_per_worker"] == 3
    # the pool's initializer sets each worker's torch threads to that share
    from concurrent.futures import ProcessPoolExecutor

    import torch

    from rmmvideo.batch.backends import worker_context
    from rmmvideo.batch.tasks import init_worker

    with ProcessPoolExecutor(1, mp_context=worker_context(3), initializer=init_worker, initargs=(3, None)) as pool:
        assert pool.submit(torch.get_num_threads).result() == 3


def test_cli_batch_bit_depth_reaches_upscale_engine_and_field_rate_is_refused(tmp_path, inputs, capsys):
    """--bit-depth (an encode option) is used by the upscale engine too; --deinterlace field
    (double rate) is a one-line error before any work: batch's checks count one frame per frame."""
    import av

    from rmmvideo.cli.main import main

    out = tmp_path / "out"
    base = ["batch", str(inputs / "a.mp4"), "--out", str(out), "--engine", "upscale", "--scale", "1",
            "--preset", "ultrafast", "--quiet"]
    assert main([*base, "--bit-depth", "10"]) == 0
    with av.open(str(out / "a.mp4")) as c:
        assert c.streams.video[0].codec_context.pix_fmt == "yuv420p10le"
    assert scan_video(out / "a.mp4").frames == 30
    capsys.readouterr()
    assert main([*base, "--deinterlace", "field"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--deinterlace field" in err
