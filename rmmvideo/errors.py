"""One error type for user mistakes: the CLI prints it as a single line and exits non-zero.

Also the termination signals: SIGTERM and SIGHUP are turned into `Terminated` (a
KeyboardInterrupt), so they unwind exactly like Ctrl-C: every `finally` runs and atomic
outputs remove their temporary files; the CLI then exits with 128 + the signal number.
"""

from __future__ import annotations

import signal
import threading


class UserError(Exception):
    """A problem with the user's input or options (bad file, bad flag), not a bug."""


class Terminated(KeyboardInterrupt):
    """Raised in the main thread when the process gets SIGTERM or SIGHUP (`signum`)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name


TERMINATION_SIGNALS = tuple(s for s in (getattr(signal, "SIGTERM", None), getattr(signal, "SIGHUP", None)) if s)


def raise_on_termination() -> None:
    """Install handlers that raise `Terminated` on SIGTERM/SIGHUP (main thread only; a no-op
    elsewhere). The first signal raises; later ones are ignored so the cleanup can finish."""
    if threading.current_thread() is not threading.main_thread():
        return

    def handler(signum: int, _frame: object) -> None:
        for s in TERMINATION_SIGNALS:
            signal.signal(s, signal.SIG_IGN)
        raise Terminated(signum)

    for s in TERMINATION_SIGNALS:
        signal.signal(s, handler)
