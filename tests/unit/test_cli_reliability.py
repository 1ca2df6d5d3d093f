"""The command line under faults (issue 15): signals, stale temporaries, option ranges, OS
errors, overwriting, damaged input, file modes. Each test runs the real CLI (in-process `main`
or a real subprocess for signals) with the tiny test weights."""

from __future__ import annotations

import errno
import os
import signal
import stat
import subprocess
import sys
import threading
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from rmmvideo.cli.checks import check_memory, estimate_run_bytes
from rmmvideo.cli.main import main
from rmmvideo.errors import Terminated, UserError
from rmmvideo.video.io_decode import DamageReport, decode_frames
from rmmvideo.video.io_encode import VideoWriter

REPO = Path(__file__).resolve().parents[2]


def _run_args(clip: Path, out: Path, weights: Path, *extra: str) -> list[str]:
    return ["run", str(clip), "-o", str(out), "--weights", str(weights), "--detector", "dlib", "--quiet",
            "--preset", "ultrafast", "--threads", "1", *extra]


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    lines = [x for x in err.splitlines() if x.startswith("rmmvideo:")]
    assert len(lines) == 1, err
    return lines[0]


def _leftovers(folder: Path, keep: set[str]) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name not in keep)


def _video_pts(path: Path) -> list[int]:
    with av.open(str(path)) as c:
        vs = c.streams.video[0]
        return sorted(int(p.pts) for p in c.demux(vs) if p.size)


# ----------------------------------------------------------------------------- signals


def _start(clip: Path, out: Path, weights: Path) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    args = [sys.executable, "-m", "rmmvideo", *_run_args(clip, out, weights)]
    args[args.index("ultrafast")] = "veryslow"  # slow enough to be caught mid-run
    # SIGINT at its default in the child whatever launched pytest: a shell's background job
    # starts with SIGINT ignored, and the child would inherit that (rmmvideo then keeps running).
    return subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def _wait_for_temp(folder: Path, proc: subprocess.Popen, timeout: float = 60) -> Path:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        temps = [p for p in folder.iterdir() if ".partial-" in p.name]
        if temps and temps[0].stat().st_size > 0:
            return temps[0]
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    proc.kill()
    raise AssertionError("the run never started writing")


@pytest.fixture
def long_clip(make_clip) -> Path:
    return make_clip("long.mp4", width=320, height=240, frames=240, audio=True)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT])
def test_signal_stops_cleanly(long_clip, tiny_weights, sig):
    folder = long_clip.parent
    out = folder / "out.mp4"
    proc = _start(long_clip, out, tiny_weights)
    temp = _wait_for_temp(folder, proc)
    assert f"-{proc.pid}-" in temp.name  # the temporary file names its writer
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + sig, err
    assert _leftovers(folder, {"long.mp4"}) == []  # no output, no temporary file
    assert err.strip().splitlines()[-1].startswith("rmmvideo:")


@pytest.mark.parametrize("where", ["worker start", "before the with"])
def test_signal_in_the_writers_first_instants(make_clip, tiny_weights, monkeypatch, where):
    """A signal lands between bytecodes: also after the output file is created but before a
    `with` covers it (was a flaky leftover of test_signal_stops_cleanly under load)."""
    clip = make_clip("c.mp4", frames=3)
    if where == "worker start":
        real_start = threading.Thread.start

        def start(self: threading.Thread) -> None:
            if self.name == "rmmvideo-encode":
                raise Terminated(signal.SIGTERM)
            real_start(self)

        monkeypatch.setattr(threading.Thread, "start", start)
    else:
        def enter(self: VideoWriter) -> VideoWriter:
            assert self._atomic.temp.stat().st_size > 0  # the file exists
            raise Terminated(signal.SIGTERM)

        monkeypatch.setattr(VideoWriter, "__enter__", enter)
    assert main(_run_args(clip, clip.parent / "o.mp4", tiny_weights)) == 128 + signal.SIGTERM
    assert _leftovers(clip.parent, {"c.mp4"}) == []
    if where == "worker start":  # the writer stopped what it had started
        assert not [t for t in threading.enumerate() if t.name == "rmmvideo-encode"]


