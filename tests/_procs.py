"""Helpers for tests that signal real child processes."""

from __future__ import annotations

import signal


def sigint_default() -> None:
    """preexec_fn: give the child the default SIGINT disposition.

    A shell without job control starts background commands (`bash .ci/run &`, nohup, some CI
    runners) with SIGINT ignored, children inherit SIG_IGN, and Python then installs no
    KeyboardInterrupt handler: a test's SIGINT would be silently dropped. Ctrl-C reaches a
    foreground program with the default disposition, which is what these tests exercise.
    """
    signal.signal(signal.SIGINT, signal.SIG_DFL)
