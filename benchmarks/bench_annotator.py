"""A scripted annotator in a real Label Studio: does the stream reflect each label, and does every task keep one
current prediction?

    python benchmarks/bench_annotator.py [--tasks 200] [--interval 2] [--annotations 30] [--labeled 0] [--ls-db postgres]

Starts Label Studio 1.23.2 (from .venv-ls) and the backend on 127.0.0.1, imports N tasks showing real medical
tiles (the class of each is its source image), connects the backend and waits for the first ranking. Then an
annotator takes ``/next``, looks at the image for ``--interval`` seconds, submits the right class, and at once asks
``/next`` again, as the UI does. For every serve it records:

- whether the ranking in force when Label Studio chose already included every label submitted so far;
- where the served task stands in the first ranking that includes the last label (0 = its head), once that
  re-rank has landed, and how long after the submit it landed;
- whether the served task came from the head of the ranking in force (score below 0.1), i.e. Label Studio's
  round robin over that ranking chose it;
- the project's prediction counts: predictions of the current version against unlabeled tasks, all predictions
  against tasks + 20 (and, every 10 serves on projects up to 2,000 tasks, the exact per-task count).

Prints each serve and a summary with the targets of issue 17.
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
from backend.publish import HEAD_BAND  # noqa: E402
from benchmarks._services import add_ls_db_argument, start_backend  # noqa: E402
from examine.datasets import medical_tiles_with_sources  # noqa: E402
from scripts.pg_cluster import PostgresCluster  # noqa: E402
from tests.backend_server import BackendServer  # noqa: E402
from tests.lsserver import LabelStudioServer  # noqa: E402


def write_tiles(folder: Path, n: int, size: int) -> list[str]:
    """n tiles cut from real medical images; returns each tile's source (its class)."""
    folder.mkdir(parents=True, exist_ok=True)
    base, sources = medical_tiles_with_sources(64, size=128, seed=1)
    rng = np.random.default_rng(0)
    classes = []
    for i in range(n):
        k = i % len(base)
        y, x = rng.integers(0, 128 - size, size=2) if size < 128 else (0, 0)
        buf = io.BytesIO()
        Image.fromarray(np.ascontiguousarray(base[k][y : y + size, x : x + size])).save(buf, format="PNG")
        (folder / f"t{i:06d}.png").write_bytes(buf.getvalue())
        classes.append(sources[k])
    return classes


def config(classes: list[str]) -> str:
    choices = "".join(f'<Choice value="{c}"/>' for c in sorted(set(classes)))
    return f'<View><Image name="image" value="$image"/><Choices name="c" toName="image">{choices}</Choices></View>'


def answer(value: str) -> list[dict]:
    return [{"from_name": "c", "to_name": "image", "type": "choices", "value": {"choices": [value]}}]


def counts(client: LabelStudio, pid: int, tasks: int, labeled: int) -> tuple[int, int, int]:
    """(predictions of the project's version, unlabeled tasks, all predictions)."""
    version = client.get_project(pid)["model_version"]
    versions = client.list_model_versions(pid)
    return int(versions.get(version, 0)), tasks - labeled, int(sum(versions.values()))


def exact_per_task(client: LabelStudio, pid: int, version: str) -> list[int]:
    """Predictions of ``version`` held by each unlabeled task."""
    out = []
    for t in client.iter_tasks(pid, fields="all", page_size=5000):
        if not t.get("total_annotations"):
            out.append(sum(p.get("model_version") == version for p in t.get("predictions") or []))
    return out


