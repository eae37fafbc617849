"""How edgefss reacts to Ctrl-C, SIGTERM and SIGHUP while it writes a user's files.

Two rules, one module:
- `unwind_on_signals()`: SIGTERM/SIGHUP raise SystemExit(128 + signum) the way Ctrl-C raises
  KeyboardInterrupt, so `with`/`finally` blocks finish or remove what they were writing.
- `deferred_signals()`: a critical section. Python runs a signal handler between any two
  bytecodes, so an exception can land between a side effect and the bookkeeping that records it
  (a frame written to a video but not counted, a bundle renamed but not marked committed). Inside
  this block the signals are only noted; they are delivered, to whatever handler was there
  before, the moment the block ends. Keep these blocks short (one write, one rename).

Only the main thread can install handlers (and only it runs them): in other threads both are
no-ops. Never imports torch.
"""

from __future__ import annotations

import contextlib
import signal
import threading

# the signals a user or a supervisor sends to stop a run; SIGHUP is absent on Windows
_SIGHUP = getattr(signal, "SIGHUP", None)
STOP_SIGNALS = tuple(s for s in (signal.SIGINT, signal.SIGTERM, _SIGHUP) if s is not None)
END_SIGNALS = STOP_SIGNALS[1:]  # the ones without a Python exception of their own


class _Terminated(SystemExit):
    """SIGTERM/SIGHUP turned into an exception, so `with` blocks remove their staging folders."""


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


@contextlib.contextmanager
def _handlers(signals, handler, take):
    """Install `handler` for each of `signals` whose current handler passes `take(prev)`; put the
    previous ones back on exit (None, a handler from outside Python, goes back as SIG_DFL)."""
    old = {}
    for sig in signals:
        prev = signal.getsignal(sig)
        if take(prev):
            old[sig] = prev
            signal.signal(sig, handler)
    try:
        yield
    finally:
        for sig, prev in old.items():
            signal.signal(sig, prev if prev is not None else signal.SIG_DFL)


@contextlib.contextmanager
def unwind_on_signals(signals=END_SIGNALS):
    """While inside, SIGTERM (and SIGHUP) raise SystemExit(128 + signum) like Ctrl-C raises
    KeyboardInterrupt, so cleanup code runs; the previous handlers are restored on exit. A handler
    someone else installed is theirs to keep. Main thread only: elsewhere this does nothing."""
    if not _in_main_thread():
        yield
        return

    def raise_exit(signum, frame):
        raise _Terminated(128 + signum)

    with _handlers(signals, raise_exit, lambda prev: prev in (signal.SIG_DFL, None)):
        yield


@contextlib.contextmanager
def deferred_signals(signals=STOP_SIGNALS):
    """Hold Ctrl-C/SIGTERM/SIGHUP until the block ends, then deliver each one that arrived (in
    arrival order, once each) to the handler that was in place before: the block's side effects and
    their bookkeeping happen together or not at all. Ignored signals stay ignored. Nests. Main
    thread only: elsewhere (where Python never runs handlers) this does nothing."""
    if not _in_main_thread():
        yield
        return
    arrived: list[int] = []

    def note(signum, frame):
        if signum not in arrived:
            arrived.append(signum)

    # ignored signals stay ignored; None (a handler installed outside Python) is left to itself
    try:
        with _handlers(signals, note, lambda prev: prev is not signal.SIG_IGN and prev is not None):
            yield
    finally:
        for sig in arrived:
            # the restored handler runs now: a Python one raises here, SIG_DFL ends the process as
            # it would have without the block
            signal.raise_signal(sig)
