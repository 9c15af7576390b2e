"""The ``examine report`` sub-command: a static HTML page for project admins.

The page shows where the EXAMINE ranking of a pool stands: a summary table, the
distribution of the scores (``scores.png``), a 2-D map of the embeddings with
the next batch numbered (``map.png``), and thumbnails of the most and the least
valuable images. Everything lives in one folder with relative links only, so it
can be zipped and opened anywhere; no scripts, fonts or other network fetches.

    OUT/index.html   the page
    OUT/scores.png   histogram of the marginals + score by rank, top/bottom marked
    OUT/map.png      PCA or t-SNE map coloured by score, next batch numbered
    OUT/thumbs/      rank_000001.jpg ... (first in the queue, lowest EXAMINE value, next batch)
    OUT/ranking.csv  the ranking the page was made from (a copy, or written here)

Input is a ranking CSV written by ``examine rank`` (``--ranking``, embeddings
read from ``--model-dir``'s store by the ``sha256`` column), or an image folder
that is ranked first through :func:`examine.pipeline.rank_folder`, the code path of
``examine rank`` (pretraining and embedding what is missing).
"""

from __future__ import annotations

import argparse
import csv
import html
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from examine.cli_args import (
    CLIError,
    add_model_args,
    add_pretrain_args,
    encoder_config_from_args,
    rank_folder_from_args,
)
from examine.ranking_csv import RANKING_COLUMNS, columns_help, write_ranking_csv
from examine.report_map import MAX_MAP_POINTS, TSNE_RANGE, _map_subset, _pyplot, map_coordinates, plot_map

__all__ = ["Ranked", "ReportInput", "read_ranking", "read_failures", "map_coordinates", "build_report", "add_parser"]

REQUIRED_COLUMNS = RANKING_COLUMNS
#: Column names of rankings written before examine named the queue position and the EXAMINE value apart.
_LEGACY = {"rank": "queue_position", "score": "examine_value", "marginal": "examine_marginal"}
RANK_POLICY = (
    "queue position: the queue of `examine rank` (its --policy); "
    "EXAMINE value and marginal: the paper's static values of all images (higher = more valuable), not the queue order"
)
MAX_CURVE_POINTS = 5_000
MAX_FLAGGED_SHOWN = 60  # flagged images shown in the gallery (all are in ranking.csv)
THUMBS = "thumbs"


@dataclass
class Ranked:
    """A ranking in queue order (rank 1 first), one entry per image."""

    paths: list[str]
    keys: list[str]
    marginal: np.ndarray
    score: np.ndarray
    rank: np.ndarray
    reasons: list[str] | None = None  # why the screening flagged each image ('' = not flagged); None: no column

    def flagged(self) -> list[int]:
        """Positions of the images the screening flagged (they close the queue), in queue order."""
        return [i for i, r in enumerate(self.reasons or []) if r]

    def __len__(self) -> int:
        return len(self.paths)


@dataclass
class ReportInput:
    """Everything the page shows besides the images themselves.

    ``embeddings`` holds the rows of the ranked images that have one (``has_embedding``
    marks them, in queue order); ``base_dir`` resolves relative image paths.
    """

    ranked: Ranked
    embeddings: np.ndarray
    has_embedding: np.ndarray
    encoder_version: str
    policy: str
    failed: list[tuple[str, str]]
    source: str
    base_dir: Path


# --------------------------------------------------------------------------- reading