def wait_for_labels(backend: BackendServer, pid: int, labels: int, timeout: float = 600.0) -> dict:
    """The backend's status once the ranking in force knows ``labels`` labels (polled every 50 ms)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        st = backend.status(pid)
        if st["queue_labels"] >= labels:
            return st
        time.sleep(0.05)
    raise TimeoutError(f"no ranking with {labels} labels within {timeout:.0f} s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tasks", type=int, default=200)
    ap.add_argument("--interval", type=float, default=2.0, help="seconds the annotator looks at each image")
    ap.add_argument("--annotations", type=int, default=30)
    ap.add_argument("--labeled", type=int, default=0, help="tasks labeled through the API before the annotator starts")
    ap.add_argument("--size", type=int, default=32, help="tile side in pixels")
    add_ls_db_argument(ap)
    args = ap.parse_args()
    with contextlib.ExitStack() as stack:
        ls, backend, truth = start_stack(stack, args.ls_db, args.tasks, args.size)
        run(args, ls, backend, truth)


def start_stack(
    stack: contextlib.ExitStack, ls_db: str, tasks: int, size: int, task_lock_ttl: int | None = 3
) -> tuple[LabelStudioServer, BackendServer, list[str]]:
    """Label Studio (on ``ls_db``, ``task_lock_ttl``; None: its default) and the backend, stopped by ``stack``, and
    ``tasks`` tiles written under its files root; the class of each tile."""
    tmp = Path(stack.enter_context(tempfile.TemporaryDirectory()))
    pg = stack.enter_context(PostgresCluster()) if ls_db == "postgres" else None
    ls = stack.enter_context(LabelStudioServer(tmp / "ls", postgres=pg, task_lock_ttl=task_lock_ttl))
    print(f"Label Studio on {'PostgreSQL ' + str(pg.port) if pg else 'SQLite'}")
    truth = write_tiles(Path(ls.files_root) / "bench", tasks, size)
    backend = start_backend(ls, tmp)
    stack.callback(backend.stop)
    return ls, backend, truth


def make_project(
    ls: LabelStudioServer, backend: BackendServer, truth: list[str], title: str, *, wait: bool = True
) -> tuple[LabelStudio, int, list[int]]:
    """A project of the tiles (one task each), the backend connected and (``wait``) its first ranking in Label
    Studio with every task's prediction: the admin's client, the project id and the task ids (in tile order)."""
    client = LabelStudio(ls.url, ls.token, timeout=300)
    pid = client.create_project(title, config(truth))["id"]
    client.add_local_storage(pid, str(Path(ls.files_root) / "bench"), sync=False)
    ids: list[int] = []
    tasks = [{"image": f"/data/local-files/?d=bench/t{i:06d}.png"} for i in range(len(truth))]
    t0 = time.perf_counter()
    for s in range(0, len(tasks), 5000):
        ids += list(client.import_tasks(pid, tasks[s : s + 5000]))
    print(f"{len(truth)} tasks imported in {time.perf_counter() - t0:.1f} s", flush=True)
    t0 = time.perf_counter()
    client.add_ml_backend(pid, backend.url, "examine")
    if wait:
        backend.wait(pid, lambda s: s["published_version"] and not s["pending"], timeout=3600)
        print(f"{len(truth)} tasks: connect → first ranking in Label Studio {time.perf_counter() - t0:.1f} s")
    return client, pid, ids


def run(args: argparse.Namespace, ls: LabelStudioServer, backend: BackendServer, truth: list[str]) -> None:
    client, pid, ids = make_project(ls, backend, truth, "annotator")
    cls = dict(zip(ids, truth))
    labeled = 0
    for tid in ids[: args.labeled]:
        client.create_annotation(tid, answer(cls[tid]))
        labeled += 1
    if labeled:
        backend.wait(pid, lambda s: s["queue_labels"] >= labeled and not s["pending"], timeout=600)
    rows = []
    t_submit = time.time()
    served = client.next_task(pid)
    for k in range(args.annotations):
        if served is None:
            break
        tid = int(served["id"])
        st = backend.status(pid)
        pred = [p for p in client.list_predictions(task=tid) if p["model_version"] == st["published_version"]]
        row = {
            "task": tid,
            "in_force_knew_all": st["queue_labels"] >= labeled,
            "from_head": bool(pred) and pred[0]["score"] < HEAD_BAND,
            "predictions_of_task": len(pred),
        }
        if k:
            fresh = wait_for_labels(backend, pid, labeled)
            row["landed_s"] = fresh["last_publish"] - t_submit  # the backend's own clock: same machine
            head = fresh["queue_head"]
            row["fresh_position"] = head.index(tid) if tid in head else None
        cur, unlabeled, total = counts(client, pid, args.tasks, labeled)
        row.update(current=cur, unlabeled=unlabeled, total=total)
        if args.tasks <= 2000 and k % 10 == 0:
            per = exact_per_task(client, pid, st["published_version"])
            row["exactly_one"] = all(n == 1 for n in per)
        rows.append(row)
        print(
            f"serve {k + 1:3d}: task {tid}, ranking in force knew every label: {row['in_force_knew_all']}, "
            f"from its head: {row['from_head']}, position in the ranking with the last label: "
            f"{row.get('fresh_position', '-')}, re-rank landed {row.get('landed_s', float('nan')):.2f} s after submit; "
            f"predictions: {cur} current for {unlabeled} unlabeled, {total} in all"
            + (f", exactly one each: {row['exactly_one']}" if "exactly_one" in row else "")
        )
        time.sleep(max(0.0, args.interval - 0.3))
        client.create_annotation(tid, answer(cls[tid]))
        labeled += 1
        t_submit = time.time()
        served = client.next_task(pid)
    after = rows[1:]
    pos = [r["fresh_position"] for r in after]
    landed = np.array([r["landed_s"] for r in after])
    ok = [p == 0 or (r["from_head"] and p is not None) for p, r in zip(pos, after)]
    print(f"\nsummary ({args.tasks} tasks, a submit every {args.interval:g} s, {len(after)} serves after a label):")
    print(f"  served = head of the ranking that includes the last label: {sum(p == 0 for p in pos)}/{len(after)}")
    print(f"  ranking in force at the serve already knew the last label: {sum(r['in_force_knew_all'] for r in after)}")
    print(
        f"  served from the head of the ranking in force (Label Studio's round robin over it): "
        f"{sum(r['from_head'] for r in after)}/{len(after)}"
    )
    print(
        f"  head of the fresh ranking, or round robin over the ranking in force: {sum(ok)}/{len(after)} "
        f"({100 * sum(ok) / max(1, len(after)):.0f} %; target ≥ 90 %)"
    )
    print(
        f"  served outside the fresh top {len(rows[-1:] and backend.status(pid)['queue_head'])}: "
        f"{sum(p is None for p in pos)} (target 0)"
    )
    print(f"  re-rank landed after submit: median {np.median(landed):.2f} s, max {landed.max():.2f} s")
    print(f"  every serve's task held one current prediction: {all(r['predictions_of_task'] == 1 for r in rows)}")
    print(
        f"  current predictions ≥ unlabeled tasks at every sample: {all(r['current'] >= r['unlabeled'] for r in rows)}"
    )
    print(
        f"  all predictions ≤ tasks + 20 at every sample: {all(r['total'] <= args.tasks + 20 for r in rows)} "
        f"(max {max(r['total'] for r in rows)} for {args.tasks} tasks)"
    )
    exact = [r["exactly_one"] for r in rows if "exactly_one" in r]
    if exact:
        print(f"  exact per-task check (every 10th serve): each unlabeled task held exactly one: {all(exact)}")


if __name__ == "__main__":
    main()
