"""Turn the batch's INPUTS (files, folders, manifests) into jobs with mirrored output names.

- A folder is walked recursively; every file that PyAV can open as video is a job (found by
  probing, not by extension). A file that looks like media (a video/audio extension, or the
  magic bytes of a media container) but cannot be probed is a failed job with the reason, so
  it shows in the report and the batch exits 1; other files (text, images, ...) are ignored.
  Hidden folders, hidden files (except one named only by a media extension, e.g. ``.mp4``),
  this project's temporary files and the output folder itself are skipped.
- A file named explicitly (on the command line or in a manifest) is a job even when it is not a
  video: the job is then failed with the reason, so the user sees it in the report.
- A manifest is a `.txt` (one path per line, `#` comments) or a `.csv` with a `path` column,
  optional per-file option columns and an optional `output` column (output path relative to
  DIR). An option column is named by its RestoreOptions field (scale, crf, detect_every, ...;
  `detect-every` works too; any restoration option but the per-run quiet and threads) and its
  cells are parsed and range-checked as the command-line flag (`rmmvideo.cli.run.option_from_text`);
  an empty cell keeps the batch's value. An unknown column is an error for the whole manifest, a
  bad cell fails its file only. Relative paths are relative to the manifest's folder. Manifest
  entries may be files or folders.

Output names: DIR / <path relative to the folder given; for a manifest entry the relative path
as written (or its `output` cell); else the file name> with the extension chosen by
`output_suffix`. Inputs are never written: an output that would land on an
input is a UserError.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rmmvideo.batch.state import PER_RUN_OPTIONS
from rmmvideo.errors import UserError

MANIFEST_SUFFIXES = (".txt", ".csv")
# containers the output keeps; anything else is written as .mp4 (webm is Matroska: .mkv)
KEEP_SUFFIXES = (".mp4", ".mov", ".m4v", ".mkv")


@dataclass
class Job:
    """One input file and where its output goes.

    key: the output path relative to DIR (POSIX), unique in a batch; used as the state key.
    options: per-file overrides of RestoreOptions fields (from a CSV manifest), already typed;
        the runner applies them with ``dataclasses.replace``.
    error: set when the input is known bad before any work (not a video, missing, a bad
        manifest cell).
    """

    input: Path
    output: Path
    key: str
    options: dict[str, Any] = field(default_factory=dict)
    error: str | None = None


def output_suffix(input_path: Path) -> str:
    """Output container: the input's for mp4/mov/m4v/mkv, .mkv for webm, else .mp4."""
    s = input_path.suffix.lower()
    if s in KEEP_SUFFIXES:
        return s
    if s == ".webm":
        return ".mkv"
    return ".mp4"


MEDIA_SUFFIXES = frozenset((
    ".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".wmv", ".asf", ".flv", ".f4v", ".mpg",
    ".mpeg", ".m2v", ".vob", ".ts", ".mts", ".m2ts", ".3gp", ".3g2", ".mxf", ".dv", ".ogv", ".ogm",
    ".rm", ".rmvb", ".divx", ".y4m", ".nut", ".h264", ".264", ".hevc", ".265",
))


def looks_like_media(path: Path) -> bool:
    """True if `path` has a video file extension (its whole name counts: ``.mp4``) or starts
    with the magic bytes of a video container (MP4/MOV but not M4A audio, Matroska/WebM, AVI,
    MPEG-PS/TS, FLV, ASF, MXF). Audio-only files are not videos: they are ignored."""
    name = path.name.lower()
    if path.suffix.lower() in MEDIA_SUFFIXES or name in MEDIA_SUFFIXES:
        return True
    try:
        with open(path, "rb") as f:
            head = f.read(16)
    except OSError:
        return False
    return (
        (head[4:8] in (b"ftyp", b"moov", b"mdat", b"free", b"wide", b"skip") and head[8:11] not in (b"M4A", b"M4B"))
        or head.startswith((b"\x1a\x45\xdf\xa3", b"FLV", b"\x00\x00\x01\xba", b"\x00\x00\x01\xb3",
                            b"\x30\x26\xb2\x75\x8e\x66\xcf\x11", b"\x06\x0e\x2b\x34"))
        or (head.startswith(b"RIFF") and head[8:12] == b"AVI ")
        or (len(head) >= 1 and head[0] == 0x47 and _ts_sync(path))
    )


def _ts_sync(path: Path) -> bool:
    """MPEG-TS: the sync byte 0x47 every 188 bytes (first 4 packets)."""
    try:
        with open(path, "rb") as f:
            data = f.read(188 * 4)
    except OSError:
        return False
    return len(data) >= 188 * 2 and all(data[i] == 0x47 for i in range(0, len(data) - 187, 188))


def _skipped_file(name: str) -> bool:
    """Hidden files are skipped, except one named only by a media extension (``.mp4``); this
    project's temporary files (``.NAME.partial-...``) and AppleDouble files (``._NAME``) always."""
    if not name.startswith("."):
        return False
    return ".partial" in name or name.startswith("._") or name.lower() not in MEDIA_SUFFIXES


def is_video(path: Path) -> str | None:
    """None if `path` is a video PyAV can decode, else a one-line reason."""
    from rmmvideo.video.probe import probe

    try:
        probe(path)
    except UserError as e:
        return str(e)
    return None


