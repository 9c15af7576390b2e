"""Stopping the servers we start (Label Studio, the backend): a whole process group, politely first."""

from __future__ import annotations

import os
import signal
import subprocess


def stop_process_group(proc: subprocess.Popen | None, timeout: float = 20.0) -> bool:
    """SIGTERM ``proc``'s process group, SIGKILL what is left after ``timeout``; True if it was running.

    The group is killed once more at the end: workers (gunicorn's, Django's) can outlive the leader.
    """
    if proc is None:
        return False
    was_running = proc.poll() is None
    if was_running:
        for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 10.0)):
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                proc.wait(wait)
                break
            except subprocess.TimeoutExpired:
                continue
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    return was_running