def read_ranking(path: str | Path) -> Ranked:
    """Read a ranking CSV of `examine rank` (:data:`RANKING_COLUMNS`, or the older ``marginal,score,rank``
    names); raise :class:`CLIError` on anything malformed."""
    path = Path(path)
    if not path.is_file():
        raise CLIError(f"{path}: no such ranking CSV (write one with `examine rank IMAGES_DIR -o {path}`)")
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        if reader.fieldnames and not {"queue_position", "examine_value"} & set(reader.fieldnames):
            reader.fieldnames = [_LEGACY.get(c, c) for c in reader.fieldnames]
        missing = [c for c in REQUIRED_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise CLIError(
                f"{path}: missing column(s) {', '.join(missing)}; expected the CSV of `examine rank` "
                f"({','.join(REQUIRED_COLUMNS)})"
            )
        has_reasons = "reasons" in (reader.fieldnames or [])
        rows = [(*_parse_row(path, line, row), row.get("reasons") or "") for line, row in enumerate(reader, start=2)]
    if not rows:
        raise CLIError(f"{path}: holds no ranked images")
    rows.sort(key=lambda r: r[4])
    paths, keys, m, s, rank, reasons = zip(*rows)
    return Ranked(
        list(paths),
        list(keys),
        np.array(m),
        np.array(s),
        np.array(rank, dtype=np.int64),
        list(reasons) if has_reasons else None,
    )


def _parse_row(path: Path, line: int, row: dict) -> tuple[str, str, float, float, int]:
    try:
        m, s, r = float(row["examine_marginal"]), float(row["examine_value"]), int(row["queue_position"])
    except (TypeError, ValueError) as exc:
        raise CLIError(
            f"{path}, line {line}: queue_position, examine_value and examine_marginal must be numbers ({exc})"
        ) from exc
    if not (np.isfinite(m) and np.isfinite(s)):
        raise CLIError(f"{path}, line {line}: examine_value and examine_marginal must be finite")
    return row["path"] or "", (row["sha256"] or "").strip(), m, s, r


def read_failures(ranking_csv: str | Path) -> list[tuple[str, str]]:
    """``(path, reason)`` of the images ``examine rank`` could not read (its ``.errors.csv``), if any."""
    err = Path(ranking_csv).with_suffix(".errors.csv")
    if not err.is_file():
        return []
    with open(err, newline="", encoding="utf-8") as fh:
        return [(r.get("path") or "", r.get("reason") or "") for r in csv.DictReader(fh)]


def _stored_embeddings(ranked: Ranked, args: argparse.Namespace) -> tuple[np.ndarray, np.ndarray, str]:
    """Embeddings of the ranked images from the model directory's store, and the encoder version."""
    from examine.encoder import EncoderError
    from examine.workspace import Workspace

    root = Path(args.model_dir)
    if args.weights is None and not root.is_dir():
        raise CLIError(f"{root}: no such model directory; pass the --model-dir that `examine rank` used")
    ws = Workspace(root)
    try:
        encoder = ws.encoder(weights=args.weights, config=encoder_config_from_args(args))
    except EncoderError as exc:
        raise CLIError(str(exc)) from exc
    if not (ws.store_root / encoder.version).is_dir():
        raise CLIError(
            f"{root}: no embeddings stored for encoder {encoder.version}; "
            "rank the images with this model directory first"
        )
    store = ws.store(encoder)
    has = np.array([k in store for k in ranked.keys], dtype=bool)
    if has.sum() < 2:
        raise CLIError(
            f"{root}: only {int(has.sum())} of {len(ranked)} ranked images have embeddings for encoder "
            f"{encoder.version}; was the ranking made with another model directory?"
        )
    X = store.get([k for k, h in zip(ranked.keys, has) if h])
    return X, has, encoder.version


# --------------------------------------------------------------------------- the map


def plot_scores(ranked: Ranked, top: int, batch: int, out: Path) -> None:
    """``scores.png``: histogram of the marginals and the score by rank, top and bottom marked."""
    plt = _pyplot()
    n = len(ranked)
    top_n, bottom_n = _sections(n, top)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4), dpi=110)
    ax1.hist(ranked.marginal, bins=int(np.clip(np.sqrt(n) * 2, 10, 60)), color="#9aa7b8", edgecolor="white")
    y0 = ax1.get_ylim()[1]
    ax1.plot(ranked.marginal[:top_n], np.full(top_n, -0.03 * y0), "|", color="#1a7f37", ms=14, label=f"top {top_n}")
    if bottom_n:
        ax1.plot(
            ranked.marginal[n - bottom_n :],
            np.full(bottom_n, -0.03 * y0),
            "|",
            color="#c62828",
            ms=14,
            label=f"bottom {bottom_n}",
        )
    ax1.set_ylim(-0.08 * y0, y0)
    ax1.set(xlabel="marginal: drop of σ1 when the image is left out", ylabel="images", title="Marginals")
    ax1.legend(frameon=False)
    _plot_curve(ax2, ranked, top_n, bottom_n, batch)
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)


