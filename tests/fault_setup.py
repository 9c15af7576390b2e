"""One project connected to one real backend process, for the fault and guard tests against a real Label Studio."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import requests

from backend.labelstudio import LabelStudio
from examine.datasets import medical_tiles
from tests.backend_server import LABEL_CONFIG, BackendServer, png, save_tiny_encoder

__all__ = ["AUTH", "CONVERGE_S", "FAST", "N_TILES", "Setup", "encoder_dir", "setup_factory", "tiles"]

AUTH = ("examine", "fault-pass")
N_TILES = 12
CONVERGE_S = 120.0  # the bound each test asserts (measured times are printed)
FAST = {
    "EXAMINE_HEAD_SIZE": "4",
    "EXAMINE_FULL_PUBLISH_IDLE_S": "1",
    "EXAMINE_CLEANUP_IDLE_S": "2",
    "EXAMINE_RETRY_BASE_S": "0.5",
    "EXAMINE_RETRY_MAX_S": "4",
    "EXAMINE_RECONCILE_S": "5",
    "EXAMINE_DEVICE": "cpu",
    "EXAMINE_IMAGE_DEADLINE_S": "3",
    "EXAMINE_IMAGE_CONNECT_TIMEOUT_S": "1",
    "EXAMINE_IMAGE_RETRY_S": "1",
}
_tile_seed = iter(range(1000, 100000))


def tiles(n: int) -> dict[str, bytes]:
    seed = next(_tile_seed)
    return {f"t{seed}-{i}.png": png(t) for i, t in enumerate(medical_tiles(n, size=64, seed=seed))}


@pytest.fixture(scope="module")
def encoder_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("encoder") / "encoder"
    save_tiny_encoder(folder)
    return folder


class Setup:
    """One project connected to one backend process with its own MODEL_DIR."""

    def __init__(self, ls, tmp: Path, encoder_dir: Path, *, auth: bool = False, extra: dict | None = None):
        import shutil

        self.ls, self.client = ls, LabelStudio(ls.url, ls.token)
        self.model_dir = tmp / "model"
        shutil.copytree(encoder_dir, self.model_dir / "encoder")
        env = {
            "LABEL_STUDIO_URL": ls.url,
            "LABEL_STUDIO_API_KEY": ls.token,
            "MODEL_DIR": str(self.model_dir),
            **FAST,
            **(extra or {}),
        }
        if auth:
            env.update(BASIC_AUTH_USER=AUTH[0], BASIC_AUTH_PASS=AUTH[1])
        self.auth = AUTH if auth else None
        self.backend = BackendServer(env, tmp / "backend.log").start()
        self.pid = self.client.create_project(f"faults {tmp.name}", LABEL_CONFIG)["id"]

    def import_tiles(self, n: int) -> list[int]:
        return list(self.client.import_files(self.pid, tiles(n)))

    def connect(self) -> dict:
        kw = dict(auth_method="BASIC_AUTH", basic_auth_user=AUTH[0], basic_auth_pass=AUTH[1]) if self.auth else {}
        return self.client.add_ml_backend(self.pid, self.backend.url, "examine", **kw)

    def status(self) -> dict:
        return self.backend.status(self.pid, auth=self.auth)

    def annotate(self, tid: int, label: str = "stained") -> dict:
        result = [{"from_name": "tissue", "to_name": "image", "type": "choices", "value": {"choices": [label]}}]
        return self.client.create_annotation(tid, result)

    def annotations(self) -> dict[int, tuple]:
        out = {}
        for t in self.client.iter_tasks(self.pid, fields="all"):
            for a in t.get("annotations") or []:
                out[a["id"]] = (a["task"], a["result"], a["updated_at"])
        return out

    def converged(self, timeout: float = CONVERGE_S, must_rank: tuple[int, ...] = ()) -> float:
        """Seconds until every unlabeled task holds exactly one prediction of the project's current version."""
        t0 = time.monotonic()
        last = None
        while time.monotonic() - t0 < timeout:
            try:
                current = self.client.get_project(self.pid)["model_version"]
                bad, ids = {}, set()
                for t in self.client.iter_tasks(self.pid, fields="all"):
                    ids.add(t["id"])
                    if t.get("annotations"):
                        continue
                    n = sum(1 for p in t.get("predictions") or [] if p.get("model_version") == current)
                    if n != 1:
                        bad[t["id"]] = n
                st = self.status()
                if (
                    not bad
                    and current == st["published_version"]
                    and not st["pending"]
                    and str(current).startswith("examine-")
                    and set(must_rank) <= ids
                ):
                    return time.monotonic() - t0
                last = (current, bad, st)
            except (requests.RequestException, ValueError, KeyError) as exc:
                last = exc
            time.sleep(0.5)
        raise AssertionError(f"not converged within {timeout} s: {last}\n{self.backend.log_tail()}")

    def metric(self, name: str) -> float:
        text = requests.get(self.backend.url + "/metrics", auth=self.auth, timeout=10).text
        return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(name))

    def close(self) -> None:
        self.backend.stop()


@pytest.fixture
def setup_factory(label_studio, tmp_path, encoder_dir):
    made = []

    def make(**kw) -> Setup:
        s = Setup(label_studio, tmp_path / f"s{len(made)}", encoder_dir, **kw)
        made.append(s)
        return s

    yield make
    for s in made:
        s.close()
