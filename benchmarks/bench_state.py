"""What saving a project's state costs per label at the size of a large project, row by row vs whole.

A synthetic project of ``--tasks`` tasks (default 200,000), each with an embedding key and a published
prediction; then ``--labels`` saves, each after one label and one re-scored prediction (what a re-rank
changes). Measured in one run: the backend's save (``StateStore.save``: changed rows into tasks.db, the
small fields into state.json) against writing the whole state as one JSON file as the backend did before
(json.dumps of every task and prediction + fsync + rename). Prints medians and their ratio.

    .venv/bin/python benchmarks/bench_state.py --tasks 200000
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

from backend.publish import Published
from backend.state import ProjectState, StateStore, TaskInfo


def whole_json_save(state: ProjectState, folder: Path) -> None:
    """The former save: every task and prediction in one JSON file, fsynced, renamed into place."""
    data = state.to_json()
    data["tasks"] = {str(t): asdict(i) for t, i in state.tasks.items()}
    data["predictions"] = {str(t): p.to_json() for t, p in state.predictions.items()}
    data["annotation_task"] = {str(a): t for a, t in state.annotation_task.items()}
    tmp = folder / "whole.json.tmp"
    with open(tmp, "w") as fh:
        fh.write(json.dumps(data))
        fh.flush()
        os.fsync(fh.fileno())
    tmp.replace(folder / "whole.json")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tasks", type=int, default=200_000)
    ap.add_argument("--labels", type=int, default=7)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        store = StateStore(Path(tmp))
        state = store.get(1)
        for t in range(1, args.tasks + 1):
            state.tasks[t] = TaskInfo(uri=f"/data/local-files/?d=tiles/{t:06d}.png", key=f"{t:064x}")
            state.predictions[t] = Published(10 * t, t / (args.tasks + 1))
        state.queue = list(range(1, args.tasks + 1))
        state.queue_groups = [t % 30 for t in state.queue]
        t0 = time.perf_counter()
        store.save(state)
        first = time.perf_counter() - t0
        rows, whole = [], []
        for k in range(args.labels):
            info = state.tasks[k + 1]
            info.labeled, info.answers = True, {"class": ["a"]}
            state.annotation_task[k + 1] = k + 1
            state.predictions[args.tasks - k].score = 0.001 * k
            t0 = time.perf_counter()
            store.save(state)
            rows.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            whole_json_save(state, Path(tmp))
            whole.append(time.perf_counter() - t0)
        db = (Path(tmp) / "projects" / "1" / "tasks.db").stat().st_size
        js = (Path(tmp) / "whole.json").stat().st_size
    r, w = statistics.median(rows), statistics.median(whole)
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}")
    print(f"{args.tasks:,} tasks, {args.labels} saves after one label each (medians of this run)")
    print(f"  first save (every row)         {first:8.3f} s   tasks.db {db / 2**20:.1f} MiB")
    print(f"  save after a label, row by row {r:8.3f} s   (max {max(rows):.3f} s)")
    print(f"  save after a label, whole JSON {w:8.3f} s   (max {max(whole):.3f} s; file {js / 2**20:.1f} MiB)")
    print(f"  ratio row by row / whole JSON  {r / w:8.3f}")


if __name__ == "__main__":
    main()
