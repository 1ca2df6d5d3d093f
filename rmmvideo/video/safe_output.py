"""Write outputs safely: to a temporary file beside the target, renamed into place on success.

The one atomic writer of the project (videos, PNGs, reports, state, checkpoints, weights):

- On any exception (KeyboardInterrupt and the CLI's SIGTERM/SIGHUP included) the temporary file
  is removed and the target is left as it was: never a partial file at the target.
- Writing onto an input is refused.
- The temporary name is ``.STEM.partial-HOST-PID-RAND.SUFFIX`` (extension last, so tools that
  guess the format from the name still work). A run killed with SIGKILL cannot clean up; the
  next writer of the same target removes such files whose process (same host, by pid) is gone.
- A committed file gets mode ``0o666 & ~umask`` (0644 with the usual umask), whatever the
  library that wrote it used (mkstemp-style 0600 included), unless `mode` says otherwise.
- OS errors while writing are reported as one line naming the user's path, never the
  temporary file (`output_error`).
- A signal can interrupt the main thread between any two bytecodes, also where no `with` or
  `finally` covers a temporary yet (between a writer's constructor and its ``__enter__``), so
  every temporary not yet committed or discarded is also listed here, and the CLI removes them
  all when a command ends (`discard_pending`).
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import shutil
import socket
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from rmmvideo.errors import UserError, check_not_terminated

_TEMP_MARK = ".partial-"
_HOST = hashlib.sha1(socket.gethostname().encode()).hexdigest()[:4]
# This process's temporaries (file or folder) neither committed nor discarded yet.
_PENDING: set[Path] = set()

_OS_ERRORS: dict[int, str] = {
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.EROFS: "read-only file system",
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EFBIG: "file too large for this file system",
    errno.EISDIR: "is a folder, expected a file name",
    errno.ENOTDIR: "a part of the path is not a folder",
    errno.ENOENT: "its folder does not exist",
    errno.ENAMETOOLONG: "file name too long",
    errno.EIO: "input/output error on the device",
}


def output_error(e: OSError, target: str | os.PathLike) -> UserError:
    """A one-line UserError for an OS error met while writing `target` (the user's path).

    Example: ``cannot write out.mp4: no space left on the device (ENOSPC)``."""
    code = e.errno
    what = _OS_ERRORS.get(code) if code is not None else None
    if what is None:
        what = (e.strerror or type(e).__name__).strip().rstrip(".").lower()
    name = errno.errorcode.get(code, "") if code is not None else ""
    return UserError(f"cannot write {target}: {what}" + (f" ({name})" if name else ""))


def target_of_temp(path: str | os.PathLike) -> Path:
    """The target a temporary name of `temp_path_for` stands for (``.o.partial-H-P-R.mp4`` ->
    ``o.mp4``); any other path unchanged."""
    p = Path(path)
    m = re.fullmatch(r"\.(.+)" + re.escape(_TEMP_MARK) + r"[0-9a-z]+-\d+-[0-9a-f]{8}(.*)", p.name)
    return p.with_name(m.group(1) + m.group(2)) if m else p


def same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """True if `a` and `b` name the same file (same inode: symlinks and hard links included)."""
    pa, pb = Path(a), Path(b)
    try:
        return os.path.samefile(pa, pb)
    except OSError:  # one of them does not exist: compare normalised absolute paths
        return pa.expanduser().resolve() == pb.expanduser().resolve()


def check_output_path(
    target: str | os.PathLike, inputs: Iterable[str | os.PathLike] = (), overwrite: bool = True
) -> Path:
    """Validate an output path; UserError if it is an input, a folder, its folder is missing, or
    (with ``overwrite=False``) it already exists."""
    t = Path(target).expanduser()
    for src in inputs:
        if same_file(t, src):
            raise UserError(f"output would overwrite the input: {t}")
    if t.is_dir():
        raise UserError(f"output is a folder, expected a file name: {t}")
    parent = t.parent if str(t.parent) else Path(".")
    if not parent.is_dir():
        raise UserError(f"output folder does not exist: {parent}")
    if not overwrite and (t.exists() or t.is_symlink()):
        raise UserError(f"output exists: {t} (pass --overwrite to replace it)")
    return t


def temp_path_for(target: Path) -> Path:
    """The temporary name for `target`: ``.STEM.partial-HOST-PID-RAND.SUFFIX`` in its folder."""
    tag = f"{_TEMP_MARK}{_HOST}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    return target.with_name(f".{target.stem}{tag}{target.suffix}")


def _process_gone(pid: int) -> bool:
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:  # EPERM: it exists (another user's process)
        return False
    return False


def remove_stale_temps(target: str | os.PathLike) -> list[Path]:
    """Remove this writer's temporary files for `target` left by dead processes on this host.

    Only names of this module's pattern with this host's tag whose pid is gone are removed
    (a live writer's file, another host's and any other file are left alone). Returns them."""
    t = Path(target)
    pattern = re.compile(
        re.escape(f".{t.stem}{_TEMP_MARK}{_HOST}-") + r"(\d+)-[0-9a-f]{8}" + re.escape(t.suffix) + r"\Z"
    )
    removed: list[Path] = []
    try:
        names = os.listdir(t.parent if str(t.parent) else ".")
    except OSError:
        return removed
    for name in names:
        m = pattern.match(name)
        if m is None or not _process_gone(int(m.group(1))):
            continue
        p = t.with_name(name)
        if _remove(p):  # what cannot be removed is not ours to fight over: left
            removed.append(p)
    return removed


def _remove(path: Path) -> bool:
    """Delete a temporary file or folder (as much of it as can be); True when it is gone. Errors
    are not raised: nothing more can be done about them."""
    try:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    except OSError:
        return False
    return not (path.exists() or path.is_symlink())


def discard_pending() -> list[Path]:
    """Remove every temporary of this process that is neither committed nor discarded; returns
    them. The CLI calls it when a command ends: a finished command has none, an interrupted one
    may have one its ``with`` never reached (module doc)."""
    paths = sorted(_PENDING)
    _PENDING.clear()
    for p in paths:
        _remove(p)
    return paths


def _default_mode() -> int:
    """0o666 minus the process umask (what open() gives a new file)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return 0o666 & ~int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


class AtomicOutput:
    """A temporary file (or folder) in the target's folder, committed by rename or discarded.

    Args:
        target: the final path.
        inputs: paths the target must not be (UserError if it is one of them).
        mode: permission bits of the committed file (default ``0o666 & ~umask``); not applied
            to folders (mkdir already honours the umask).
        directory: the caller creates a folder at `temp` (renamed as a whole).
        overwrite: False refuses an existing target (UserError).

    Example:
        out = AtomicOutput("result.mp4", inputs=["input.mp4"])
        try:
            write_to(out.temp)
            out.commit()
        finally:
            out.discard()  # no-op after commit
    """

    def __init__(
        self,
        target: str | os.PathLike,
        inputs: Iterable[str | os.PathLike] = (),
        *,
        mode: int | None = None,
        directory: bool = False,
        overwrite: bool = True,
    ) -> None:
        self.target = check_output_path(target, inputs, overwrite=overwrite)
        self.directory = directory
        self.mode = mode
        remove_stale_temps(self.target)
        self.temp = temp_path_for(self.target)
        self.committed = False
        _PENDING.add(self.temp)

    def commit(self) -> Path:
        """Move the finished temporary file onto the target (atomic on one filesystem).

        Raises UserError naming the target for OS errors (permissions, read-only, ...), and
        ``Terminated`` (nothing committed) when a termination signal came during the work."""
        check_not_terminated()
        try:
            if not self.directory:
                os.chmod(self.temp, self.mode if self.mode is not None else _default_mode())
            os.replace(self.temp, self.target)
        except OSError as e:
            raise output_error(e, self.target) from None
        self.committed = True
        _PENDING.discard(self.temp)
        return self.target

    def discard(self) -> None:
        """Remove the temporary file if it is still there (safe to call more than once)."""
        if self.committed:
            return
        _remove(self.temp)
        _PENDING.discard(self.temp)

    def translate(self, e: BaseException) -> BaseException:
        """`e` as the user should see it: an OS error about the output (no file name, or the
        temporary one) becomes a one-line UserError naming the target; anything else as is."""
        if isinstance(e, OSError) and not isinstance(e, UserError) and e.errno is not None:
            name = getattr(e, "filename", None)
            if name is None or Path(os.fsdecode(name)).name in (self.temp.name, self.target.name):
                return output_error(e, self.target)
        return e


@contextmanager
def atomic_output(
    target: str | os.PathLike,
    inputs: Iterable[str | os.PathLike] = (),
    *,
    mode: int | None = None,
    directory: bool = False,
    overwrite: bool = True,
) -> Iterator[Path]:
    """Yield a temporary path; rename it onto `target` if the block succeeds, else delete it.

    OS errors about the output raised in the block (e.g. ENOSPC) become a one-line UserError
    naming `target`. Arguments as `AtomicOutput`."""
    out = AtomicOutput(target, inputs, mode=mode, directory=directory, overwrite=overwrite)
    try:
        try:
            yield out.temp
        except OSError as e:
            err = out.translate(e)
            if err is e:
                raise
            raise err from None
        out.commit()
    finally:
        out.discard()
