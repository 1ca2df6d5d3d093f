"""`rmmvideo batch` end to end on the shared clips: isolation, kill -9 + resume, segments, Ray.

Machinery tests use the plain upscale engine (real decode/upscale/encode work, seconds per
file); the restoration engine's segmented-vs-single check is in test_batch_rmm.py.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import av
import pytest

from rmmvideo.batch.media import scan_video, verify_output
from rmmvideo.batch.runner import BatchConfig, run_batch
from rmmvideo.cli.main import main
from rmmvideo.video.options import RestoreOptions

REPO = Path(__file__).resolve().parents[2]
VIDEOS = REPO.parent / "shared" / "data" / "videos"
pytestmark = pytest.mark.skipif(not VIDEOS.is_dir(), reason=f"shared clips not found at {VIDEOS}")

VFR = "talking_700sq_vfr_audio.mp4"  # 135 frames, VFR, keyframes at frames 0 and 100
REAL = "talking_844sq_25fps_audio.mp4"  # 125 frames, 25 fps, B-frames, audio


def cut(name: str, dst: Path, frames: int, scale: float) -> Path:
    """A short, small copy of a shared clip made with the I/O layer (audio copied whole)."""
    from rmmvideo.video.io import transcode_upscale

    transcode_upscale(VIDEOS / name, dst, scale, max_frames=frames, preset="ultrafast")
    return dst


def frames_pts(path: Path) -> list[int]:
    with av.open(str(path)) as c:
        return [int(f.pts) for f in c.decode(video=0)]


def audio(path: Path) -> list[bytes]:
    with av.open(str(path)) as c:
        return [bytes(p) for p in c.demux(c.streams.audio[0]) if p.size] if c.streams.audio else []


def assert_valid(inp: Path, out: Path) -> None:
    s = scan_video(inp)
    tol = (s.end - s.start) / max(1, s.frames - 1)
    assert verify_output(out, s.frames, s.start, s.end, tol) is None
    assert frames_pts(out) == frames_pts(inp)
    assert audio(out) == audio(inp)


@pytest.mark.slow
def test_batch_over_shared_clips_with_broken_files(tmp_path, capsys):
    src = tmp_path / "in"
    (src / "sub").mkdir(parents=True)
    cut("landscape_1280x720_30fps_audio.mp4", src / "landscape.mp4", 24, 0.25)
    cut("portrait_720x1280_30fps_noaudio.mp4", src / "sub" / "portrait.mov", 20, 0.25)
    shutil.copy(VIDEOS / REAL, src / "sub" / "real.mp4")
    data = (VIDEOS / "landscape_1280x720_30fps_audio.mp4").read_bytes()
    (src / "truncated.mp4").write_bytes(data[: len(data) // 2])  # index lists 282 frames, 136 there
    (src / "notes.txt").write_text("not a video: ignored in a folder")
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(os.urandom(4096))  # named explicitly: reported failed
    out = tmp_path / "out"
    rc = main(["batch", str(src), str(junk), "--out", str(out), "--engine", "upscale", "--scale", "1",
               "--preset", "ultrafast", "--jobs", "2", "--quiet"])
    text = capsys.readouterr().out
    assert rc == 1
    rep = json.loads((out / "report.json").read_text())
    status = {Path(r["input"]).name: r for r in rep["results"]}
    assert set(status) == {"landscape.mp4", "portrait.mov", "real.mp4", "truncated.mp4", "junk.mp4"}
    # cut short: every frame that is there is kept (--on-damage warn, the default) and reported
    assert status["truncated.mp4"]["status"] == "done" and "truncated" in status["truncated.mp4"]["damage"]
    assert status["truncated.mp4"]["frames"] == 136 and scan_video(out / "truncated.mp4").frames == 136
    assert status["junk.mp4"]["status"] == "failed"
    fails = [ln for ln in text.splitlines() if ln.startswith("FAILED")]
    assert len(fails) == 1 and all(len(ln.splitlines()) == 1 for ln in fails)
    for name, rel in (("landscape.mp4", "landscape.mp4"), ("portrait.mov", "sub/portrait.mov"),
                      ("real.mp4", "sub/real.mp4")):
        assert status[name]["status"] == "done"
        assert_valid(src / rel, out / rel)
    assert status["real.mp4"]["frames"] == 125
    # --on-damage fail: the file cut short fails, nothing is written for it
    out2 = tmp_path / "out2"
    assert main(["batch", str(src / "truncated.mp4"), "--out", str(out2), "--engine", "upscale", "--scale", "1",
                 "--preset", "ultrafast", "--on-damage", "fail", "--quiet"]) == 1
    rep2 = json.loads((out2 / "report.json").read_text())
    assert rep2["results"][0]["status"] == "failed" and "truncated" in rep2["results"][0]["error"]
    assert not (out2 / "truncated.mp4").exists()
    assert "files" in text and "ETA" in text


def descendants(pid: int) -> set[int]:
    """Pids of all processes below `pid` (Linux /proc)."""
    children: dict[int, list[int]] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(d.name))
    out, todo = set(), [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.add(c)
            todo.append(c)
    return out


def alive(pid: int) -> bool:
    try:
        state = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _batch_cmd(inputs: list[Path], out: Path) -> list[str]:
    return [sys.executable, "-m", "rmmvideo", "batch", *map(str, inputs), "--out", str(out), "--engine",
            "upscale", "--scale", "1", "--preset", "veryfast", "--jobs", "1", "--segment-seconds", "3", "--quiet"]


@pytest.mark.slow
def test_resume_after_kill_9(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    first = cut(REAL, src / "first.mp4", 30, 0.5)
    shutil.copy(VIDEOS / VFR, src / "long.mp4")  # split in 2 segments at the keyframe at ~4.5 s
    last = cut(REAL, src / "last.mp4", 20, 0.5)
    out = tmp_path / "out"
    inputs = [first, src / "long.mp4", last]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(_batch_cmd(inputs, out), stdout=subprocess.PIPE, text=True, env=env, cwd=REPO)
    seen = []
    try:
        for line in proc.stdout:
            seen.append(line)
            if "long.mp4 seg 1/2:" in line and "frames in" in line:
                workers = descendants(proc.pid)  # fork server, pool workers, resource tracker
                proc.send_signal(signal.SIGKILL)  # kill -9 the coordinator mid-file
                break
    finally:
        proc.kill()
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL, "".join(seen)
    # every file at a final name is complete; the interrupted one is not there yet
    assert (out / "first.mp4").exists() and not (out / "long.mp4").exists()
    assert_valid(first, out / "first.mp4")
    st = json.loads((out / "batch-state.json").read_text())["jobs"]
    assert st["first.mp4"]["status"] == "done" and st["long.mp4"]["status"] == "running"
    assert st["long.mp4"]["segment_status"]["0"]["status"] == "done"
    before = (out / "first.mp4").stat()
    deadline = time.monotonic() + 10
    while any(alive(p) for p in workers) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert workers and not any(alive(p) for p in workers)  # no orphan keeps working

    res = subprocess.run(_batch_cmd(inputs, out), capture_output=True, text=True, env=env, cwd=REPO, timeout=600)
    assert res.returncode == 0, res.stdout + res.stderr
    after = (out / "first.mp4").stat()
    assert (before.st_ino, before.st_mtime_ns) == (after.st_ino, after.st_mtime_ns)  # not redone
    assert "long.mp4 seg 1/2: started" not in res.stdout  # the finished segment was reused
    assert "long.mp4 seg 2/2: started" in res.stdout
    rep = {Path(r["input"]).name: r["status"] for r in json.loads((out / "report.json").read_text())["results"]}
    assert rep == {"first.mp4": "skipped", "long.mp4": "done", "last.mp4": "done"}
    for f in inputs:
        assert_valid(f, out / f.name)
    assert not [p for p in out.rglob(".*partial*")]
    assert not (out / ".rmmbatch").exists() or not any((out / ".rmmbatch").iterdir())


@pytest.mark.slow
def test_segmented_equals_single_process_on_vfr_clip(tmp_path):
    """Lossless encode: the two-segment run decodes to exactly the single-pass frames (VFR pts)."""
    opts = RestoreOptions(scale=1.0, preset="ultrafast", crf=0)
    runs = {}
    for name, seconds, jobs in (("single", 0.0, 1), ("segmented", 3.0, 2)):
        o = run_batch([str(VIDEOS / VFR)], BatchConfig(out_dir=tmp_path / name, jobs=jobs, engine="upscale",
                      options=opts, segment_seconds=seconds, quiet=True), out=io.StringIO())
        assert o.results[0].status == "done"
        runs[name] = o
    assert runs["segmented"].stats["tasks"] == 4  # prepare, 2 segments, join
    a, b = tmp_path / "single" / VFR, tmp_path / "segmented" / VFR
    assert_valid(VIDEOS / VFR, b)
    with av.open(str(a)) as ca, av.open(str(b)) as cb:
        for fa, fb in zip(ca.decode(video=0), cb.decode(video=0), strict=True):
            assert fa.pts == fb.pts
            assert (fa.to_ndarray(format="rgb24") == fb.to_ndarray(format="rgb24")).all()


@pytest.fixture
def local_ray(monkeypatch):
    ray = pytest.importorskip("ray", reason="Ray not installed (pip install 'rmmvideo[ray]')")
    home_ray = Path.home() / ".ray"
    had_home = home_ray.exists()
    tmp = Path(tempfile.mkdtemp(prefix="ray", dir="/tmp"))  # short: Ray's socket paths are limited
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")  # no token written to ~/.ray
    ray.init(num_cpus=2, _temp_dir=str(tmp), include_dashboard=False, log_to_driver=False)
    try:
        yield ray
    finally:
        ray.shutdown()
        shutil.rmtree(tmp, ignore_errors=True)
        if not had_home:
            shutil.rmtree(home_ray, ignore_errors=True)


@pytest.mark.slow
def test_ray_backend_local_instance(tmp_path, local_ray):
    src = tmp_path / "in"
    src.mkdir()
    a = cut(REAL, src / "a.mp4", 24, 0.5)
    shutil.copy(VIDEOS / VFR, src / "long.mp4")
    cfg = BatchConfig(out_dir=tmp_path / "out", jobs=0, ray="auto", engine="upscale",
                      options=RestoreOptions(scale=1.0, preset="ultrafast"), segment_seconds=3.0, quiet=True)
    o = run_batch([str(src)], cfg, out=io.StringIO())
    assert [r.status for r in o.results] == ["done", "done"]
    assert o.stats["backend"] == "ray" and o.stats["tasks"] == 2 + 4  # a: prepare+render; long: 4
    assert_valid(a, tmp_path / "out" / "a.mp4")
    assert_valid(src / "long.mp4", tmp_path / "out" / "long.mp4")
    assert o.stats["overhead_per_task_median_seconds"] < 1.0  # the mean includes Ray workers' start-up
    assert local_ray.is_initialized()  # an instance the caller started is left running
    o2 = run_batch([str(src)], cfg, out=io.StringIO())
    assert [r.status for r in o2.results] == ["skipped", "skipped"]
