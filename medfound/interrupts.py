"""Ctrl-C at a safe point: the first SIGINT only sets a flag that a long loop checks between its
steps; a second one interrupts at once.

A KeyboardInterrupt raised while TensorFlow runs Python code from C++ (building a tf.data
pipeline, tracing a function) comes out mangled - a ``SystemError`` turned into an unrelated
``ValueError`` with a traceback - instead of the one-line "interrupted" message and exit 130.
"""
from __future__ import annotations

import contextlib
import signal
import threading
from typing import Callable, Iterator


@contextlib.contextmanager
def interrupt_between_steps() -> Iterator[Callable[[], None]]:
    """Yields ``check()``, which raises KeyboardInterrupt once Ctrl-C was pressed; call it between
    steps. The first Ctrl-C waits for ``check``; a second one raises at once (a loop that never
    reaches ``check`` can still be stopped). Outside the main thread nothing is deferred."""
    if threading.current_thread() is not threading.main_thread():
        yield lambda: None
        return
    pressed = threading.Event()
    previous = signal.getsignal(signal.SIGINT)

    def on_sigint(signum, frame):
        pressed.set()
        signal.signal(signal.SIGINT, previous)  # the next Ctrl-C is not deferred

    def check() -> None:
        if pressed.is_set():
            raise KeyboardInterrupt

    signal.signal(signal.SIGINT, on_sigint)
    try:
        yield check
    finally:
        signal.signal(signal.SIGINT, previous)
