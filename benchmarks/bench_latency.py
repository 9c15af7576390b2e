"""Annotation → label stream latency on a large project, against a real Label Studio.

    python benchmarks/bench_latency.py [--tasks 20000] [--annotations 5] [--labeled 40] [--ls-db postgres]

Starts Label Studio 1.23.2 (from .venv-ls) and the backend on 127.0.0.1, imports N tasks that
point at N distinct real medical tiles in Label Studio's local-files root, connects the backend
(which syncs, embeds from disk via EXAMINE_DATA_ROOTS, ranks and publishes), then submits
annotations through the API and measures, for each, the time until ``/next`` serves a new task
under the ranking that includes it (updated in place). With ``--labeled N`` N tasks are labeled first (two classes, alternating), so the
probe pre-annotates and the default queue has left its cold-start phase. Prints the set-up phases and
the latencies.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from backend.labelstudio import LabelStudio  # noqa: E402
from benchmarks._services import add_ls_db_argument, start_backend  # noqa: E402
from examine.datasets import medical_tiles  # noqa: E402
from scripts.pg_cluster import PostgresCluster  # noqa: E402
from tests.lsserver import LabelStudioServer  # noqa: E402

CONFIG = """<View><Image name="image" value="$image"/>
<Choices name="c" toName="image"><Choice value="a"/><Choice value="b"/></Choices></View>"""


def write_tiles(folder: Path, n: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    base = medical_tiles(64, size=128, seed=1)
    rng = np.random.default_rng(0)
    for i in range(n):
        src = base[i % len(base)]
        y, x = rng.integers(0, 128 - 32, size=2)
        buf = io.BytesIO()
        Image.fromarray(np.ascontiguousarray(src[y : y + 32, x : x + 32])).save(buf, format="PNG")
        (folder / f"t{i:06d}.png").write_bytes(buf.getvalue())


def choice(value: str) -> dict:
    return {"from_name": "c", "to_name": "image", "type": "choices", "value": {"choices": [value]}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tasks", type=int, default=20000)
    ap.add_argument("--annotations", type=int, default=5)
    ap.add_argument("--labeled", type=int, default=40, help="tasks labeled before the measured annotations")
    add_ls_db_argument(ap)
    args = ap.parse_args()
    with contextlib.ExitStack() as stack:
        tmp = stack.enter_context(tempfile.TemporaryDirectory())
        pg = stack.enter_context(PostgresCluster()) if args.ls_db == "postgres" else None
        ls = stack.enter_context(LabelStudioServer(Path(tmp) / "ls", postgres=pg))
        print(f"Label Studio on {'PostgreSQL ' + str(pg.port) if pg else 'SQLite'}")
        tmp = Path(tmp)
        t0 = time.perf_counter()
        write_tiles(Path(ls.files_root) / "bench", args.tasks)
        print(f"wrote {args.tasks} tiles in {time.perf_counter() - t0:.1f} s")
        backend = start_backend(ls, tmp)
        try:
            client = LabelStudio(ls.url, ls.token, timeout=300)
            pid = client.create_project("latency", CONFIG)["id"]
            client.add_local_storage(pid, str(Path(ls.files_root) / "bench"), sync=False)
            t0 = time.perf_counter()
            tasks = [{"image": f"/data/local-files/?d=bench/t{i:06d}.png"} for i in range(args.tasks)]
            for s in range(0, len(tasks), 5000):
                client.import_tasks(pid, tasks[s : s + 5000])
            print(f"imported {args.tasks} tasks in {time.perf_counter() - t0:.1f} s")
            t0 = time.perf_counter()
            client.add_ml_backend(pid, backend.url, "examine")
            st = backend.wait(pid, lambda s: s["published_version"] and not s["pending"], timeout=3600)
            print(f"connect → sync, embed, rank, publish all: {time.perf_counter() - t0:.1f} s; {st['counts']}")
            if args.labeled:
                t0 = time.perf_counter()
                ids = [t["id"] for t in client.iter_tasks(pid, page_size=5000)][: args.labeled]
                for k, tid in enumerate(ids):
                    client.create_annotation(tid, [choice("a" if k % 2 else "b")])
                st = backend.wait(pid, lambda s: not s["pending"] and s["probe"].get("labels") == len(ids), timeout=600)
                print(f"labeled {len(ids)} tasks in {time.perf_counter() - t0:.1f} s; probe: {st['probe']}")
            lat = []
            for k in range(args.annotations):
                head = client.next_task(pid)["id"]
                before = backend.status(pid)["queue_labels"]
                t0 = time.perf_counter()
                client.create_annotation(head, [choice("a" if k % 2 else "b")])
                t_submit = time.perf_counter() - t0
                while True:  # the re-rank that includes this label has reached Label Studio
                    nxt = client.next_task(pid)
                    if nxt and nxt["id"] != head and backend.status(pid)["queue_labels"] > before:
                        break
                    time.sleep(0.05)
                lat.append(time.perf_counter() - t0)
                nxt_pred = [
                    p
                    for p in client.list_predictions(task=nxt["id"])
                    if p["model_version"] == backend.status(pid)["published_version"]
                ]
                proposal = nxt_pred[0]["result"] if nxt_pred else None
                print(
                    f"annotation {k + 1}: submit took {t_submit:.2f} s; new head served after {lat[-1]:.2f} s; "
                    f"its pre-annotation: {proposal[0]['value']['choices'] if proposal else None}"
                )
                backend.wait(pid, lambda s: not s["pending"], timeout=600)
            print(f"latency over {len(lat)} annotations: median {np.median(lat):.2f} s, max {max(lat):.2f} s")
            print("backend log (publishing lines):")
            for line in (tmp / "backend.log").read_text().splitlines():
                if "prediction updates" in line or "first prediction" in line or "synced" in line or "embedded" in line:
                    print("  " + line[-160:])
        finally:
            backend.stop()


if __name__ == "__main__":
    main()