@pytest.mark.parametrize("at_frame", [1, 3])
def test_signal_whose_raise_was_swallowed_still_stops(make_clip, tiny_weights, monkeypatch, capsys, at_frame):
    """A signal whose Terminated is swallowed where it lands (a destructor or a gc callback:
    "Exception ignored in ...") still stops the run: at the next frame written (frame 1 of 3)
    or before the finished output is committed (the last frame). Before, the run finished and
    exited 0 (seen once in test_signal_stops_cleanly[SIGHUP])."""
    clip = make_clip("c.mp4", frames=3)
    real_submit = VideoWriter._submit
    calls = []

    def submit(self: VideoWriter, image: np.ndarray, pts: int) -> None:
        real_submit(self, image, pts)
        calls.append(pts)
        if len(calls) == at_frame:
            try:
                os.kill(os.getpid(), signal.SIGHUP)
                time.sleep(0.5)  # the handler runs here, in the main thread
            except Terminated:
                pass  # swallowed, as Python does in a destructor
    monkeypatch.setattr(VideoWriter, "_submit", submit)
    assert main(_run_args(clip, clip.parent / "o.mp4", tiny_weights)) == 128 + signal.SIGHUP
    assert len(calls) == at_frame  # no frame written after the signal
    assert _leftovers(clip.parent, {"c.mp4"}) == []
    assert capsys.readouterr().err.strip().splitlines()[-1] == "rmmvideo: stopped by SIGHUP"


def test_signal_turned_into_another_error_still_stops(make_clip, tiny_weights, monkeypatch, capsys):
    """A library that turns the signal's exception into its own error (torch's loader gave a
    ValueError, reported as "not a codec-artefact weights file") exits 128 + the signal."""
    import rmmvideo.models.weights as weights

    clip = make_clip("c.mp4", frames=3)

    def load(*_a: object, **_k: object) -> None:
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.5)
        except Terminated:
            raise UserError("not a weights file") from None
    monkeypatch.setattr(weights, "from_pretrained", load)
    assert main(_run_args(clip, clip.parent / "o.mp4", tiny_weights)) == 128 + signal.SIGTERM
    assert _leftovers(clip.parent, {"c.mp4"}) == []
    assert capsys.readouterr().err.strip().splitlines()[-1] == "rmmvideo: stopped by SIGTERM"


def test_sigkill_leftover_is_removed_by_the_next_run(long_clip, tiny_weights):
    folder = long_clip.parent
    out = folder / "out.mp4"
    proc = _start(long_clip, out, tiny_weights)
    temp = _wait_for_temp(folder, proc)
    proc.kill()
    proc.communicate(timeout=30)
    assert temp.exists() and not out.exists()  # SIGKILL cannot clean up
    other = folder / f".out.partial-zzzz-{os.getpid()}-0123abcd.mp4"  # not ours to remove
    other.write_bytes(b"x")
    assert main(_run_args(long_clip, out, tiny_weights, "--max-frames", "3")) == 0
    assert not temp.exists() and other.exists() and out.is_file()


# ----------------------------------------------------------------------------- option ranges


@pytest.mark.parametrize("extra, words", [
    (["--scale", "1e-9"], "--scale"), (["--scale", "17"], "--scale"), (["--scale", "nan"], "--scale"),
    (["--threads", "-3"], "--threads"), (["--crf", "52"], "--crf"), (["--detect-every", "0"], "--detect-every"),
    (["--batch-size", "0"], "--batch-size"), (["--max-frames", "0"], "--max-frames"), (["--seed", "-1"], "--seed"),
])
def test_out_of_range_options_are_one_line_usage_errors(make_clip, tiny_weights, tmp_path, capsys, extra, words):
    clip = make_clip("c.mp4", frames=3)
    out = tmp_path / "o.mp4"
    assert main(_run_args(clip, out, tiny_weights, *extra)) == 2
    line = _one_line_error(capsys)
    assert words in line and "out of range" in line or "expected" in line
    assert not out.exists()


