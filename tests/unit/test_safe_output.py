"""The one atomic writer: temp names with the pid, stale-temp cleanup, file modes, OS errors."""

from __future__ import annotations

import errno
import os
import stat
import subprocess
import sys

import pytest

from rmmvideo.errors import UserError
from rmmvideo.video import safe_output
from rmmvideo.video.safe_output import (
    AtomicOutput,
    atomic_output,
    discard_pending,
    remove_stale_temps,
    temp_path_for,
)


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def _names(folder) -> list[str]:
    return sorted(x.name for x in folder.iterdir())


def test_temp_name_carries_pid_and_keeps_extension(tmp_path):
    t = temp_path_for(tmp_path / "clip.mp4")
    assert t.parent == tmp_path and t.name.startswith(".clip.partial-") and t.suffix == ".mp4"
    assert f"-{os.getpid()}-" in t.name


def test_stale_temps_of_dead_processes_are_removed(tmp_path):
    target = tmp_path / "clip.mp4"
    live = temp_path_for(target)  # this process: alive
    dead = tmp_path / live.name.replace(f"-{os.getpid()}-", f"-{_dead_pid()}-")
    parent_alive = tmp_path / live.name.replace(f"-{os.getpid()}-", f"-{os.getppid()}-")
    other_host = tmp_path / f".clip.partial-zzzz-{_dead_pid()}-0123abcd.mp4"
    legacy = tmp_path / ".clip.partial-0123abcd.mp4"  # older name without a pid: unknown owner
    other_target = tmp_path / dead.name.replace(".clip.", ".clip2.")
    for p in (live, dead, parent_alive, other_host, legacy, other_target):
        p.write_bytes(b"x")
    assert remove_stale_temps(target) == [dead]
    assert not dead.exists()
    assert all(p.exists() for p in (live, parent_alive, other_host, legacy, other_target))
    # a new writer of the same target does it on its own
    dead2 = tmp_path / live.name.replace(f"-{os.getpid()}-", f"-{_dead_pid()}-")
    dead2.write_bytes(b"x")
    AtomicOutput(target).discard()
    assert not dead2.exists()


@pytest.mark.parametrize("umask, want", [(0o022, 0o644), (0o027, 0o640)])
def test_committed_file_mode_follows_umask(tmp_path, umask, want):
    old = os.umask(umask)
    try:
        target = tmp_path / "img.png"
        with atomic_output(target) as tmp:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT, 0o600)  # as mkstemp would
            os.write(fd, b"png")
            os.close(fd)
    finally:
        os.umask(old)
    assert stat.S_IMODE(target.stat().st_mode) == want


@pytest.mark.parametrize("code, words", [(errno.ENOSPC, "no space left"), (errno.EROFS, "read-only"),
                                          (errno.EACCES, "permission denied")])
def test_os_error_while_writing_names_the_target(tmp_path, code, words):
    target = tmp_path / "out.mp4"
    with pytest.raises(UserError) as ei, atomic_output(target) as tmp:
        tmp.write_bytes(b"half")
        raise OSError(code, os.strerror(code), str(tmp))
    msg = str(ei.value)
    assert str(target) in msg and words in msg and "partial" not in msg
    assert _names(tmp_path) == []


@pytest.mark.parametrize("code, words", [(errno.EACCES, "permission denied"), (errno.EROFS, "read-only")])
def test_os_error_at_rename_names_the_target(tmp_path, monkeypatch, code, words):
    target = tmp_path / "out.png"

    def refuse(src, dst):
        raise OSError(code, os.strerror(code), str(src), None, str(dst))

    monkeypatch.setattr(safe_output.os, "replace", refuse)
    with pytest.raises(UserError, match=words) as ei, atomic_output(target) as tmp:
        tmp.write_bytes(b"png")
    assert str(target) in str(ei.value) and "partial" not in str(ei.value)
    assert _names(tmp_path) == []


def test_input_errors_are_not_relabelled(tmp_path):
    with pytest.raises(FileNotFoundError), atomic_output(tmp_path / "o.txt"):
        (tmp_path / "missing-input.txt").read_text()


def test_overwrite_refused_when_asked(tmp_path):
    target = tmp_path / "o.txt"
    target.write_text("keep")
    with pytest.raises(UserError, match="--overwrite"):
        AtomicOutput(target, overwrite=False)
    assert target.read_text() == "keep"
    with atomic_output(target) as tmp:  # the default replaces
        tmp.write_text("new")
    assert target.read_text() == "new"


def test_folder_output(tmp_path):
    target = tmp_path / "packed"
    with atomic_output(target, directory=True) as tmp:
        tmp.mkdir()
        (tmp / "a.jpg").write_bytes(b"a")
    assert (target / "a.jpg").read_bytes() == b"a"
    with pytest.raises(RuntimeError), atomic_output(tmp_path / "other", directory=True) as tmp:
        tmp.mkdir()
        (tmp / "b.jpg").write_bytes(b"b")
        raise RuntimeError("stop")
    assert _names(tmp_path) == ["packed"]


def test_target_of_temp(tmp_path):
    from rmmvideo.video.safe_output import target_of_temp

    target = tmp_path / "clip.rmm-x2.mp4"
    assert target_of_temp(temp_path_for(target)) == target
    assert target_of_temp(tmp_path / "plain.mp4") == tmp_path / "plain.mp4"


def test_cli_last_resort_os_error_names_the_user_file(tmp_path, monkeypatch, capsys):
    """An OS error that escaped every mapping still prints one line with the user's file name."""
    from rmmvideo.cli import main as cli_main

    temp = temp_path_for(tmp_path / "out.mp4")

    def boom(_args):
        raise OSError(errno.EIO, "Input/output error", str(temp))

    parser = cli_main.build_parser()
    monkeypatch.setattr(cli_main, "build_parser", lambda: parser)
    parser._subparsers._group_actions[0].choices["info"].set_defaults(_run=boom)
    assert cli_main.main(["info"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"rmmvideo: error: Input/output error: {tmp_path / 'out.mp4'}"


def test_pending_temporaries_are_listed_until_committed_or_discarded(tmp_path):
    done, dropped, stray = (AtomicOutput(tmp_path / n) for n in ("done.txt", "dropped.txt", "stray.txt"))
    folder = AtomicOutput(tmp_path / "d", directory=True)
    for out in (done, dropped, stray):
        out.temp.write_text("x")
    folder.temp.mkdir()
    (folder.temp / "inner.txt").write_text("x")
    done.commit()
    dropped.discard()
    # `stray` and `folder` are what a signal before a `with` leaves behind
    ours = [p for p in discard_pending() if p.parent == tmp_path]  # other tests' may be listed too
    assert ours == sorted([stray.temp, folder.temp])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["done.txt"]
    assert discard_pending() == []
