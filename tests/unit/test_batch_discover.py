"""Input discovery: folders by probing, explicit files, manifests, mirrored output names."""

from __future__ import annotations

import shutil

import pytest
from _batch_clips import make_clip

from rmmvideo.batch.discover import discover, output_suffix
from rmmvideo.errors import UserError


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return make_clip(tmp_path_factory.mktemp("clip") / "c.mp4", frames=10, audio=False, preset="ultrafast")


def test_folder_recursive_by_probing_not_extension(tmp_path, clip):
    root = tmp_path / "in"
    (root / "a" / "b").mkdir(parents=True)
    shutil.copy(clip, root / "x.mp4")
    shutil.copy(clip, root / "a" / "b" / "film.dat")  # a video with an odd extension
    (root / "readme.txt").write_text("hello")  # not media: ignored
    shutil.copy(clip, root / "a" / ".hidden.mp4")  # hidden: skipped
    (root / "a" / ".film.partial-ab12-99-0123abcd.mp4").write_bytes(b"half")  # a temp file: skipped
    jobs = discover([root], tmp_path / "out")
    assert [j.key for j in jobs] == ["x.mp4", "a/b/film.mp4"]
    assert all(j.error is None for j in jobs)
    assert jobs[1].output == tmp_path / "out" / "a" / "b" / "film.mp4"


def test_folder_media_that_fails_to_probe_is_a_failed_job(tmp_path, clip):
    """Looks like media (extension or magic bytes) but cannot be probed: a failed job with the
    reason, never silently dropped."""
    root = tmp_path / "in"
    root.mkdir()
    shutil.copy(clip, root / "good.mp4")
    (root / "cut.mp4").write_bytes(clip.read_bytes()[:3000])  # truncated (index at the end: unreadable)
    (root / ".mp4").write_text("a text file named .mp4")
    (root / "notes.mp4").write_text("not a video")
    (root / "tape.bin").write_bytes(clip.read_bytes()[:2000])  # MP4 magic bytes, odd extension
    (root / "readme.txt").write_text("hello")
    (root / "photo.jpg").write_bytes(b"\xff\xd8\xff\xe0" + b"\x00" * 100)
    jobs = {j.input.name: j for j in discover([root], tmp_path / "out")}
    assert set(jobs) == {"good.mp4", "cut.mp4", ".mp4", "notes.mp4", "tape.bin"}
    assert jobs["good.mp4"].error is None
    for name in ("cut.mp4", ".mp4", "notes.mp4", "tape.bin"):
        assert jobs[name].error and "\n" not in jobs[name].error, name


def test_explicit_non_video_is_a_failed_job(tmp_path, clip):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00" * 1000)
    jobs = discover([clip, bad], tmp_path / "out")
    assert jobs[0].error is None
    assert jobs[1].error and "bad.mp4" in jobs[1].error


def test_missing_input_on_command_line_is_user_error(tmp_path):
    with pytest.raises(UserError, match="input not found"):
        discover([tmp_path / "nope.mp4"], tmp_path / "out")


def test_manifests_txt_and_csv_with_options(tmp_path, clip):
    (tmp_path / "v").mkdir()
    shutil.copy(clip, tmp_path / "v" / "one.mkv")
    shutil.copy(clip, tmp_path / "v" / "two.mov")
    (tmp_path / "list.txt").write_text("# reels\nv/one.mkv\n\nv/missing.mp4\n")
    jobs = discover([tmp_path / "list.txt"], tmp_path / "out")
    assert [j.key for j in jobs] == ["v/one.mkv", "v/missing.mp4"]  # relative entries mirrored
    assert jobs[1].error is not None and "not found" in jobs[1].error
    two = (tmp_path / "v" / "two.mov").resolve()
    (tmp_path / "list.csv").write_text(f"path,scale,crf,output\nv/one.mkv,4,20,\n{two},,,reels/r2.mov\n")
    jobs = discover([tmp_path / "list.csv"], tmp_path / "out")
    assert jobs[0].options == {"scale": 4.0, "crf": 20} and jobs[1].options == {}
    assert [j.key for j in jobs] == ["v/one.mkv", "reels/r2.mov"]
    (tmp_path / "abs.txt").write_text(f"{two}\n")
    assert [j.key for j in discover([tmp_path / "abs.txt"], tmp_path / "out")] == ["two.mov"]
    (tmp_path / "bad.csv").write_text("path,colour\nv/one.mkv,red\n")
    with pytest.raises(UserError, match="unknown option column"):
        discover([tmp_path / "bad.csv"], tmp_path / "out")
    (tmp_path / "nopath.csv").write_text("file\nv/one.mkv\n")
    with pytest.raises(UserError, match="no 'path' column"):
        discover([tmp_path / "nopath.csv"], tmp_path / "out")


