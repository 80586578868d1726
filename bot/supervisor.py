"""``surveybot serve --workers N``: N serving processes on one port, supervised.

Why processes and not threads: one Python process uses one core; a province's evening batch
needs them all. The children bind the same port with ``SO_REUSEPORT``, so the kernel spreads
connections over them, and nothing else ties a request to a process: conversation state, locks,
limits, leases and the web chat live in PostgreSQL and Redis (which ``--workers`` requires).

The supervisor starts the children, restarts one that dies (a crash must not halve capacity
until someone notices), gives up when they keep dying (a configuration error would otherwise
loop forever), and on SIGTERM or SIGINT passes the signal on and waits for their graceful stop
(``Runtime.close``) before killing what is left.
"""

from __future__ import annotations

import logging
import signal
import subprocess
import time
from collections.abc import Sequence
from types import FrameType

log = logging.getLogger(__name__)

#: More restarts than this within ``RESTART_WINDOW_SECONDS`` stops everything.
MAX_RESTARTS = 5
RESTART_WINDOW_SECONDS = 60.0
STOP_GRACE_SECONDS = 30.0
POLL_SECONDS = 0.2


class Supervisor:
    def __init__(self, command: Sequence[str], workers: int) -> None:
        self.command = list(command)
        self.workers = workers
        self.children: list[subprocess.Popen[bytes]] = []
        self._stopping = False
        self._restarts: list[float] = []

    def run(self) -> int:
        """Serve until a signal; the exit code (0 after a requested stop)."""
        previous = {sig: signal.signal(sig, self._stop) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            self.children = [self._spawn() for _ in range(self.workers)]
            log.info("serving with %d worker processes", self.workers)
            while not self._stopping:
                time.sleep(POLL_SECONDS)
                for index, child in enumerate(self.children):
                    if child.poll() is None or self._stopping:
                        continue
                    if not self._may_restart():
                        log.error("workers keep exiting (last code %s): stopping", child.returncode)
                        self._terminate()
                        return 1
                    log.warning("worker %d exited with %s: restarting", child.pid, child.returncode)
                    self.children[index] = self._spawn()
            self._terminate()
            return 0
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _spawn(self) -> subprocess.Popen[bytes]:
        return subprocess.Popen(self.command)  # noqa: S603 - our own interpreter and module

    def _may_restart(self) -> bool:
        now = time.monotonic()
        self._restarts = [t for t in self._restarts if now - t < RESTART_WINDOW_SECONDS]
        self._restarts.append(now)
        return len(self._restarts) <= MAX_RESTARTS

    def _stop(self, signum: int, _frame: FrameType | None) -> None:
        self._stopping = True

    def _terminate(self) -> None:
        """SIGTERM every child, wait for their graceful stop, then SIGKILL the stragglers."""
        for child in self.children:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_SECONDS
        for child in self.children:
            try:
                child.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("worker %d did not stop in time: killed", child.pid)
                child.kill()
                child.wait()
