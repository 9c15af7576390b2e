"""The report's 2-D map of the embeddings (PCA or t-SNE) and its plot, with the next batch numbered."""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np

from examine.cli_args import CLIError

__all__ = ["map_coordinates", "plot_map", "TSNE_RANGE", "MAX_MAP_POINTS"]

TSNE_RANGE = (30, 1000)  # t-SNE for n in this range under --map auto, PCA outside it
MAX_MAP_POINTS = 20_000  # larger pools are mapped through a random subsample (next batch always kept)


def map_coordinates(X: np.ndarray, method: str = "auto", seed: int = 0) -> tuple[np.ndarray, str]:
    """2-D coordinates of the rows of ``X`` and a description of the method used.

    ``method``: ``pca`` (first two principal components), ``tsne`` (scikit-learn
    t-SNE on the first 50 components) or ``auto`` (t-SNE when n is in :data:`TSNE_RANGE`).
    """
    X = np.asarray(X, dtype=np.float64)
    n = len(X)
    if method == "auto":
        method = "tsne" if TSNE_RANGE[0] <= n <= TSNE_RANGE[1] else "pca"
    pcs, var = _pca(X, 50)
    if method == "tsne" and n >= 5:
        try:
            from sklearn.manifold import TSNE
        except ImportError:
            method = "pca"
        else:
            perplexity = float(min(30.0, (n - 1) / 3))
            xy = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(pcs)
            return xy, f"t-SNE (perplexity {perplexity:.0f}) of {n} images"
    xy = np.zeros((n, 2))
    xy[:, : min(2, pcs.shape[1])] = pcs[:, :2]
    return xy, f"PCA of {n} images (first two components: {100 * var:.0f}% of the variance)"


def _pca(X: np.ndarray, k: int) -> tuple[np.ndarray, float]:
    """Projections on the first ``k`` principal components and the variance share of the first two."""
    Xc = X - X.mean(axis=0)
    _, s, Vt = np.linalg.svd(Xc, full_matrices=False)
    energy = float((s**2).sum())
    share = float((s[:2] ** 2).sum() / energy) if energy > 0 else 0.0
    return Xc @ Vt[:k].T, share


def _map_subset(n: int, keep: np.ndarray, limit: int, seed: int) -> np.ndarray:
    """Sorted row indices to map: all when ``n <= limit``, else ``keep`` plus a random sample."""
    if n <= limit:
        return np.arange(n)
    rng = np.random.default_rng(seed)
    rest = np.setdiff1d(np.arange(n), keep)
    pick = rng.choice(rest, size=max(0, limit - len(keep)), replace=False)
    return np.sort(np.concatenate([keep, pick]))


# --------------------------------------------------------------------------- plots


def _pyplot():
    try:
        import matplotlib
    except ImportError as exc:
        raise CLIError("examine report needs matplotlib: pip install 'examine-al[report]'") from exc
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_map(xy: np.ndarray, score: np.ndarray, batch_xy: np.ndarray, method: str, out: Path) -> None:
    """``map.png``: the embedding map coloured by score, the next batch ringed and numbered in queue order."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 6.5), dpi=110)
    order = np.argsort(score, kind="stable")  # most valuable drawn last, on top
    size = float(np.clip(4000 / max(len(xy), 1), 4, 40))
    sc = ax.scatter(xy[order, 0], xy[order, 1], c=score[order], cmap="viridis", vmin=0, vmax=1, s=size, linewidths=0)
    fig.colorbar(sc, ax=ax, label="EXAMINE score")
    if len(batch_xy):
        ax.scatter(
            batch_xy[:, 0],
            batch_xy[:, 1],
            s=160,
            facecolors="none",
            edgecolors="#d9480f",
            linewidths=1.8,
            label=f"next batch ({len(batch_xy)}), numbered in queue order",
        )
        _number_batch(ax, batch_xy)
        ax.legend(loc="best", frameon=True, framealpha=0.85)
    ax.set_title(textwrap.fill(f"Embedding map: {method}", 80), fontsize=11)
    ax.set(xticks=[], yticks=[])
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)


def _number_batch(ax, batch_xy: np.ndarray) -> None:
    """Queue numbers around the batch's rings, each at its own angle so that a tight cluster stays legible."""
    from matplotlib import patheffects

    halo = [patheffects.withStroke(linewidth=3, foreground="white")]
    for i, (x, y) in enumerate(batch_xy):
        angle = np.pi / 2 - 2 * np.pi * i / len(batch_xy)
        radius = 14 + 6 * (i % 2)
        ax.annotate(
            str(i + 1),
            (x, y),
            xytext=(radius * np.cos(angle), radius * np.sin(angle)),
            textcoords="offset points",
            ha="center",
            va="center",
            fontsize=9,
            fontweight="bold",
            color="#d9480f",
            path_effects=halo,
            arrowprops={"arrowstyle": "-", "color": "#d9480f", "lw": 0.6, "shrinkA": 4, "shrinkB": 6},
        )


# --------------------------------------------------------------------------- thumbnails