def test_csv_option_columns_are_every_run_option_typed_as_on_the_command_line(tmp_path, clip):
    """Columns named by RestoreOptions fields (or their flags' spelling), cells parsed and
    range-checked as the flags; a bad cell fails its own file only; per-run options are no columns."""
    for name in ("a", "b", "c", "d"):
        shutil.copy(clip, tmp_path / f"{name}.mp4")
    (tmp_path / "m.csv").write_text(
        "path,detect-every,temporal,strength,bit_depth,models_dir,on_damage,crf\n"
        "a.mp4,3,frame,0.5,10,models,fail,\n"
        "b.mp4,,,auto,,,,20\n"
        "c.mp4,0,,,,,,\n"  # out of the flag's range 1..1000
        "d.mp4,,sideways,,,,,\n")  # not one of the flag's choices
    a, b, c, d = discover([tmp_path / "m.csv"], tmp_path / "out")
    assert a.options == {"detect_every": 3, "temporal": "frame", "strength": 0.5, "bit_depth": 10,
                         "models_dir": "models", "on_damage": "error"} and a.error is None
    assert b.options == {"strength": "auto", "crf": 20} and b.error is None
    assert c.error is not None and "detect-every" in c.error and "out of range" in c.error and "1..1000" in c.error
    assert d.error is not None and "sideways" in d.error and "track" in d.error
    for column in ("threads", "quiet", "max_frames"):
        (tmp_path / "x.csv").write_text(f"path,{column}\na.mp4,1\n")
        with pytest.raises(UserError, match=f"unknown option column '{column}'"):
            discover([tmp_path / "x.csv"], tmp_path / "out")


def test_out_dir_inside_input_is_skipped_and_inputs_protected(tmp_path, clip):
    shutil.copy(clip, tmp_path / "a.mp4")
    (tmp_path / "out").mkdir()
    shutil.copy(clip, tmp_path / "out" / "a.mp4")  # an earlier output: not an input
    assert [j.key for j in discover([tmp_path], tmp_path / "out")] == ["a.mp4"]
    with pytest.raises(UserError, match="overwrite the input"):
        discover([tmp_path / "a.mp4"], tmp_path)


def test_collisions_and_duplicates(tmp_path, clip):
    (tmp_path / "x").mkdir()
    (tmp_path / "y").mkdir()
    shutil.copy(clip, tmp_path / "x" / "a.mp4")
    shutil.copy(clip, tmp_path / "y" / "a.mp4")
    with pytest.raises(UserError, match="same output"):
        discover([tmp_path / "x" / "a.mp4", tmp_path / "y" / "a.mp4"], tmp_path / "out")
    jobs = discover([tmp_path / "x" / "a.mp4", tmp_path / "x"], tmp_path / "out")
    assert len(jobs) == 1


def test_output_suffix_choice():
    from pathlib import Path

    assert output_suffix(Path("a.MKV")) == ".mkv"
    assert output_suffix(Path("a.mov")) == ".mov"
    assert output_suffix(Path("a.webm")) == ".mkv"
    assert output_suffix(Path("a.avi")) == ".mp4"
    assert output_suffix(Path("a")) == ".mp4"