def test_ranges_are_in_help(capsys):
    assert main(["run", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    for words in ("0.25..16", "0..1024", "0..51", "1..1000", "N >= 1"):
        assert words in text, words


def test_tiny_output_is_refused(make_clip, tiny_weights, tmp_path, capsys):
    clip = make_clip("c.mp4", width=64, height=48, frames=3)
    assert main(_run_args(clip, tmp_path / "o.mp4", tiny_weights, "--scale", "0.25")) == 2
    assert "16x12" in _one_line_error(capsys)
    assert not (tmp_path / "o.mp4").exists()


def test_memory_estimate_refuses_or_warns():
    need = estimate_run_bytes(8192, 8192, 8)
    assert 5 * 2**30 < need < 8 * 2**30  # --scale 16 of 512x512 was measured at 6.2 GB
    with pytest.raises(UserError, match="8192x8192 needs about .* GiB"):
        check_memory(8192, 8192, 8, available=4 * 2**30)
    assert "swapping" in check_memory(8192, 8192, 8, available=int(need / 0.8))
    assert check_memory(1024, 1024, 8, available=16 * 2**30) is None


# ----------------------------------------------------------------------------- outputs


def test_existing_output_needs_overwrite(make_clip, tiny_weights, tmp_path, capsys):
    clip = make_clip("c.mp4", frames=3)
    out = tmp_path / "o.mp4"
    out.write_bytes(b"precious")
    assert main(_run_args(clip, out, tiny_weights)) == 2
    assert "--overwrite" in _one_line_error(capsys) and out.read_bytes() == b"precious"
    assert main(_run_args(clip, out, tiny_weights, "--overwrite")) == 0
    assert _video_pts(out) == _video_pts(clip)


def test_output_is_a_folder(make_clip, tiny_weights, tmp_path, capsys):
    clip = make_clip("c.mp4", frames=3)
    (tmp_path / "dir.mp4").mkdir()
    assert main(_run_args(clip, tmp_path / "dir.mp4", tiny_weights)) == 2
    assert "is a folder" in _one_line_error(capsys)


@pytest.mark.parametrize("code, words", [(errno.ENOSPC, "no space left"), (errno.EIO, "input/output error")])
def test_os_error_while_encoding_names_the_output(make_clip, tiny_weights, tmp_path, capsys, monkeypatch,
                                                   code, words):
    """A full disk (or an I/O error) in the middle of the run: one line naming the user's path,
    never the temporary file; nothing is left behind."""
    clip = make_clip("c.mp4", frames=12)
    out = tmp_path / "o.mp4"
    real = VideoWriter._mux_video
    muxed = []

    def mux(self, packet):
        muxed.append(1)
        if len(muxed) > 3:
            raise av.error.OSError(code, os.strerror(code), str(self._atomic.temp))
        real(self, packet)

    monkeypatch.setattr(VideoWriter, "_mux_video", mux)
    assert main(_run_args(clip, out, tiny_weights)) == 2
    line = _one_line_error(capsys)
    assert str(out) in line and words in line and "partial" not in line, line
    assert _leftovers(tmp_path, {"c.mp4"}) == []


@pytest.mark.parametrize("code, words", [(errno.EACCES, "permission denied"), (errno.EROFS, "read-only")])
def test_os_error_creating_the_output_names_it(make_clip, tiny_weights, tmp_path, capsys, monkeypatch,
                                               code, words):
    clip = make_clip("c.mp4", frames=3)
    out = tmp_path / "o.mp4"
    from rmmvideo.video import io_encode

    real_open = io_encode.av.open

    def fake_open(file, mode="r", **kw):
        if mode == "w" and ".partial-" in str(file):
            cls = {errno.EACCES: av.error.PermissionError}.get(code, av.error.OSError)
            raise cls(code, os.strerror(code), str(file))
        return real_open(file, mode, **kw)

    monkeypatch.setattr(io_encode.av, "open", fake_open)
    assert main(_run_args(clip, out, tiny_weights)) == 2
    line = _one_line_error(capsys)
    assert str(out) in line and words in line and "partial" not in line, line
    assert _leftovers(tmp_path, {"c.mp4"}) == []


def test_real_read_only_folder(make_clip, tiny_weights, tmp_path, capsys):
    """A real read-only file system (a tmpfs mounted read-only; needs root)."""
    ro = tmp_path / "ro"
    ro.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(ro)],
                      capture_output=True, check=False).returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        clip = make_clip("c.mp4", frames=3)
        assert main(_run_args(clip, ro / "o.mp4", tiny_weights)) == 2
        line = _one_line_error(capsys)
        assert str(ro / "o.mp4") in line and "read-only" in line and "partial" not in line, line
    finally:
        subprocess.run(["umount", str(ro)], check=False)


