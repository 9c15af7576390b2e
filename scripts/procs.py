"""The servers we start (Label Studio, the backend): Label Studio's environment, and stopping a process group."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path


def label_studio_env(
    data_dir: Path, files_root: Path, username: str, password: str, token: str, task_lock_ttl: int | None = None
) -> dict[str, str]:
    """Environment for a scripted, offline, local Label Studio 1.23: legacy token, local files, SSRF checks off.

    The backend's own variables are removed so they cannot leak into the server.
    """
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("LABEL_STUDIO_URL", "LABEL_STUDIO_API_KEY", "VIRTUAL_ENV", "PYTHONPATH")
    }
    env.update(
        {
            "LABEL_STUDIO_BASE_DATA_DIR": str(data_dir),
            "LABEL_STUDIO_USERNAME": username,
            "LABEL_STUDIO_PASSWORD": password,
            "LABEL_STUDIO_USER_TOKEN": token,
            "LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN": "true",
            "LABEL_STUDIO_DISABLE_SIGNUP_WITHOUT_LINK": "true",
            "LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED": "true",
            "LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT": str(files_root),
            "COLLECT_ANALYTICS": "false",
            "LATEST_VERSION_CHECK": "false",
            "SENTRY_DSN": "",
            "FRONTEND_SENTRY_DSN": "",
            "LABEL_STUDIO_ML_BLOCK_LOCAL_IP": "false",
            "LABEL_STUDIO_SSRF_PROTECTION_ENABLED": "false",
            # Label Studio's own fix for bulk prediction imports: without it each import recounts every task of the
            # project (10,000 predictions into a 200,000-task project: 48 s, 70 s, 102 s, 131 s, growing by ~30 s).
            PREDICTIONS_IMPORT_FLAG: "true",
            "PYTHONUNBUFFERED": "1",
        }
    )
    if task_lock_ttl is not None:
        env["LABEL_STUDIO_TASK_LOCK_TTL"] = str(task_lock_ttl)
    return env


#: Label Studio feature flag (an environment variable, read by its ``flag_set``): the bulk prediction import
#: recounts only the tasks it touched (``data_import/api.py``, ``_create_memory_efficient``), not the whole project.
PREDICTIONS_IMPORT_FLAG = "fflag_fix_back_4620_memory_efficient_predictions_import_08012025_short"


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
