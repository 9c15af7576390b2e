"""The ranking CSV that `examine rank` writes and `examine report` reads: its columns and its writer.

Kept apart from :mod:`examine.pipeline` so that reading or writing it imports no torch.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from examine.pipeline import FolderRanking

__all__ = ["LABEL_COLUMNS", "RANKING_COLUMNS", "SCREENING_COLUMNS", "columns_help", "write_ranking_csv"]


#: ranking.csv's columns: the queue position (1 = label first) and the EXAMINE value are two different things.
RANKING_COLUMNS = ("path", "sha256", "queue_position", "examine_value", "examine_marginal")
#: Added when labels were given: the probe's proposal for each image and its probability.
LABEL_COLUMNS = ("predicted", "probability")
#: Added when the screening ran: the image's quality and why it was flagged (flagged images close the queue).
SCREENING_COLUMNS = ("quality", "reasons")


def columns_help() -> str:
    """The columns in words, for help texts (built from the constants the writer uses, so they cannot differ)."""
    return (
        f"{','.join(RANKING_COLUMNS)} in queue order (queue_position 1 = label first); "
        f"with --labels also {','.join(LABEL_COLUMNS)}; with the screening on also {','.join(SCREENING_COLUMNS)}"
    )


def write_ranking_csv(result: FolderRanking, path: str | Path) -> Path | None:
    """Write ``path,sha256,queue_position,examine_value,examine_marginal`` in queue order (position 1 = label
    first; ``examine_value`` is the paper's EXAMINE score, higher = more valuable, which is not the queue order),
    plus ``predicted,probability`` when labels were given, ``quality,reasons`` (the screening: flagged
    images close the queue, with their reasons), and ``<name>.errors.csv`` if any image failed.

    Returns the errors file when one was written.
    """
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        extra = list(LABEL_COLUMNS) if result.predicted is not None else []
        extra += list(SCREENING_COLUMNS) if result.quality is not None and result.reasons is not None else []
        w.writerow([*RANKING_COLUMNS, *extra])
        for r, (p, key, m, s) in enumerate(zip(result.paths, result.keys, result.marginal, result.score), start=1):
            row = [str(p), key, r, repr(float(s)), repr(float(m))]
            if result.predicted is not None and result.probability is not None:
                row += [result.predicted[r - 1], f"{float(result.probability[r - 1]):.4f}"]
            if result.quality is not None and result.reasons is not None:
                row += [f"{float(result.quality[r - 1]):.4f}", result.reasons[r - 1]]
            w.writerow(row)
    err_path = Path(path).with_suffix(".errors.csv")
    if not result.errors:
        if err_path.is_file():
            err_path.unlink()
        return None
    with open(err_path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "reason"])
        for p, reason in result.errors:
            w.writerow([str(p), reason])
    return err_path
