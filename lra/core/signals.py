"""Stop signals: SIGTERM (what clusters send before pre-empting) and SIGINT (Ctrl-C) become a flag
the training loop checks after each step, so a run stops at a step boundary with a checkpoint."""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager


@contextmanager
def stop_on_signals():
    """Turn SIGTERM/SIGINT into a flag the loop checks after each step (main thread only)."""
    flag = {"signum": None}
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return

    def handler(signum, frame):
        if flag["signum"] == signal.SIGINT and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C leaves at once
        # A grid forwards SIGTERM to its cells on Ctrl-C, which the terminal also sent them: the
        # two arrive in either order, and only a second Ctrl-C means "leave now".
        flag["signum"] = signal.SIGINT if signal.SIGINT in (signum, flag["signum"]) else signum

    old = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield flag
    finally:
        for s, h in old.items():
            signal.signal(s, h)