def manifest_columns() -> list[str]:
    """The option columns a CSV manifest may have: every restoration option but the per-run ones."""
    from rmmvideo.cli.run import restore_option_actions

    return [name for name, a in restore_option_actions().items() if a.option_strings and name not in PER_RUN_OPTIONS]


def parse_options(cells: dict[str, str], where: str) -> tuple[dict[str, Any], str | None]:
    """Typed per-file options from a manifest row's option cells (empty cells left out), and the
    first bad cell's one-line reason (None if all are good). An unknown column is a UserError."""
    from rmmvideo.cli.run import option_from_text

    known = manifest_columns()
    options: dict[str, Any] = {}
    error = None
    for column, text in cells.items():
        name = column.replace("-", "_")
        if name not in known:
            raise UserError(f"{where}: unknown option column {column!r} (known: path, output, {', '.join(known)})")
        if text == "":
            continue
        try:
            options[name] = option_from_text(name, text)
        except ValueError as e:
            error = error or f"{where}: bad value {text!r} for {column}: {e}"
    return options, error


def read_manifest(path: Path) -> list[tuple[Path, Path | None, dict[str, Any], str | None]]:
    """Entries of a .txt or .csv manifest: (path, output name relative to DIR or None, options,
    error: a bad option cell, or None)."""
    base = path.parent
    entries: list[tuple[Path, Path | None, dict[str, Any], str | None]] = []
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"cannot read manifest {path}: {e}") from None
    if path.suffix.lower() == ".txt":
        for line in text.splitlines():
            line = line.strip()
            if line and not line.startswith("#"):
                entries.append((base / Path(line).expanduser(), _mirror(Path(line)), {}, None))
        return entries
    reader = csv.DictReader(text.splitlines())
    cols = [c.strip() for c in (reader.fieldnames or [])]
    if "path" not in cols:
        raise UserError(f"manifest {path} has no 'path' column (columns: {', '.join(cols) or 'none'})")
    for n, row in enumerate(reader, start=2):
        row = {(k or "").strip(): (v or "").strip() for k, v in row.items()}
        if not row.get("path"):
            continue
        opts, error = parse_options({k: v for k, v in row.items() if k not in ("path", "output")}, f"{path}:{n}")
        rel = _mirror(Path(row["path"]))
        if row.get("output"):
            rel = _mirror(Path(row["output"]))
            if rel is None:
                raise UserError(f"{path}:{n}: output must be a relative path inside DIR, got {row['output']!r}")
        entries.append((base / Path(row["path"]).expanduser(), rel, opts, error))
    return entries


def _mirror(p: Path) -> Path | None:
    """`p` as an output name under DIR if it is relative and stays inside, else None."""
    if p.is_absolute() or ".." in p.parts or str(p).startswith("~"):
        return None
    return p


def _walk(folder: Path, skip: Path) -> Iterable[Path]:
    for root, dirs, files in os.walk(folder):
        r = Path(root)
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and not _same(r / d, skip))
        for f in sorted(files):
            if not _skipped_file(f):
                yield r / f


def _same(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve()
    except OSError:
        return False


def discover(inputs: Sequence[str | os.PathLike], out_dir: str | os.PathLike) -> list[Job]:
    """Jobs for INPUTS, in the order given (folders sorted), duplicates removed.

    Raises UserError for a missing path on the command line, a bad manifest, two inputs mapping
    to the same output name, or an output that would overwrite an input.
    """
    out = Path(out_dir)
    jobs: list[Job] = []
    seen: set[Path] = set()

    def add(file: Path, rel: Path, options: dict[str, Any], explicit: bool, error: str | None) -> None:
        real = file.resolve()
        if real in seen:
            return
        reason = is_video(file) if file.is_file() else f"input not found: {file}"
        if reason is not None and not explicit and not looks_like_media(file):
            return  # a file inside a folder that is not media at all (text, image, ...): ignored
        seen.add(real)
        rel_out = rel.with_suffix(output_suffix(file))
        jobs.append(Job(input=file, output=out / rel_out, key=rel_out.as_posix(), options=dict(options),
                        error=error or reason))

    def add_path(p: Path, options: dict[str, Any], from_manifest: bool, rel: Path | None = None,
                 error: str | None = None) -> None:
        if p.is_dir():
            for f in _walk(p, out):
                add(f, (rel or Path()) / f.relative_to(p), options, explicit=False, error=error)
        elif p.suffix.lower() in MANIFEST_SUFFIXES and p.is_file() and not from_manifest:
            for entry, entry_rel, opts, entry_error in read_manifest(p):
                add_path(entry, opts, from_manifest=True, rel=entry_rel, error=entry_error)
        elif p.exists() or from_manifest:
            add(p, rel or Path(p.name), options, explicit=True, error=error)
        else:
            raise UserError(f"input not found: {p}")

    for raw in inputs:
        add_path(Path(raw).expanduser(), {}, from_manifest=False)

    by_key: dict[str, Job] = {}
    for j in jobs:
        if j.key in by_key:
            raise UserError(f"two inputs map to the same output {j.key}: {by_key[j.key].input} and {j.input}")
        by_key[j.key] = j
        if j.output.exists() and _same(j.output, j.input):
            raise UserError(f"output would overwrite the input: {j.input}")
    return jobs
