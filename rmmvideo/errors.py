"""One error type for user mistakes: the CLI prints it as a single line and exits non-zero.

Also the termination signals: SIGTERM and SIGHUP are turned into `Terminated` (a
KeyboardInterrupt), so they unwind exactly like Ctrl-C: every `finally` runs and atomic
outputs remove their temporary files; the CLI then exits with 128 + the signal number.
The signal is also recorded (`termination_received`): a `Terminated` raised where Python
swallows exceptions (a destructor, a weakref or garbage-collector callback: "Exception ignored
in ...") or where a library turns it into another error (torch's loader reported one as a
ValueError) is not lost: `check_not_terminated` raises it again before an output is committed
and at each frame written, and the CLI exits 128 + the signal whatever the run returned.
"""

from __future__ import annotations

import signal
import threading
from typing import NoReturn


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


_received: list[int] = []  # termination signals handled by raise_on_termination's handler

TERMINATION_SIGNALS = tuple(s for s in (getattr(signal, "SIGTERM", None), getattr(signal, "SIGHUP", None)) if s)


def raise_on_termination() -> None:
    """Install handlers that raise `Terminated` on SIGTERM/SIGHUP (main thread only; a no-op
    elsewhere). The first signal raises; later ones are ignored so the cleanup can finish."""
    if threading.current_thread() is not threading.main_thread():
        return

    _received.clear()

    def handler(signum: int, _frame: object) -> None:
        stop_for(signum)

    for s in TERMINATION_SIGNALS:
        signal.signal(s, handler)


def stop_for(signum: int) -> NoReturn:
    """What a termination signal's handler does: ignore further ones (so the cleanup can
    finish), record this one (`termination_received`) and raise `Terminated`."""
    for s in TERMINATION_SIGNALS:
        signal.signal(s, signal.SIG_IGN)
    _received.append(signum)
    raise Terminated(signum)


def termination_received() -> int | None:
    """The termination signal the handler of `raise_on_termination` got, if any."""
    return _received[0] if _received else None


def forget_termination() -> None:
    """Forget a received signal (the CLI has reported it; an in-process caller goes on)."""
    _received.clear()


def check_not_terminated() -> None:
    """Raise `Terminated` (main thread only) if a termination signal was received: its first
    raise may have been swallowed (module doc). Called before committing an output."""
    signum = termination_received()
    if signum is not None and threading.current_thread() is threading.main_thread():
        raise Terminated(signum)
