"""SIGTERM and SIGINT end a job with a record, and the process with 128 + the signal's number.

Schedulers (Slurm, Kubernetes) stop a job with SIGTERM and expect exit status 143; a terminal's
Ctrl-C sends SIGINT (130). Lightning turns SIGTERM into a ``SystemExit`` with status 0 and Ctrl-C into
``sys.exit(1)``, and neither leaves a ``result.json``. ctrbench's handlers raise
:class:`JobInterrupted` in the main thread instead: the job records itself ``interrupted`` (atomically,
with the epochs it finished), a sweep writes the summary of what finished, and the command exits with
:attr:`JobInterrupted.exit_code`. A second signal while that is being written is ignored; the
scheduler's SIGKILL, if it comes, finds the record already on disk or the previous one intact.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class JobInterrupted(BaseException):
    """Raised in the main thread by SIGTERM or SIGINT (a BaseException, like KeyboardInterrupt: no
    ``except Exception`` of a job or a library swallows it)."""

    def __init__(self, signum: int) -> None:
        self.signum = int(signum)
        super().__init__(f"interrupted by {signal.Signals(self.signum).name}")

    @property
    def exit_code(self) -> int:
        return 128 + self.signum

    def __reduce__(self) -> tuple[type, tuple[int]]:  # crosses from a launcher's worker process
        return (JobInterrupted, (self.signum,))


def _raise(signum: int, frame: FrameType | None) -> None:
    for sig in SIGNALS:  # the record and the summary are being written: a second signal waits
        signal.signal(sig, signal.SIG_IGN)
    raise JobInterrupted(signum)


def install() -> bool:
    """Make SIGTERM and SIGINT raise :class:`JobInterrupted`; False (nothing done) off the main thread."""
    if threading.current_thread() is not threading.main_thread():
        return False
    for sig in SIGNALS:
        signal.signal(sig, _raise)
    return True


@contextmanager
def handlers() -> Iterator[None]:
    """:func:`install` for the duration of a ``with`` block, then the previous handlers again."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous: dict[int, Any] = {sig: signal.getsignal(sig) for sig in SIGNALS}
    install()
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def from_lightning(exc: BaseException) -> JobInterrupted | None:
    """Lightning's own SIGTERM exit (``SIGTERMException``, where ctrbench's handler was not installed)
    as a :class:`JobInterrupted`; None for any other exception."""
    from pytorch_lightning.utilities.exceptions import SIGTERMException

    return JobInterrupted(signal.SIGTERM) if isinstance(exc, SIGTERMException) else None
