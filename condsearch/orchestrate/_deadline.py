"""`deadline`: fail a trial's work that runs past `search.trial_timeout`, wherever it runs.

In the main thread (a local search) SIGALRM raises `TrialTimeout`; it also breaks a blocking
sleep. In another thread (a Ray Tune function trainable runs the trial in one) a watchdog thread
raises it asynchronously in the worker thread, which takes effect at the next Python bytecode.
Until the work ends the exception is raised again every `REPEAT_S` seconds, so code that catches
and ignores one (a retry loop, a best-effort logger) cannot outlive the deadline.
"""

from __future__ import annotations

import ctypes
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

#: seconds between repeats of the timeout exception while the work has not stopped
REPEAT_S = 1.0


class TrialTimeout(Exception):
    """The trial ran past `search.trial_timeout`."""


@contextmanager
def deadline(seconds: float | None) -> Iterator[None]:
    """Raise `TrialTimeout` in the calling thread once `seconds` have passed (None: never)."""
    if seconds is None:
        yield
        return
    if threading.current_thread() is threading.main_thread() and hasattr(signal, "setitimer"):
        with _alarm(seconds):
            yield
    else:
        with _watchdog(seconds):
            yield


@contextmanager
def _alarm(seconds: float) -> Iterator[None]:
    active = True

    def ring(signum: int, frame: object) -> None:
        if active:
            raise TrialTimeout()

    previous = signal.signal(signal.SIGALRM, ring)
    signal.setitimer(signal.ITIMER_REAL, seconds, REPEAT_S)
    try:
        yield
    finally:
        active = False
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _raise_in(thread_id: int, exc: type[BaseException] | None) -> None:
    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread_id),
                                               ctypes.py_object(exc) if exc else None)


@contextmanager
def _watchdog(seconds: float) -> Iterator[None]:
    target = threading.get_ident()
    done = threading.Event()
    lock = threading.Lock()

    def watch() -> None:
        wait = seconds
        while not done.wait(wait):
            with lock:
                if not done.is_set():
                    _raise_in(target, TrialTimeout)
            wait = REPEAT_S

    threading.Thread(target=watch, name="condsearch-deadline", daemon=True).start()
    try:
        yield
    finally:
        with lock:
            done.set()
            _raise_in(target, None)  # drop one raised too late to land in the work
