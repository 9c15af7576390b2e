"""The backend's own share of a label at N tasks: one project's re-rank, publish and save, without Label Studio.

    python benchmarks/bench_rerank.py [--tasks 200000] [--dim 3072] [--labels 24]

Builds a project of N tasks whose embeddings (10 classes of synthetic clusters, the CPU recipe's 3,072 dimensions)
sit in a real embedding store, with every task already holding a prediction and 40 labels given, then labels the
batch being served one task at a time, as annotators do, and times each ``rank`` job as the worker runs it (rank,
in-place publish, save). The Label Studio client answers each prediction update after 20 ms and records nothing
else: this measures the backend's passes over the pool, not Label Studio (``bench_team.py`` measures both, end to
end). Prints each label's time, whether it chose a new batch, and the medians.
"""

from __future__ import annotations

import argparse
import hashlib
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from backend.label_config import controls_from_config  # noqa: E402
from backend.publish import Published  # noqa: E402
from backend.settings import Settings  # noqa: E402
from backend.state import StateStore  # noqa: E402
from backend.task_info import TaskInfo  # noqa: E402
from backend.worker import ProjectWorker  # noqa: E402
from benchmarks.bench_team import header  # noqa: E402
from examine.store import EmbeddingStore  # noqa: E402
from examine.workspace import Workspace  # noqa: E402

CLASSES = 10
CONFIG = (
    '<View><Image name="image" value="$image"/><Choices name="c" toName="image">'
    + "".join(f'<Choice value="k{i}"/>' for i in range(CLASSES))
    + "</Choices></View>"
)


class _Encoder:
    def __init__(self, dim: int):
        self.version, self.dim = "bench-rerank", dim


class _Client:
    """Answers prediction updates after 20 ms (Label Studio's own time is bench_team's to measure)."""

    def __init__(self) -> None:
        self.updates = 0
        self._lock = threading.Lock()

    def update_prediction(self, pred_id: int, **body: object) -> dict:
        with self._lock:
            self.updates += 1
        time.sleep(0.02)
        return {"id": pred_id}

    def list_predictions(self, **kw: object) -> list:
        return []

    def create_prediction(self, p: dict) -> dict:
        return {"task": p["task"], "id": 10**7 + int(p["task"])}


class _Backend:
    """The worker's view of the running backend (backend.context.BackendContext)."""

    def __init__(self, root: Path, dim: int):
        self.settings = Settings.from_env({"MODEL_DIR": str(root), "EXAMINE_SCREENING": "0"})
        self.workspace, self.states = Workspace(root), StateStore(root)
        self.problems: list[str] = []
        self.publishes = self.publish_failures = 0
        self.last_reconcile: dict[int, float] = {}
        self.pretrain_lock = threading.Lock()
        self.own_urls: set[str] = set()
        self._client, self._encoder = _Client(), _Encoder(dim)

    def submit(self, pid: int, kinds: list[str], *, event: bool = True) -> None:
        pass

    def add_problem(self, msg: str) -> None:
        self.problems.append(msg)

    def quiet_for(self, pid: int) -> float:
        return 100.0

    def has_credentials(self, pid: int) -> bool:
        return True

    def client(self, pid: int) -> _Client:
        return self._client

    def image_client(self, pid: int) -> _Client:
        return self._client

    def encoder(self, pid: int) -> _Encoder:
        return self._encoder

    def project_encoder_dir(self, pid: int) -> Path:
        return Path(self.settings.model_dir) / "project"


def build(root: Path, n: int, dim: int) -> tuple[_Backend, list[str]]:
    keys = [hashlib.sha256(str(i).encode()).hexdigest() for i in range(n)]
    store = EmbeddingStore(root / "store", "bench-rerank", dim)
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(CLASSES, dim)).astype(np.float32)
    for start in range(0, n, 10_000):
        end = min(n, start + 10_000)
        noise = rng.normal(size=(end - start, dim)).astype(np.float32) * 2
        store.add(keys[start:end], centres[np.arange(start, end) % CLASSES] + noise)
    return _Backend(root, dim), keys


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tasks", type=int, default=200_000)
    ap.add_argument("--dim", type=int, default=3072)
    ap.add_argument("--labels", type=int, default=24, help="labels given one at a time after the first ranking")
    args = ap.parse_args()
    print(header(sys.argv[1:], script="benchmarks/bench_rerank.py"), flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        backend, keys = build(Path(tmp), args.tasks, args.dim)
        print(f"store of {args.tasks} × {args.dim} written in {time.perf_counter() - t0:.0f} s", flush=True)
        state = backend.states.get(1)
        state.controls = [t.as_dict() for t in controls_from_config(CONFIG)]
        state.image_key, state.encoder_version, state.synced = "image", "bench-rerank", True
        state.tasks = {i + 1: TaskInfo(uri=f"/data/local-files/?d=t{i}.png", key=k) for i, k in enumerate(keys)}
        rng = np.random.default_rng(1)
        for i in rng.choice(args.tasks, 40, replace=False).tolist():
            state.tasks[i + 1].labeled, state.tasks[i + 1].answers = True, {"c": [f"k{i % CLASSES}"]}
        state.published_version = state.complete_version = "v1"
        state.predictions = {t: Published(t, 0.5) for t in state.tasks}
        state.annotated_by = dict.fromkeys((1, 2, 3), time.monotonic())  # three annotators: batches end 4 early
        worker = ProjectWorker(backend, 1)

        def job() -> tuple[float, float]:  # as backend.runtime.run_jobs runs a "rank": the job, then a save
            start = time.perf_counter()
            worker.rank()
            ranked = time.perf_counter()
            backend.states.save(state)
            return ranked - start, time.perf_counter() - ranked

        first = job()
        print(f"first ranking (PCA of the pool, k-means, EXAMINE per cluster): {first[0]:.2f} s, save {first[1]:.2f} s")
        within: list[float] = []
        boundary: list[float] = []
        saves: list[float] = []
        for k in range(args.labels):
            batch_before = [t for t, _ in state.batch]
            tid = next(t for t in batch_before if not state.tasks[t].labeled)
            state.tasks[tid].labeled, state.tasks[tid].answers = True, {"c": [f"k{tid % CLASSES}"]}
            took, saved = job()
            new_batch = not set(t for t, _ in state.batch) <= set(batch_before)
            (boundary if new_batch else within).append(took)
            saves.append(saved)
            print(
                f"label {k + 1:3d}: rank + publish {took:6.3f} s, save {saved:.3f} s"
                + ("  (a new batch chosen)" if new_batch else ""),
                flush=True,
            )
        print(
            f"\nwithin a batch: median {statistics.median(within):.3f} s, max {max(within):.3f} s ({len(within)} labels)"
        )
        print("a new batch chosen: " + (", ".join(f"{b:.2f} s" for b in boundary) or "none in these labels"))
        print(f"save after a label: median {statistics.median(saves):.3f} s")
        if boundary:
            print(
                f"first ranking / a later new batch: {first[0] / statistics.median(boundary):.1f}× (the PCA rows kept)"
            )


if __name__ == "__main__":
    main()
