"""`rmmvideo` command line: one module per subcommand, imported only when that subcommand runs.

Each subcommand module in ``rmmvideo.cli`` defines::

    HELP: str                                   # one line for `rmmvideo --help`
    def add_arguments(p: argparse.ArgumentParser) -> None
    def run(args: argparse.Namespace) -> int    # heavy imports go inside run()

User mistakes raise ``rmmvideo.errors.UserError`` and are printed as one line (exit 2); other
errors print a one-line message too, with the full traceback when RMMVIDEO_DEBUG=1.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import traceback

from rmmvideo.errors import UserError

# subcommand -> module under rmmvideo.cli
SUBCOMMANDS: dict[str, str] = {
    "run": "run",
    "preview": "preview",
    "faces": "faces",
    "batch": "batch",
    "train": "train",
    "eval": "evaluate",
    "info": "info",
    "probe": "probe",
    "bench": "bench",
}


def _available() -> dict[str, object]:
    mods = {}
    for name, mod in SUBCOMMANDS.items():
        try:
            mods[name] = importlib.import_module(f"rmmvideo.cli.{mod}")
        except ModuleNotFoundError as e:
            if e.name == f"rmmvideo.cli.{mod}":
                continue  # subcommand not built yet
            raise
    return mods


def build_parser() -> argparse.ArgumentParser:
    from rmmvideo import __version__

    parser = argparse.ArgumentParser(
        prog="rmmvideo",
        description="Restore faces in video with RMM (Restoration with Memorized Modulation).",
    )
    parser.add_argument("--version", action="version", version=f"rmmvideo {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name, mod in _available().items():
        p = sub.add_parser(
            name,
            help=getattr(mod, "HELP", ""),
            description=getattr(mod, "HELP", ""),
            formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        )
        mod.add_arguments(p)  # type: ignore[attr-defined]
        p.set_defaults(_run=mod.run)  # type: ignore[attr-defined]
    return parser


def main(argv: list[str] | None = None) -> int:
    # Idle OpenMP threads sleep instead of spinning: the pipeline runs decode/encode threads
    # beside torch, and spinning made 2-thread work several times slower under contention.
    # Must be set before torch is imported (subcommands import it lazily).
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    parser = build_parser()
    args = parser.parse_args(argv)
    debug = os.environ.get("RMMVIDEO_DEBUG", "") not in ("", "0")
    try:
        return int(args._run(args) or 0)
    except UserError as e:
        if debug:
            traceback.print_exc()
        print(f"rmmvideo: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("rmmvideo: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 - last resort: one line, traceback on demand
        if debug:
            traceback.print_exc()
        else:
            print(f"rmmvideo: internal error: {type(e).__name__}: {e} "
                  "(set RMMVIDEO_DEBUG=1 for the traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