def _plot_curve(ax, ranked: Ranked, top_n: int, bottom_n: int, batch: int) -> None:
    """Score against queue position, with the top/bottom sections shaded and the next batch dotted."""
    n = len(ranked)
    step = max(1, n // MAX_CURVE_POINTS)
    pos = np.arange(1, n + 1)
    ax.plot(pos[::step], ranked.score[::step], color="#44546a", lw=1.5)
    ax.axvspan(0.5, top_n + 0.5, color="#1a7f37", alpha=0.12)
    ax.plot(pos[:top_n], ranked.score[:top_n], ".", color="#1a7f37", label=f"top {top_n}")
    if bottom_n:
        ax.axvspan(n - bottom_n + 0.5, n + 0.5, color="#c62828", alpha=0.12)
        ax.plot(pos[n - bottom_n :], ranked.score[n - bottom_n :], ".", color="#c62828", label=f"bottom {bottom_n}")
    b = min(batch, n)
    if b:
        ax.plot(pos[:b], ranked.score[:b], "o", color="#d9480f", ms=5, label=f"next batch ({b})")
    ax.set(xlabel="queue position (1 = label first)", ylabel="EXAMINE score", title="Score by rank")
    ax.set_ylim(-0.03, 1.05)
    if n > 200:
        ax.set_xscale("log")
    ax.legend(frameon=False)


def _sections(n: int, top: int) -> tuple[int, int]:
    """Sizes of the most- and least-valuable sections, never overlapping."""
    top_n = min(max(top, 0), n)
    return top_n, min(top_n, n - top_n)


def _resolve(path: str, base_dir: Path) -> Path:
    p = Path(path)
    if p.is_absolute() or p.exists():
        return p
    return base_dir / p


def write_thumbnail(src: Path, dest: Path, size: int) -> str | None:
    """Write a JPEG thumbnail of ``src`` (longer side ``size``); return the reason when it cannot."""
    from PIL import Image

    from examine.images import ImageLoadError, load_image

    try:
        img = Image.fromarray(load_image(src, max_side=2 * size))
    except ImageLoadError as exc:
        return str(exc)
    img.thumbnail((size, size))
    img.save(dest, quality=88)
    return None


def _thumb_name(rank: int) -> str:
    return f"{THUMBS}/rank_{rank:06d}.jpg"


def write_thumbnails(data: ReportInput, positions: Sequence[int], out: Path, size: int) -> dict[int, str]:
    """Thumbnails of the images at queue ``positions``; returns position → reason for those that failed."""
    folder = out / THUMBS
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("rank_*.jpg"):
        old.unlink()
    failed = {}
    for i in positions:
        reason = write_thumbnail(
            _resolve(data.ranked.paths[i], data.base_dir), out / _thumb_name(int(data.ranked.rank[i])), size
        )
        if reason:
            failed[i] = reason
    return failed


# --------------------------------------------------------------------------- HTML

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0 auto;max-width:1180px;padding:24px;
color:#1f2933;background:#fafbfc}
h1{margin:0 0 4px}h2{margin-top:36px;border-bottom:1px solid #dde3ea;padding-bottom:4px}
.sub{color:#5f6b7a;margin:0 0 20px}
table.summary{border-collapse:collapse}table.summary th{text-align:left;padding:4px 18px 4px 0;color:#5f6b7a;
font-weight:600}table.summary td{padding:4px 0}
table.batch{border-collapse:collapse;width:100%}table.batch th,table.batch td{padding:4px 8px;text-align:left;
border-bottom:1px solid #e6eaef;vertical-align:middle}table.batch img{height:56px;border-radius:3px}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(150px,1fr));gap:12px}
figure{margin:0;background:#fff;border:1px solid #e1e6ec;border-radius:6px;padding:8px;text-align:center}
figure img{max-width:100%;height:130px;object-fit:contain;display:block;margin:0 auto 6px}
figcaption{font-size:12px;line-height:1.35}figcaption b{font-size:13px}
.name{color:#5f6b7a;word-break:break-all}.missing{height:130px;display:flex;align-items:center;
justify-content:center;color:#c62828;font-size:12px;background:#fdf1f1;margin-bottom:6px}
.plot{max-width:100%;border:1px solid #e1e6ec;background:#fff}
code{background:#eef1f4;padding:1px 4px;border-radius:3px}
details{margin-top:8px}li{font-size:13px}.reason{color:#b45309}
"""


def _esc(value: object) -> str:
    return html.escape(str(value), quote=True)


def _figure(data: ReportInput, i: int, failed: dict[int, str], note: str = "") -> str:
    """One thumbnail card: image (or why not), queue position, EXAMINE value, file name (and a note)."""
    r = data.ranked
    rank = int(r.rank[i])
    if i in failed:
        pic = f'<div class="missing" title="{_esc(failed[i])}">image unavailable</div>'
    else:
        pic = f'<img src="{_thumb_name(rank)}" alt="rank {rank}" loading="lazy">'
    return (
        f'<figure data-rank="{rank}" data-sha256="{_esc(r.keys[i])}">{pic}<figcaption><b>#{rank}</b> · '
        f'EXAMINE value <span class="value">{r.score[i]:.4f}</span><br><span class="name" title="{_esc(r.paths[i])}">'
        f"{_esc(Path(r.paths[i]).name)}</span>"
        + (f'<br><span class="reason">{_esc(note)}</span>' if note else "")
        + "</figcaption></figure>"
    )


def _summary_rows(data: ReportInput, map_method: str) -> list[tuple[str, str]]:
    r = data.ranked
    missing = len(r) - int(data.has_embedding.sum())
    rows = [
        ("Images ranked", f"{len(r):,}"),
        ("Failed images", f"{len(data.failed):,}" + (" (listed below)" if data.failed else "")),
        ("Encoder version", f"<code>{_esc(data.encoder_version)}</code>"),
        ("Ranking policy", _esc(data.policy)),
        (
            "EXAMINE values",
            f"highest {r.score.max():.4f} · median {np.median(r.score):.4f} · lowest {r.score.min():.4f} "
            "(higher = more valuable on its own; the queue order also weighs coverage and the labels)",
        ),
        (
            "Embedding map",
            _esc(map_method)
            + (f"; {missing:,} ranked image(s) without a stored embedding left out" if missing else ""),
        ),
        ("Source", _esc(data.source)),
        ("Generated", datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")),
    ]
    return rows


def _batch_table(data: ReportInput, batch: Sequence[int], failed: dict[int, str]) -> str:
    r = data.ranked
    body = []
    for i in batch:
        rank = int(r.rank[i])
        pic = "—" if i in failed else f'<img src="{_thumb_name(rank)}" alt="rank {rank}">'
        body.append(
            f"<tr><td>{rank}</td><td>{pic}</td><td>{r.score[i]:.4f}</td>"
            f"<td>{r.marginal[i]:.4g}</td><td>{_esc(r.paths[i])}</td></tr>"
        )
    return (
        '<table class="batch"><tr><th>queue position</th><th>image</th><th>EXAMINE value</th><th>EXAMINE marginal</th>'
        "<th>path</th></tr>" + "".join(body) + "</table>"
    )


def _failed_list(failed: list[tuple[str, str]], limit: int = 200) -> str:
    if not failed:
        return ""
    items = "".join(f"<li><code>{_esc(p)}</code>: {_esc(reason)}</li>" for p, reason in failed[:limit])
    more = f"<li>… and {len(failed) - limit:,} more (see ranking.errors.csv)</li>" if len(failed) > limit else ""
    return f"<details><summary>{len(failed):,} image(s) could not be read</summary><ul>{items}{more}</ul></details>"


def _flagged_section(data: ReportInput, failed: dict[int, str]) -> str:
    """The gallery of the images the screening flagged, each with its reasons ('' when none)."""
    every = data.ranked.flagged()
    if not every:
        return ""
    reasons = data.ranked.reasons or []
    shown = every[:MAX_FLAGGED_SHOWN]
    more = f" The first {len(shown)} are shown; ranking.csv lists all." if len(shown) < len(every) else ""
    cards = "".join(_figure(data, i, failed, reasons[i]) for i in shown)
    return (
        f'<h2>Flagged as unusable ({len(every)})</h2><p class="sub">The screening judged these images blank, '
        "blurred, noisy, badly exposed, compressed, marked, foreign or near-duplicates, each against the rest of "
        f"the pool; they close the queue (never dropped), and a label on one unflags it.{more}</p>"
        f'<div class="grid" id="flagged">{cards}</div>'
    )


def render_html(
    data: ReportInput, *, top: int, batch: int, map_method: str, failed: dict[int, str], has_errors_csv: bool
) -> str:
    """The page: summary, next batch, plots, most and least valuable thumbnails."""
    n = len(data.ranked)
    top_n, bottom_n = _sections(n, top)
    summary = "".join(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in _summary_rows(data, map_method))
    downloads = '<a href="ranking.csv">ranking.csv</a>' + (
        ' · <a href="ranking.errors.csv">ranking.errors.csv</a>' if has_errors_csv else ""
    )
    most = "".join(_figure(data, i, failed) for i in range(top_n))
    lowest = np.argsort(data.ranked.score, kind="stable")[:bottom_n]
    least = "".join(_figure(data, int(i), failed) for i in lowest)
    least_section = (
        (
            f'<h2>Lowest EXAMINE value ({bottom_n})</h2><p class="sub">The images that add least to the dominant '
            f"direction of the embeddings, often atypical ones (lowest value first). They can still stand early in "
            f"the queue, which also serves every cluster and the probe's doubts.</p>"
            f'<div class="grid" id="least">{least}</div>'
        )
        if bottom_n
        else ""
    )
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>EXAMINE report</title><style>{_CSS}</style></head><body>
<h1>EXAMINE report</h1>
<p class="sub">Which unlabeled images to label first: queue position 1 is labeled first. The EXAMINE value
(1.0 = highest) is the paper's label-free score of each image; the queue also weighs coverage and the labels.
Downloads: {downloads}</p>
<table class="summary">{summary}</table>
{_failed_list(data.failed)}
<h2>Next batch ({min(batch, n)})</h2>
<p class="sub">The head of this ranking, in queue order; the map numbers them the same way.</p>
{_batch_table(data, range(min(batch, n)), failed)}
<h2>Scores</h2>
<img class="plot" src="scores.png" alt="distribution of EXAMINE marginals and scores">
<h2>Embedding map</h2>
<p class="sub">Each dot is an image, coloured by its EXAMINE value; the next batch is ringed and numbered in queue order.</p>
<img class="plot" src="map.png" alt="2-D map of the embeddings coloured by score">
<h2>First in the queue ({top_n})</h2>
<div class="grid" id="most">{most}</div>
{least_section}
{_flagged_section(data, failed)}
</body></html>
"""


# --------------------------------------------------------------------------- building


def build_report(
    data: ReportInput,
    out: str | Path,
    *,
    top: int = 24,
    batch: int = 10,
    map_method: str = "auto",
    thumb_size: int = 160,
    seed: int = 0,
) -> Path:
    """Write ``index.html``, ``scores.png``, ``map.png`` and ``thumbs/`` into ``out``; return the page's path."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    n = len(data.ranked)
    top_n, bottom_n = _sections(n, top)
    lowest = np.argsort(data.ranked.score, kind="stable")[:bottom_n]
    flagged = data.ranked.flagged()[:MAX_FLAGGED_SHOWN]
    positions = sorted(set(range(top_n)) | {int(i) for i in lowest} | set(range(min(batch, n))) | set(flagged))
    failed = write_thumbnails(data, positions, out, thumb_size)
    plot_scores(data.ranked, top, batch, out / "scores.png")
    method = _write_map(data, batch, map_method, seed, out / "map.png")
    page = render_html(
        data,
        top=top,
        batch=batch,
        map_method=method,
        failed=failed,
        has_errors_csv=(out / "ranking.errors.csv").is_file(),
    )
    (out / "index.html").write_text(page, encoding="utf-8")
    return out / "index.html"


def _write_map(data: ReportInput, batch: int, method: str, seed: int, dest: Path) -> str:
    """Map the embedded images (a subsample of huge pools) and plot it; return the method's description."""
    rows = np.flatnonzero(data.has_embedding)  # queue positions with an embedding, aligned with data.embeddings
    in_batch = np.flatnonzero(rows < batch)
    subset = _map_subset(len(rows), in_batch, MAX_MAP_POINTS, seed)
    xy, desc = map_coordinates(data.embeddings[subset], method, seed)
    if len(subset) < len(rows):
        desc += f" (a random sample of the {len(rows):,} embedded)"
    where = np.searchsorted(subset, in_batch)
    plot_map(xy, data.ranked.score[rows[subset]], xy[where], desc, dest)
    return desc


# --------------------------------------------------------------------------- command line


def _check_args(args: argparse.Namespace) -> None:
    if bool(args.images) == bool(args.ranking):
        raise CLIError("give either an IMAGES_DIR to rank or --ranking ranking.csv (from `examine rank`), not both")
    for name in ("top", "batch"):
        if getattr(args, name) < 0:
            raise CLIError(f"--{name} must be >= 0")
    if args.thumb_size < 16:
        raise CLIError("--thumb-size must be at least 16 pixels")


def _ranking_csv(args: argparse.Namespace, out: Path) -> tuple[Path, str]:
    """The CSV to report on, in ``out`` (ranked here from IMAGES_DIR, or copied), and a description of the source."""
    dest = out / "ranking.csv"
    if args.images:
        result = rank_folder_from_args(args)
        write_ranking_csv(result, dest)
        return dest, f"images folder {args.images}"
    src = Path(args.ranking)
    read_ranking(src)  # validate before touching the model directory
    _mirror(src, dest)
    _mirror(src.with_suffix(".errors.csv"), dest.with_suffix(".errors.csv"))
    return src, f"ranking {src}"


def _mirror(src: Path, dest: Path) -> None:
    """Make ``dest`` a copy of ``src``, or remove a stale ``dest`` when ``src`` does not exist."""
    if src.is_file():
        if not (dest.exists() and src.samefile(dest)):
            shutil.copyfile(src, dest)
    elif dest.is_file():
        dest.unlink()


def cmd_report(args: argparse.Namespace) -> None:
    """``examine report``: rank or read a ranking, then write the HTML report."""
    _check_args(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    csv_path, source = _ranking_csv(args, out)
    ranked = read_ranking(csv_path)
    X, has, version = _stored_embeddings(ranked, args)
    base_dir = Path.cwd() if args.images else csv_path.parent.resolve()
    data = ReportInput(ranked, X, has, version, RANK_POLICY, read_failures(csv_path), source, base_dir)
    index = build_report(
        data, out, top=args.top, batch=args.batch, map_method=args.map, thumb_size=args.thumb_size, seed=args.seed
    )
    print(f"wrote the report on {len(ranked)} images to {index}")


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register the ``report`` sub-command on an ``argparse`` sub-parser collection."""
    p = subparsers.add_parser(
        "report",
        help="static HTML report for admins: scores, embedding map, next batch, thumbnails",
        description="Write OUT/index.html (+ scores.png, map.png, thumbs/) from a ranking CSV of `examine rank` "
        "or by ranking IMAGES_DIR first. Relative links only: zip the folder and open it anywhere.",
    )
    p.add_argument("images", nargs="?", help="folder of images to rank first (as `examine rank` does)")
    p.add_argument("--ranking", metavar="CSV", help=f"ranking CSV written by `examine rank` ({columns_help()})")
    p.add_argument("--out", default="report", help="folder to write (default ./report)")
    p.add_argument(
        "--top",
        type=int,
        default=24,
        help="how many of the most (and of the least) valuable images to show (default 24)",
    )
    p.add_argument("--batch", type=int, default=10, help="size of the next batch marked on the map (default 10)")
    p.add_argument(
        "--map",
        choices=["auto", "pca", "tsne"],
        default="auto",
        help=f"embedding map (auto: t-SNE for {TSNE_RANGE[0]}–{TSNE_RANGE[1]} images, else PCA)",
    )
    p.add_argument("--thumb-size", type=int, default=160, help="thumbnail size in pixels (default 160)")
    add_model_args(p)
    add_pretrain_args(p)
    p.set_defaults(func=cmd_report)