def test_png_outputs_get_the_video_mode(tmp_path):
    from rmmvideo.video.stills import save_png

    old = os.umask(0o022)
    try:
        p = save_png(tmp_path / "a.png", np.zeros((4, 4, 3), np.uint8))
    finally:
        os.umask(old)
    assert stat.S_IMODE(p.stat().st_mode) == 0o644


# ----------------------------------------------------------------------------- damaged input


@pytest.fixture
def damaged_clip(make_clip, tmp_path) -> Path:
    from test_damage import damage_keyframe

    clip = make_clip("ok.mp4", width=128, height=96, frames=60, audio=True, options={"g": "10"},
                     container_options={"movflags": "faststart"})
    damage_keyframe(clip, tmp_path / "damaged.mp4", 30)
    return tmp_path / "damaged.mp4"


def test_damaged_input_kept_with_every_decodable_frame(damaged_clip, tiny_weights, tmp_path, capsys):
    out = tmp_path / "o.mp4"
    assert main(_run_args(damaged_clip, out, tiny_weights)) == 0  # --on-damage warn is the default
    report = DamageReport()
    expected = [f.pts for f in decode_frames(damaged_clip, on_damage="warn", damage=report)]
    assert 40 < len(expected) < 60
    assert _video_pts(out) == expected  # every decodable frame, each at its own pts
    err = capsys.readouterr().err
    assert f"damaged spans {report.spans_text()}" in err


def test_damaged_input_fails_early_with_on_damage_fail(damaged_clip, tiny_weights, tmp_path, capsys):
    out = tmp_path / "o.mp4"
    assert main(_run_args(damaged_clip, out, tiny_weights, "--on-damage", "fail")) == 2
    assert "undecodable" in _one_line_error(capsys)
    assert _leftovers(tmp_path, {"ok.mp4", "damaged.mp4"}) == []


def test_batch_sigterm_stops_its_workers_and_leaves_no_temporary(long_clip, tiny_weights, tmp_path):
    """SIGTERM to the batch coordinator: exit 143, the worker's task unwinds (its temporary
    output is removed) and the worker exits; the state file says the file is not done."""
    out = tmp_path / "bout"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "rmmvideo", "batch", str(long_clip), "--out", str(out), "--weights", str(tiny_weights),
         "--detector", "dlib", "--preset", "veryslow", "--segment-seconds", "0", "--quiet"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    def writing() -> bool:
        """The worker's temporary output has bytes (the state file's own temporary, renamed at any
        moment, is not what this waits for)."""
        for p in out.rglob("*") if out.is_dir() else []:
            if ".partial-" in p.name and not p.name.startswith(".batch-state"):
                try:
                    if p.stat().st_size > 0:
                        return True
                except FileNotFoundError:
                    pass
        return False

    t0 = time.monotonic()
    while not writing():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() - t0 < 90, "the batch never started writing"
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    t0 = time.monotonic()
    while [p for p in out.rglob("*") if ".partial-" in p.name] and time.monotonic() - t0 < 30:
        time.sleep(0.2)
    assert [p.name for p in out.rglob("*") if ".partial-" in p.name] == []
    assert not (out / "long.mp4").exists()


