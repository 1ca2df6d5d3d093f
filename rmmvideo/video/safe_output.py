"""Write outputs safely: to a temporary file beside the target, renamed into place on success.

On any exception (KeyboardInterrupt included) the temporary file is removed and the target is
left as it was: never a partial file at the target. Writing onto an input is refused.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from rmmvideo.errors import UserError


def same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """True if `a` and `b` name the same file (same inode: symlinks and hard links included)."""
    pa, pb = Path(a), Path(b)
    try:
        return os.path.samefile(pa, pb)
    except OSError:  # one of them does not exist: compare normalised absolute paths
        return pa.expanduser().resolve() == pb.expanduser().resolve()


def check_output_path(target: str | os.PathLike, inputs: Iterable[str | os.PathLike] = ()) -> Path:
    """Validate an output path; UserError if it is an input, a folder, or its folder is missing."""
    t = Path(target).expanduser()
    for src in inputs:
        if same_file(t, src):
            raise UserError(f"output would overwrite the input: {t}")
    if t.is_dir():
        raise UserError(f"output is a folder, expected a file name: {t}")
    parent = t.parent if str(t.parent) else Path(".")
    if not parent.is_dir():
        raise UserError(f"output folder does not exist: {parent}")
    return t


class AtomicOutput:
    """A temporary file in the target's folder, committed by rename or discarded.

    Example:
        out = AtomicOutput("result.mp4", inputs=["input.mp4"])
        try:
            write_to(out.temp)
            out.commit()
        finally:
            out.discard()  # no-op after commit
    """

    def __init__(self, target: str | os.PathLike, inputs: Iterable[str | os.PathLike] = ()) -> None:
        self.target = check_output_path(target, inputs)
        # keep the extension last so tools guessing the format from the name still work
        self.temp = self.target.with_name(f".{self.target.stem}.partial-{uuid.uuid4().hex[:8]}{self.target.suffix}")
        self.committed = False

    def commit(self) -> Path:
        """Move the finished temporary file onto the target (atomic on one filesystem)."""
        os.replace(self.temp, self.target)
        self.committed = True
        return self.target

    def discard(self) -> None:
        """Remove the temporary file if it is still there (safe to call more than once)."""
        if not self.committed:
            self.temp.unlink(missing_ok=True)


@contextmanager
def atomic_output(target: str | os.PathLike, inputs: Iterable[str | os.PathLike] = ()) -> Iterator[Path]:
    """Yield a temporary path; rename it onto `target` if the block succeeds, else delete it."""
    out = AtomicOutput(target, inputs)
    try:
        yield out.temp
        out.commit()
    finally:
        out.discard()
