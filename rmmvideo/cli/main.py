"""`rmmvideo` command line: one module per subcommand, imported only when that subcommand runs.

Each subcommand module in ``rmmvideo.cli`` defines::

    HELP: str                                   # one line for `rmmvideo --help`
    def add_arguments(p: argparse.ArgumentParser) -> None
    def run(args: argparse.Namespace) -> int    # heavy imports go inside run()

Exit codes: 0 done; 1 failed (an internal error, or `batch`/`faces` with some failed files);
2 the job could not run: bad option or value (one line, no usage dump), unreadable input,
unwritable output (user mistakes raise ``rmmvideo.errors.UserError``); 128 + n when stopped by
signal n (130 Ctrl-C, 143 SIGTERM, 129 SIGHUP; the temporary output is removed first).
Every error is one line on stderr; RMMVIDEO_DEBUG=1 adds the traceback.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import signal
import sys
import traceback

from rmmvideo.errors import (Terminated, UserError, forget_termination, raise_on_termination,
                             termination_received)
from rmmvideo.video.safe_output import discard_pending

# subcommand -> module under rmmvideo.cli
SUBCOMMANDS: dict[str, str] = {
    "run": "run",
    "preview": "preview",
    "faces": "faces",
    "batch": "batch",
    "train": "train",
    "eval": "evaluate",
    "eval-video": "eval_video",
    "info": "info",
    "probe": "probe",
    "bench": "bench",
}


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors: ``rmmvideo: error: run: argument --threads: ...`` (exit 2)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        cmd = self.prog.split(" ", 1)[1] + ": " if " " in self.prog else ""
        self.exit(2, f"rmmvideo: error: {cmd}{message} (see {self.prog} --help)\n")


class _StderrLines(logging.Handler):
    """Library warnings as one line each, ``rmmvideo: warning: ...``, on the current sys.stderr."""

    def emit(self, record: logging.LogRecord) -> None:
        print(f"rmmvideo: {record.levelname.lower()}: {record.getMessage()}", file=sys.stderr)


def _log_to_stderr() -> None:
    root = logging.getLogger("rmmvideo")
    if not any(isinstance(h, _StderrLines) for h in root.handlers):
        handler = _StderrLines(logging.WARNING)
        root.addHandler(handler)


def _set_torch_threads(threads: int | None) -> None:
    """``--threads N`` (run, preview, faces, bench, eval-video, train): torch's CPU threads for
    this process. Process-wide, so the CLI sets it; the library never does (batch workers set
    their own share in ``rmmvideo.batch.tasks``)."""
    if threads is not None and threads > 0:
        import torch

        torch.set_num_threads(threads)


def build_parser() -> argparse.ArgumentParser:
    from rmmvideo import __version__

    parser = _Parser(
        prog="rmmvideo",
        description="Restore faces in video with RMM (Restoration with Memorized Modulation).",
    )
    parser.add_argument("--version", action="version", version=f"rmmvideo {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name, module in SUBCOMMANDS.items():
        mod = importlib.import_module(f"rmmvideo.cli.{module}")
        p = sub.add_parser(
            name,
            help=mod.HELP,
            description=mod.HELP,
            formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        )
        mod.add_arguments(p)
        p.set_defaults(_run=mod.run)
    return parser


def _stopped(signum: int) -> int:
    print(f"rmmvideo: stopped by {signal.Signals(signum).name}", file=sys.stderr)
    return 128 + signum


def main(argv: list[str] | None = None) -> int:
    # Idle OpenMP threads sleep instead of spinning: the pipeline runs decode/encode threads
    # beside torch, and spinning made 2-thread work several times slower under contention.
    # Must be set before torch is imported (subcommands import it lazily).
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help / --version (0) or a usage error (2, printed as one line)
        return e.code if isinstance(e.code, int) else 2
    debug = os.environ.get("RMMVIDEO_DEBUG", "") not in ("", "0")
    raise_on_termination()  # SIGTERM / SIGHUP unwind like Ctrl-C (temporary outputs removed)
    _set_torch_threads(getattr(args, "threads", None))
    _log_to_stderr()  # e.g. the damaged spans of an input kept with --on-damage warn
    try:
        code = int(args._run(args) or 0)
        if (signum := termination_received()) is not None:  # its Terminated was swallowed on the way
            return _stopped(signum)
        return code
    except UserError as e:
        if (signum := termination_received()) is not None:  # e.g. a load interrupted mid-file
            return _stopped(signum)
        if debug:
            traceback.print_exc()
        print(f"rmmvideo: error: {e}", file=sys.stderr)
        return 2
    except Terminated as e:
        return _stopped(e.signum)
    except KeyboardInterrupt:
        print("rmmvideo: interrupted", file=sys.stderr)
        return 130
    except OSError as e:  # not mapped where it happened: still one line, naming the user's file
        from rmmvideo.video.safe_output import target_of_temp

        if (signum := termination_received()) is not None:
            return _stopped(signum)
        if debug:
            traceback.print_exc()
        name = getattr(e, "filename", None)
        where = f": {target_of_temp(os.fsdecode(name))}" if name else ""
        print(f"rmmvideo: error: {e.strerror or e}{where}", file=sys.stderr)
        return 2
    except Exception as e:  # noqa: BLE001 - last resort: one line, traceback on demand
        if (signum := termination_received()) is not None:  # a library turned the signal into its own error
            return _stopped(signum)
        if debug:
            traceback.print_exc()
        else:
            print(f"rmmvideo: internal error: {type(e).__name__}: {e} "
                  "(set RMMVIDEO_DEBUG=1 for the traceback)", file=sys.stderr)
        return 1
    finally:  # a signal can land where no `with` covers a temporary output yet
        discard_pending()
        forget_termination()


if __name__ == "__main__":
    sys.exit(main())