def test_batch_keeps_damaged_input_and_reports_the_spans(damaged_clip, tiny_weights, tmp_path, capsys):
    """`batch` (default --on-damage warn): the damaged file is done with every decodable frame,
    report.json names its damaged spans, and a second run verifies and skips it."""
    import json

    out = tmp_path / "bout"
    args = ["batch", str(damaged_clip), "--out", str(out), "--weights", str(tiny_weights), "--detector", "dlib",
            "--preset", "ultrafast", "--quiet"]
    assert main(args) == 0
    report = DamageReport()
    expected = [f.pts for f in decode_frames(damaged_clip, on_damage="warn", damage=report)]
    assert _video_pts(out / "damaged.mp4") == expected
    rep = json.loads((out / "report.json").read_text())
    row = rep["results"][0]
    assert row["status"] == "done" and report.spans_text() in row["damage"] and rep["damaged"] == 1
    assert main(args) == 0
    again = json.loads((out / "report.json").read_text())["results"][0]
    assert again["status"] == "skipped" and again["damage"] == row["damage"]
    capsys.readouterr()
    out2 = tmp_path / "bout2"
    assert main([*args[:3], str(out2), *args[4:], "--on-damage", "fail"]) == 1
    failed = json.loads((out2 / "report.json").read_text())["results"][0]
    assert failed["status"] == "failed" and "undecodable" in failed["error"]
    assert not (out2 / "damaged.mp4").exists()


def test_faces_refuses_existing_outputs_without_overwrite(make_clip, tiny_weights, tmp_path, capsys):
    from PIL import Image

    src = tmp_path / "photos"
    src.mkdir()
    Image.fromarray(np.full((64, 64, 3), 120, np.uint8)).save(src / "a.jpg")
    out = tmp_path / "out"
    out.mkdir()
    (out / "a.png").write_bytes(b"precious")
    args = ["faces", str(src), "-o", str(out), "--weights", str(tiny_weights), "--detector", "dlib", "--quiet"]
    assert main(args) == 2
    assert "--overwrite" in _one_line_error(capsys) and (out / "a.png").read_bytes() == b"precious"
    assert main([*args, "--overwrite"]) == 0
    assert Image.open(out / "a.png").size == (128, 128)
    assert stat.S_IMODE((out / "a.png").stat().st_mode) == 0o666 & ~_umask()


def _umask() -> int:
    m = os.umask(0o022)
    os.umask(m)
    return m


def test_frame_too_large_for_the_encoder_is_named_as_such(tmp_path):
    """libx264 refuses frames wider than 16384 px: a one-line error about the encoder and the
    size, not a hint about audio streams; nothing is left behind."""
    with pytest.raises(UserError) as e:
        VideoWriter(tmp_path / "o.mp4", width=16400, height=64, time_base=Fraction(1, 90000))
    msg = str(e.value)
    assert "libx264" in msg and "16400x64" in msg and "audio" not in msg and "\n" not in msg
    assert list(tmp_path.iterdir()) == []


def test_a_batch_workers_signal_is_recorded_too(monkeypatch):
    """The pool worker's handler is `errors.stop_for` as the CLI's is: a busy worker's signal is
    recorded, so a task whose raise was swallowed still stops at its next frame or commit."""
    import rmmvideo.batch.tasks as tasks
    from rmmvideo.errors import check_not_terminated, forget_termination, termination_received

    before = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        tasks._stop_on_termination()
        monkeypatch.setattr(tasks._BUSY, "is_set", lambda: True)
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.5)
        except Terminated:
            pass  # swallowed
        assert termination_received() == signal.SIGTERM
        with pytest.raises(Terminated):
            check_not_terminated()
    finally:
        forget_termination()
        for s, h in before.items():
            signal.signal(s, h)
