"""Benchmarks that judge a ranking (see ``docs/examine-math.md``), and the ``examine evaluate`` command.

Every method is run on the same embeddings, produced by one embedding function
``embed(images) -> (n, d) array`` (a parameter everywhere):

1. :func:`valuation_curves` — the paper's protocol: a labeled set with planted
   low-quality images; points are removed (or added) in value order and a
   logistic regression on the embeddings is scored on a clean test set.
   EXAMINE (no labels) against random, leave-one-out and KNN-Shapley (labels).
2. :func:`simulate_annotation` — labels hidden, batches of 10, labels revealed
   after each batch; test accuracy of a logistic regression on the labeled
   embeddings at fixed budgets, over several seeds.  Policies: random, the
   :mod:`examine.ranking` policies, k-center greedy, TypiClust.
3. :func:`quality_screening` — real medical tiles with planted corruptions;
   AUROC of "lowest EXAMINE score = corrupted".

Until the MAE encoder is available the embedding is a *stand-in*: PCA of the
pixels (:func:`pixel_pca_embedder`), clearly labelled as such in every output.
"""

from __future__ import annotations

import argparse
import gzip
import os
import platform
import shlex
import struct
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from examine.baselines import kcenter_greedy, knn_shapley, leave_one_out, typiclust
from examine.ranking import POLICIES, PREPROCESSING, rank
from examine.scoring import examine_scores

__all__ = [
    "Embedder",
    "pixel_pca_embedder",
    "resolve_embedder",
    "SELECTORS",
    "simulate_annotation",
    "valuation_curves",
    "quality_screening",
    "run_evaluation",
    "add_parser",
]

BUDGETS: tuple[int, ...] = (20, 50, 100, 200, 500)
BATCH = 10


# --------------------------------------------------------------------------- embedders


@dataclass
class Embedder:
    """An embedding function with a name that goes into every report."""

    fn: Callable[[np.ndarray], np.ndarray]
    name: str
    stand_in: bool = False

    def __call__(self, images: np.ndarray) -> np.ndarray:
        X = np.asarray(self.fn(images), dtype=np.float64)
        if X.ndim != 2 or len(X) != len(images):
            raise ValueError(f"embedder {self.name!r} returned shape {X.shape} for {len(images)} images")
        return X


def pixel_pca_embedder(n_components: int = 64, seed: int = 0) -> Embedder:
    """STAND-IN embedding: pixels scaled to [0, 1] projected on their top principal axes.

    The axes are fitted on the images passed; the projection is *not* centred
    (``x @ components``), so that, like network features, the embeddings keep a
    large common mean and the centring choice of the ranking stays meaningful.
    Not a substitute for the MAE; used only while no encoder is available, and
    labelled ``pixel-pca-<k> (stand-in, not MAE)`` in the results.
    """
    from sklearn.decomposition import PCA

    def fn(images: np.ndarray) -> np.ndarray:
        flat = np.asarray(images, dtype=np.float32).reshape(len(images), -1) / 255.0
        k = min(n_components, flat.shape[0] - 1, flat.shape[1])
        pca = PCA(n_components=k, svd_solver="randomized", random_state=seed).fit(flat)
        return flat @ pca.components_.T

    return Embedder(fn, f"pixel-pca-{n_components} (stand-in, not MAE)", stand_in=True)


def resolve_embedder(name: str = "auto", model_dir: str | None = None) -> Embedder:
    """``"mae"`` (the encoder saved in ``model_dir``), ``"pixel-pca"`` (stand-in) or ``"auto"``.

    The MAE path loads :class:`examine.encoder.Encoder` from ``model_dir`` and
    embeds with :func:`examine.embed.embed_arrays` (grayscale images are
    repeated to RGB).  ``auto`` uses it when ``model_dir`` is given, else the
    stand-in (with a warning).
    """
    if name not in ("auto", "mae", "pixel-pca"):
        raise ValueError(f"unknown embedder {name!r}; choose auto, mae or pixel-pca")
    if name == "mae" or (name == "auto" and model_dir is not None):
        if model_dir is None:
            raise ValueError("the MAE embedder needs --model-dir (a folder written by `examine pretrain`)")
        try:
            from examine.embed import embed_arrays
            from examine.encoder import Encoder
        except ImportError as exc:
            raise ValueError(f"the MAE embedder is unavailable ({exc})") from exc
        try:
            encoder = Encoder.load(model_dir)
        except Exception as exc:  # noqa: BLE001 - reported as a user error
            raise ValueError(f"cannot load the encoder from {model_dir}: {exc}") from exc

        def fn(images: np.ndarray) -> np.ndarray:
            imgs = [np.repeat(im[..., None], 3, axis=2) if im.ndim == 2 else im for im in images]
            return embed_arrays(imgs, encoder)

        version = getattr(encoder, "version", "")
        return Embedder(fn, f"MAE encoder {model_dir} {version}".strip())
    if name == "auto":
        warnings.warn("no MAE encoder given (--model-dir): using the pixel-PCA STAND-IN embedding", stacklevel=2)
    return pixel_pca_embedder()


# --------------------------------------------------------------------------- data


def _datasets_module():
    try:
        from examine import datasets  # type: ignore[attr-defined]

        return datasets
    except ImportError:
        return None


_FMNIST_DIR = Path("/usr/share/datasets/fashion-mnist")


def _read_idx(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as fh:
        data = fh.read()
    zero, dtype, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype != 0x08:
        raise ValueError(f"{path}: not an unsigned-byte idx file")
    shape = struct.unpack(">" + "I" * ndim, data[4 : 4 + 4 * ndim])
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def load_fashion_mnist(split: str, limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Fashion-MNIST images (n, 28, 28) uint8 and labels; ``examine.datasets`` when present."""
    ds = _datasets_module()
    if ds is not None and hasattr(ds, "load_fashion_mnist"):
        return ds.load_fashion_mnist(split, limit)
    prefix = {"train": "train", "test": "t10k"}.get(split)
    if prefix is None:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    img_path = _FMNIST_DIR / f"{prefix}-images-idx3-ubyte.gz"
    if not img_path.is_file():
        raise FileNotFoundError(f"{img_path} is missing; install Debian's dataset-fashion-mnist")
    images = _read_idx(img_path)
    labels = _read_idx(_FMNIST_DIR / f"{prefix}-labels-idx1-ubyte.gz").astype(np.int64)
    if limit is not None:
        images, labels = images[:limit], labels[:limit]
    return images, labels


def load_medmnist(path: str | Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Train images/labels and test images/labels of a MedMNIST ``.npz``."""
    with np.load(path, allow_pickle=False) as z:
        missing = [k for k in ("train_images", "train_labels", "test_images", "test_labels") if k not in z]
        if missing:
            raise ValueError(f"{path}: not a MedMNIST file (missing {missing})")
        return (
            z["train_images"],
            z["train_labels"].reshape(len(z["train_labels"]), -1)[:, 0].astype(np.int64),
            z["test_images"],
            z["test_labels"].reshape(len(z["test_labels"]), -1)[:, 0].astype(np.int64),
        )


def medical_tiles(n: int, size: int = 64, seed: int = 0) -> np.ndarray:
    """``n`` RGB tiles (n, size, size, 3) uint8 from real medical images shipped with scikit-image.

    Uses ``examine.datasets.medical_tiles`` when present; otherwise tiles the
    immunohistochemistry slide and the retina fundus photograph, skipping
    tiles that are mostly background.
    """
    ds = _datasets_module()
    if ds is not None and hasattr(ds, "medical_tiles"):
        return np.asarray(ds.medical_tiles(n, size, seed))
    from skimage import data

    sources = []
    for getter in (data.immunohistochemistry, data.retina):
        try:
            sources.append(np.asarray(getter()))
        except Exception:  # noqa: BLE001 - a missing optional image is skipped
            continue
    if not sources:
        raise RuntimeError("no medical images available from scikit-image")
    tiles = []
    stride = size // 2
    for img in sources:
        for r in range(0, img.shape[0] - size + 1, stride):
            for c in range(0, img.shape[1] - size + 1, stride):
                t = img[r : r + size, c : c + size, :3]
                if (t.mean(axis=2) < 20).mean() < 0.05:  # not background
                    tiles.append(t)
    tiles = np.stack(tiles)
    rng = np.random.default_rng(seed)
    idx = rng.choice(len(tiles), size=min(n, len(tiles)), replace=False)
    return tiles[np.sort(idx)]


CORRUPTION_KINDS: tuple[str, ...] = ("blur", "noise", "blank", "saturation", "jpeg", "pen")


def corrupt(image: np.ndarray, kind: str, rng: np.random.Generator) -> np.ndarray:
    """A low-quality copy of a uint8 image; ``examine.datasets.corrupt`` when present."""
    ds = _datasets_module()
    if ds is not None and hasattr(ds, "corrupt"):
        return np.asarray(ds.corrupt(image, kind, rng))
    from PIL import Image, ImageDraw, ImageFilter

    img = np.asarray(image)
    pil = Image.fromarray(img)
    if kind == "blur":
        return np.asarray(pil.filter(ImageFilter.GaussianBlur(radius=max(img.shape[:2]) / 16)))
    if kind == "noise":
        return np.clip(img + rng.normal(0, 60, img.shape), 0, 255).astype(np.uint8)
    if kind == "blank":
        return np.full_like(img, int(rng.integers(200, 256)))
    if kind == "saturation":
        return np.clip(img.astype(np.float64) * 3.0 + 60, 0, 255).astype(np.uint8)
    if kind == "jpeg":
        import io

        buf = io.BytesIO()
        pil.convert("RGB" if img.ndim == 3 else "L").save(buf, format="JPEG", quality=3)
        out = np.asarray(Image.open(io.BytesIO(buf.getvalue())))
        return out.reshape(img.shape) if out.size == img.size else out[..., 0]
    if kind == "pen":
        draw = ImageDraw.Draw(pil)
        h, w = img.shape[:2]
        color = (0, 90, 0) if img.ndim == 3 else 0
        for _ in range(3):
            pts = [(float(rng.uniform(0, w)), float(rng.uniform(0, h))) for _ in range(4)]
            draw.line(pts, fill=color, width=max(2, w // 10))
        return np.asarray(pil)
    raise ValueError(f"unknown corruption {kind!r}; choose one of {list(CORRUPTION_KINDS)}")


def corruption_kinds() -> tuple[str, ...]:
    ds = _datasets_module()
    if ds is not None and hasattr(ds, "CORRUPTIONS"):
        return tuple(ds.CORRUPTIONS)
    return CORRUPTION_KINDS


def plant_corruptions(
    images: np.ndarray, fraction: float, rng: np.random.Generator, kinds: Sequence[str] | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Corrupt a random ``fraction`` of the images, cycling through ``kinds``.

    Returns the new images, a boolean mask of corrupted rows and the kind per row ('' if clean).
    """
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must be in [0, 1], got {fraction}")
    kinds = tuple(kinds or corruption_kinds())
    out = np.array(images, copy=True)
    n_bad = int(round(fraction * len(images)))
    bad = rng.choice(len(images), size=n_bad, replace=False)
    kind = np.full(len(images), "", dtype=object)
    for j, i in enumerate(bad):
        k = kinds[j % len(kinds)]
        out[i] = corrupt(images[i], k, rng)
        kind[i] = k
    mask = np.zeros(len(images), dtype=bool)
    mask[bad] = True
    return out, mask, kind


# --------------------------------------------------------------------------- classifier


def _single_thread():
    """Limit BLAS/OpenMP to one thread: the many small fits here are 10× slower when threads contend."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - comes with scikit-learn
        import contextlib

        return contextlib.nullcontext()
    return threadpool_limits(limits=1)


def _standardize(X: np.ndarray, ref: np.ndarray) -> np.ndarray:
    mu = ref.mean(axis=0)
    sd = ref.std(axis=0)
    sd[sd == 0] = 1.0
    return (X - mu) / sd


def probe_accuracy(X_train: np.ndarray, y_train: np.ndarray, X_test: np.ndarray, y_test: np.ndarray) -> float:
    """Test accuracy of a logistic regression on the given (standardised) embeddings.

    With a single training class the prediction is that class; with no rows, 0.
    """
    if len(y_train) == 0:
        return 0.0
    classes = np.unique(y_train)
    if len(classes) == 1:
        return float(np.mean(y_test == classes[0]))
    from sklearn.linear_model import LogisticRegression

    clf = LogisticRegression(C=1.0, max_iter=500, tol=1e-3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        clf.fit(X_train, y_train)
    return float(np.mean(clf.predict(X_test) == y_test))


# --------------------------------------------------------------------------- selectors

# A selector picks the next batch: (X, labeled mask, revealed labels, batch, seed) -> indices.
Selector = Callable[[np.ndarray, np.ndarray, np.ndarray, int, int], np.ndarray]


def _random_selector(X, labeled, labels, batch, seed):
    rng = np.random.default_rng([seed, int(labeled.sum())])
    return rng.choice(np.flatnonzero(~labeled), size=batch, replace=False)


def _ranking_selector(policy: str, preprocess: str) -> Selector:
    def select(X, labeled, labels, batch, seed):
        lab = [labels[i] if labeled[i] else None for i in range(len(X))]
        return rank(X, labeled=labeled, labels=lab, policy=policy, seed=seed, preprocess=preprocess).order[:batch]

    return select


def _kcenter_selector(X, labeled, labels, batch, seed):
    return kcenter_greedy(X, labeled, batch, seed=seed)


def _typiclust_selector(X, labeled, labels, batch, seed):
    return typiclust(X, labeled, batch, seed=seed + int(labeled.sum()))


def selectors(preprocess: Sequence[str] = ("none",)) -> dict[str, Selector]:
    """All selection methods: baselines plus every ranking policy per preprocessing.

    Ranking policies are named ``policy`` for the first preprocessing and
    ``policy[prep]`` for the others.
    """
    out: dict[str, Selector] = {"random": _random_selector}
    for j, prep in enumerate(preprocess):
        if prep not in PREPROCESSING:
            raise ValueError(f"unknown preprocess {prep!r}; choose from {list(PREPROCESSING)}")
        for policy in POLICIES:
            out[policy if j == 0 else f"{policy}[{prep}]"] = _ranking_selector(policy, prep)
    out["kcenter"] = _kcenter_selector
    out["typiclust"] = _typiclust_selector
    return out


SELECTORS: dict[str, Selector] = selectors()


# --------------------------------------------------------------------------- 2. annotation simulation


@dataclass
class SimulationResult:
    budgets: list[int]
    accuracy: dict[str, np.ndarray]  # method -> (seeds, budgets)
    seconds: dict[str, float] = field(default_factory=dict)

    def mean_std(self, method: str) -> tuple[np.ndarray, np.ndarray]:
        a = self.accuracy[method]
        return a.mean(axis=0), a.std(axis=0)


def simulate_annotation(
    X_all: np.ndarray,
    y_all: np.ndarray,
    X_test: np.ndarray,
    y_test: np.ndarray,
    *,
    methods: dict[str, Selector] | None = None,
    budgets: Sequence[int] = BUDGETS,
    batch: int = BATCH,
    seeds: int = 5,
    pool_size: int | None = None,
    log: Callable[[str], None] = lambda s: None,
) -> SimulationResult:
    """Simulated annotation: each seed draws a pool, every method labels it batch by batch.

    Selectors see the raw embeddings; the classifier sees them standardised with
    the statistics of ``X_all`` (the same for all methods).  Each seed draws ``pool_size`` rows of ``X_all`` (all rows if None).
    """
    X_all = np.asarray(X_all, dtype=np.float64)
    y_all = np.asarray(y_all)
    if len(X_all) != len(y_all) or len(X_test) != len(y_test):
        raise ValueError("embeddings and labels differ in length")
    budgets = sorted(int(b) for b in budgets)
    if not budgets or budgets[0] < 1:
        raise ValueError("budgets must be positive")
    methods = methods if methods is not None else SELECTORS
    Xs = _standardize(X_all, X_all)
    Ts = _standardize(np.asarray(X_test, dtype=np.float64), X_all)
    pool_size = len(Xs) if pool_size is None else min(pool_size, len(Xs))
    if budgets[-1] > pool_size:
        raise ValueError(f"largest budget {budgets[-1]} exceeds the pool size {pool_size}")
    acc = {m: np.zeros((seeds, len(budgets))) for m in methods}
    secs = {m: 0.0 for m in methods}
    for seed in range(seeds):
        rows = np.sort(np.random.default_rng(1000 + seed).choice(len(Xs), size=pool_size, replace=False))
        X, Xc, y = X_all[rows], Xs[rows], y_all[rows]
        for name, select in methods.items():
            labeled = np.zeros(len(X), dtype=bool)
            revealed = np.full(len(X), None, dtype=object)
            t0 = time.perf_counter()
            for bi, b in enumerate(budgets):
                while labeled.sum() < b:
                    k = min(batch, b - int(labeled.sum()))
                    pick = np.asarray(select(X, labeled, revealed, k, seed), dtype=np.int64)
                    if len(pick) != k or labeled[pick].any() or len(set(pick.tolist())) != k:
                        raise RuntimeError(f"selector {name!r} returned an invalid batch")
                    labeled[pick] = True
                    revealed[pick] = y[pick]
                acc[name][seed, bi] = probe_accuracy(Xc[labeled], y[labeled], Ts, y_test)
            secs[name] += time.perf_counter() - t0
            log(f"  seed {seed} {name:<22} " + " ".join(f"{a:.3f}" for a in acc[name][seed]))
    return SimulationResult(budgets, acc, secs)


# --------------------------------------------------------------------------- 1. valuation curves


@dataclass
class ValuationResult:
    steps: np.ndarray
    curves: dict[str, dict[str, np.ndarray]]  # method -> {"remove_high","remove_low","add_high"} -> (seeds, steps)
    auroc: dict[str, np.ndarray]  # method -> (seeds,) AUROC of "low value = corrupted"
    full_accuracy: np.ndarray


def auroc(score_bad: np.ndarray, is_bad: np.ndarray) -> float:
    """Area under the ROC curve of ``score_bad`` for detecting ``is_bad`` (ties count ½)."""
    from scipy.stats import rankdata

    is_bad = np.asarray(is_bad, dtype=bool)
    n_pos, n_neg = int(is_bad.sum()), int((~is_bad).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    r = rankdata(score_bad)
    return float((r[is_bad].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def valuation_curves(
    X: np.ndarray,
    y: np.ndarray,
    bad: np.ndarray,
    X_test: np.ndarray,
    y_test: np.ndarray,
    *,
    max_points: int | None = None,
    step: int = 25,
    seed: int = 0,
    preprocess: Sequence[str] = ("none",),
    knn_k: int = 10,
) -> dict[str, Any]:
    """Values of every method for one labeled set and the accuracy curves they induce.

    Returns ``{"values": {method: (n,)}, "steps": ..., "curves": {method: {kind: (steps,)}}, "auroc": {method: float}}``
    where curve kinds are ``remove_high`` (drop most valuable first: lower is better),
    ``remove_low`` (drop least valuable first: higher is better) and ``add_high``
    (train on the most valuable first: higher is better).
    """
    Xs = _standardize(np.asarray(X, np.float64), np.asarray(X, np.float64))
    Ts = _standardize(np.asarray(X_test, np.float64), np.asarray(X, np.float64))
    n = len(Xs)
    max_points = min(max_points or n // 2, n - 10)
    values: dict[str, np.ndarray] = {}
    for prep in preprocess:
        name = "examine" if prep == preprocess[0] else f"examine[{prep}]"
        values[name] = rank(np.asarray(X, np.float64), policy="paper", preprocess=prep).value
    values["random"] = np.random.default_rng(seed).random(n)
    values["knn-shapley"] = knn_shapley(Xs, y, Ts, y_test, k=knn_k)

    def utility(Xa, ya):
        return probe_accuracy(Xa, ya, Ts, y_test)

    values["leave-one-out"] = leave_one_out(Xs, y, utility)
    steps = np.arange(0, max_points + 1, step)
    curves: dict[str, dict[str, np.ndarray]] = {}
    for name, v in values.items():
        order = np.lexsort((np.arange(n), -v))  # most valuable first
        c = {"remove_high": [], "remove_low": [], "add_high": []}
        for s in steps:
            keep_h = np.ones(n, bool)
            keep_h[order[:s]] = False
            keep_l = np.ones(n, bool)
            keep_l[order[n - s :] if s else []] = False
            c["remove_high"].append(utility(Xs[keep_h], y[keep_h]))
            c["remove_low"].append(utility(Xs[keep_l], y[keep_l]))
            top = order[: max(s, step)]
            c["add_high"].append(utility(Xs[top], y[top]))
        curves[name] = {k: np.asarray(a) for k, a in c.items()}
    return {
        "values": values,
        "steps": steps,
        "curves": curves,
        "auroc": {name: auroc(-v, bad) for name, v in values.items()},
    }


# --------------------------------------------------------------------------- 3. quality screening


def quality_screening(
    X: np.ndarray, bad: np.ndarray, kinds: np.ndarray, *, preprocess: Sequence[str] = PREPROCESSING
) -> dict[str, dict[str, float]]:
    """AUROC of "lowest EXAMINE score = corrupted", overall and per corruption kind, per preprocessing.

    Per kind, the positives are the rows of that kind and the negatives the clean rows.
    """
    X = np.asarray(X, np.float64)
    bad = np.asarray(bad, bool)
    out: dict[str, dict[str, float]] = {}
    for prep in preprocess:
        s = rank(X, policy="paper", preprocess=prep).value
        row = {"all": auroc(-s, bad)}
        for k in sorted(set(kinds[bad])):
            sel = (kinds == k) | ~bad
            row[k] = auroc(-s[sel], bad[sel])
        out[prep] = row
    return out


# --------------------------------------------------------------------------- orchestration


@dataclass
class EvalConfig:
    dataset: str = "fashion-mnist"
    medmnist: str | None = None
    embeddings: str | None = None
    labels: str | None = None
    out: str = "benchmarks"
    seeds: int = 5
    quick: bool = False
    embedder: str = "auto"
    model_dir: str | None = None
    preprocess: tuple[str, ...] = ("center", "none")
    n_train: int = 6000
    n_test: int = 2000
    pool_size: int = 4000
    n_value: int = 400
    n_tiles: int = 400
    corrupt_fraction: float = 0.15
    skip: tuple[str, ...] = ()
    command: str = ""
    quick_applied: bool = False


def _quick(cfg: EvalConfig) -> EvalConfig:
    """Smoke-test sizes (explicit sizes set afterwards still win)."""
    if not cfg.quick_applied:
        cfg.seeds = min(cfg.seeds, 2)
        cfg.n_train, cfg.n_test, cfg.pool_size = 500, 200, 400
        cfg.n_value, cfg.n_tiles = 60, 48
        cfg.quick_applied = True
    return cfg


def _labeled_data(cfg: EvalConfig, embed: Embedder, log) -> dict[str, Any]:
    """Images (when known) and embeddings of the train and test parts of the labeled dataset."""
    if cfg.embeddings or cfg.labels:
        if not (cfg.embeddings and cfg.labels):
            raise ValueError("--embeddings and --labels go together")
        X = np.load(cfg.embeddings, allow_pickle=False)
        y = np.load(cfg.labels, allow_pickle=False)
        if X.ndim != 2 or y.shape != (len(X),):
            raise ValueError(f"embeddings {X.shape} and labels {y.shape} do not match (need (n, d) and (n,))")
        rng = np.random.default_rng(0)
        perm = rng.permutation(len(X))
        n_test = min(cfg.n_test, len(X) // 3)
        te, tr = perm[:n_test], perm[n_test:]
        return {"name": Path(cfg.embeddings).name, "X": X[tr], "y": y[tr], "X_test": X[te], "y_test": y[te], "images": None}
    if cfg.dataset == "fashion-mnist":
        tr_img, tr_y = load_fashion_mnist("train", cfg.n_train)
        te_img, te_y = load_fashion_mnist("test", cfg.n_test)
        name = "Fashion-MNIST"
    elif cfg.dataset == "medmnist":
        if not cfg.medmnist:
            raise ValueError("--dataset medmnist needs --medmnist PATH.npz")
        tr_img, tr_y, te_img, te_y = load_medmnist(cfg.medmnist)
        tr_img, tr_y, te_img, te_y = tr_img[: cfg.n_train], tr_y[: cfg.n_train], te_img[: cfg.n_test], te_y[: cfg.n_test]
        name = Path(cfg.medmnist).stem
    else:
        return {}
    log(f"embedding {len(tr_img) + len(te_img)} {name} images with {embed.name}")
    Z = embed(np.concatenate([tr_img, te_img]))
    return {"name": name, "X": Z[: len(tr_img)], "y": tr_y, "X_test": Z[len(tr_img) :], "y_test": te_y,
            "images": (tr_img, te_img)}


def run_evaluation(cfg: EvalConfig, embed: Embedder | None = None, log: Callable[[str], None] = print) -> Path:
    """Run the three benchmarks, write PNG plots and ``RESULTS.md`` into ``cfg.out``; return the markdown path."""
    if cfg.quick:
        cfg = _quick(cfg)
    embed = embed or resolve_embedder(cfg.embedder, cfg.model_dir)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    report: dict[str, Any] = {"cfg": cfg, "embedder": embed.name, "stand_in": embed.stand_in, "timings": {}}
    data = _labeled_data(cfg, embed, log) if cfg.dataset != "medical-tiles" or cfg.embeddings else {}
    if data:
        report["dataset"] = data["name"]
        if "simulation" not in cfg.skip:
            log("annotation simulation")
            t0 = time.perf_counter()
            budgets = [b for b in BUDGETS if b <= (cfg.pool_size // 2)] if cfg.quick else list(BUDGETS)
            if cfg.quick:
                budgets = [20, 50]
            with _single_thread():
                sim = simulate_annotation(
                    data["X"], data["y"], data["X_test"], data["y_test"], methods=selectors(cfg.preprocess),
                    budgets=budgets, seeds=cfg.seeds, pool_size=cfg.pool_size, log=log,
                )
            report["simulation"] = sim
            report["timings"]["simulation"] = time.perf_counter() - t0
            _plot_simulation(sim, out / "simulation.png", f"{data['name']} — {embed.name}")
        if "valuation" not in cfg.skip:
            log("valuation curves")
            t0 = time.perf_counter()
            report["valuation"] = _run_valuation(cfg, data, embed, log)
            report["timings"]["valuation"] = time.perf_counter() - t0
            if report["valuation"] is not None:
                _plot_valuation(report["valuation"], out / "valuation.png", f"{data['name']} — {embed.name}")
    if "quality" not in cfg.skip:
        log("quality screening on medical tiles")
        t0 = time.perf_counter()
        report["quality"] = _run_quality(cfg, embed)
        report["timings"]["quality"] = time.perf_counter() - t0
        _plot_quality(report["quality"], out / "quality.png", embed.name)
    report["timings"]["total"] = time.perf_counter() - t_start
    path = out / "RESULTS.md"
    path.write_text(_markdown(report))
    log(f"wrote {path}")
    return path


def _run_valuation(cfg: EvalConfig, data: dict[str, Any], embed: Embedder, log) -> dict[str, Any] | None:
    """Valuation curves averaged over seeds: a fresh labeled set with planted corruptions per seed."""
    if data.get("images") is None:
        log("  (skipped: no images to corrupt with precomputed embeddings)")
        return None
    tr_img, te_img = data["images"]
    n_seeds = max(1, min(cfg.seeds, 3))
    runs = []
    for seed in range(n_seeds):
        rng = np.random.default_rng(2000 + seed)
        idx = rng.choice(len(tr_img), size=min(cfg.n_value, len(tr_img)), replace=False)
        imgs, bad, _ = plant_corruptions(tr_img[idx], cfg.corrupt_fraction, rng)
        # Re-embed the corrupted set together with the test images (the stand-in PCA is fitted on both).
        Z = embed(np.concatenate([imgs, te_img]))
        with _single_thread():
            res = valuation_curves(
                Z[: len(imgs)], data["y"][idx], bad, Z[len(imgs) :], data["y_test"], seed=seed,
                preprocess=cfg.preprocess, step=max(5, len(idx) // 16),
            )
        log("  seed %d AUROC(low value = corrupted): " % seed + ", ".join(f"{k} {v:.3f}" for k, v in res["auroc"].items()))
        runs.append(res)
    methods = list(runs[0]["curves"])
    return {
        "steps": runs[0]["steps"],
        "n": len(idx),
        "seeds": n_seeds,
        "curves": {m: {k: np.stack([r["curves"][m][k] for r in runs]) for k in runs[0]["curves"][m]} for m in methods},
        "auroc": {m: np.array([r["auroc"][m] for r in runs]) for m in methods},
    }


def _run_quality(cfg: EvalConfig, embed: Embedder) -> dict[str, Any]:
    rng = np.random.default_rng(3000)
    tiles = medical_tiles(cfg.n_tiles, 64, seed=0)
    imgs, bad, kinds = plant_corruptions(tiles, cfg.corrupt_fraction, rng)
    Z = embed(imgs)
    with _single_thread():
        scores = quality_screening(Z, bad, kinds)
    return {"n": len(imgs), "n_bad": int(bad.sum()), "auroc": scores}


# --------------------------------------------------------------------------- plots and report


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


_MAIN = ("random", "paper", "pool", "deflation", "class-aware", "kcenter", "typiclust")


def _plot_simulation(sim: SimulationResult, path: Path, title: str) -> None:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for m in sim.accuracy:
        if m not in _MAIN:
            continue
        mu, sd = sim.mean_std(m)
        ax.errorbar(sim.budgets, mu, yerr=sd, label=m, marker="o", ms=3, capsize=2,
                    ls="--" if m in ("random", "kcenter", "typiclust") else "-")
    ax.set_xscale("log")
    ax.set_xticks(sim.budgets, [str(b) for b in sim.budgets])
    ax.set_xlabel("labels (batches of 10)")
    ax.set_ylabel("test accuracy (logistic regression)")
    ax.set_title(f"Annotation simulation, mean ± std over {sim.accuracy['random'].shape[0]} seeds\n{title}", fontsize=9)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _plot_valuation(val: dict[str, Any], path: Path, title: str) -> None:
    plt = _plt()
    fig, axes = plt.subplots(1, 3, figsize=(13, 4))
    labels = {"remove_high": "remove most valuable first (lower = better)",
              "remove_low": "remove least valuable first (higher = better)",
              "add_high": "add most valuable first (higher = better)"}
    for ax, (kind, lab) in zip(axes, labels.items()):
        for m, c in val["curves"].items():
            ax.plot(val["steps"], c[kind].mean(axis=0), label=m, marker=".")
        ax.set_title(lab, fontsize=9)
        ax.set_xlabel("points")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("test accuracy")
    axes[0].legend(fontsize=8)
    fig.suptitle(f"Valuation curves (n={val['n']}, mean of {val['seeds']} sets) — {title}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _plot_quality(q: dict[str, Any], path: Path, title: str) -> None:
    plt = _plt()
    preps = list(q["auroc"])
    kinds = list(q["auroc"][preps[0]])
    fig, ax = plt.subplots(figsize=(8, 4))
    w = 0.8 / len(preps)
    for j, p in enumerate(preps):
        ax.bar(np.arange(len(kinds)) + j * w, [q["auroc"][p][k] for k in kinds], w, label=p)
    ax.axhline(0.5, color="k", lw=0.8, ls=":")
    ax.set_xticks(np.arange(len(kinds)) + 0.4 - w / 2, kinds)
    ax.set_ylabel("AUROC (lowest score = corrupted)")
    ax.set_ylim(0, 1)
    ax.legend(title="preprocess", fontsize=8)
    ax.set_title(f"Quality screening on medical tiles — {title}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{platform.platform()}; {cpu}; {os.cpu_count()} CPUs; Python {platform.python_version()}; numpy {np.__version__}"


def _markdown(r: dict[str, Any]) -> str:
    cfg: EvalConfig = r["cfg"]
    L = ["# EXAMINE ranking benchmarks", "",
         "Generated by `examine evaluate` (examine/evaluate.py); do not edit by hand.", ""]
    if r["stand_in"]:
        L += [f"> **Embedding: {r['embedder']}.** These numbers use a STAND-IN embedding (PCA of pixels), "
              "not the MAE; rerun with the MAE encoder before drawing conclusions.", ""]
    L += ["| | |", "|---|---|",
          f"| command | `{cfg.command or 'run_evaluation(...)'}` |",
          f"| embedding function | {r['embedder']} |",
          f"| dataset | {r.get('dataset', '—')} |",
          f"| seeds | {cfg.seeds} (simulation pool seeds 1000+s; valuation sets 2000+s; tiles 3000) |",
          f"| sizes | embedded train {cfg.n_train}, test {cfg.n_test}, pool per seed {cfg.pool_size}, "
          f"valuation set {cfg.n_value}, tiles {cfg.n_tiles}, corrupted fraction {cfg.corrupt_fraction} |",
          f"| preprocessing compared | {', '.join(cfg.preprocess)} (policy names without [..] use `{cfg.preprocess[0]}`) |",
          f"| quick | {cfg.quick} |",
          f"| machine | {_machine()} |",
          f"| wall time | " + ", ".join(f"{k} {v:.0f} s" for k, v in r["timings"].items()) + " |",
          f"| date | {time.strftime('%Y-%m-%d %H:%M:%S %Z')} |", ""]
    sim: SimulationResult | None = r.get("simulation")
    if sim is not None:
        rnd = sim.accuracy["random"]
        L += ["## Annotation simulation", "",
              f"Test accuracy of a logistic regression on the labeled embeddings, mean ± std over {rnd.shape[0]} seeds "
              f"(each seed draws its own pool). Batches of {BATCH}; labels revealed after each batch. "
              "Δ = mean paired difference to random (same seed) ± its std.", "",
              "![simulation](simulation.png)", "",
              "| method | " + " | ".join(str(b) for b in sim.budgets) + " | mean Δ vs random | s |",
              "|---|" + "---|" * (len(sim.budgets) + 2)]
        for m, a in sim.accuracy.items():
            mu, sd = a.mean(axis=0), a.std(axis=0)
            d = a - rnd
            cells = [f"{x:.3f} ± {s:.3f}" for x, s in zip(mu, sd)]
            L.append(f"| {m} | " + " | ".join(cells) + f" | {d.mean():+.3f} ± {d.mean(axis=1).std():.3f} | {sim.seconds[m]:.0f} |")
        L.append("")
    val = r.get("valuation")
    if val is not None:
        L += ["## Valuation curves (paper protocol)", "",
              f"{val['n']} labeled images, {cfg.corrupt_fraction:.0%} corrupted, mean of {val['seeds']} sets. "
              "Areas are the mean test accuracy along each curve. EXAMINE uses no labels; KNN-Shapley and "
              "leave-one-out do.", "", "![valuation](valuation.png)", "",
              "| method | AUROC low value = corrupted | remove most valuable first (lower better) | "
              "remove least valuable first (higher better) | add most valuable first (higher better) |",
              "|---|---|---|---|---|"]
        for m, c in val["curves"].items():
            a = val["auroc"][m]
            L.append(f"| {m} | {np.nanmean(a):.3f} ± {np.nanstd(a):.3f} | {c['remove_high'].mean():.3f} | "
                     f"{c['remove_low'].mean():.3f} | {c['add_high'].mean():.3f} |")
        L.append("")
    q = r.get("quality")
    if q is not None:
        kinds = list(next(iter(q["auroc"].values())))
        L += ["## Quality screening (real medical tiles)", "",
              f"{q['n']} tiles (64×64) from real medical images, {q['n_bad']} corrupted. "
              "AUROC of \"lowest EXAMINE score = corrupted\" (0.5 = chance; per kind: that kind vs clean).", "",
              "![quality](quality.png)", "",
              "| preprocess | " + " | ".join(kinds) + " |", "|---|" + "---|" * len(kinds)]
        for p, row in q["auroc"].items():
            L.append(f"| {p} | " + " | ".join(f"{row[k]:.3f}" for k in kinds) + " |")
        L.append("")
    return "\n".join(L)


# --------------------------------------------------------------------------- command line


def _cmd_evaluate(args: argparse.Namespace) -> None:
    from examine.cli import CLIError

    if args.seeds < 1:
        raise CLIError("--seeds must be >= 1")
    if args.dataset == "medmnist" and not args.medmnist:
        raise CLIError("--dataset medmnist needs --medmnist PATH.npz")
    if bool(args.embeddings) != bool(args.labels):
        raise CLIError("--embeddings and --labels go together")
    for p in (args.medmnist, args.embeddings, args.labels):
        if p and not Path(p).is_file():
            raise CLIError(f"{p}: no such file")
    preps = tuple(s.strip() for s in args.preprocess.split(",") if s.strip())
    bad = [p for p in preps if p not in PREPROCESSING]
    if bad or not preps:
        raise CLIError(f"--preprocess: unknown {bad}; choose from {', '.join(PREPROCESSING)}")
    skip = tuple(s.strip() for s in (args.skip or "").split(",") if s.strip())
    if set(skip) - {"simulation", "valuation", "quality"}:
        raise CLIError("--skip takes simulation, valuation, quality")
    cfg = EvalConfig(
        dataset=args.dataset, medmnist=args.medmnist, embeddings=args.embeddings, labels=args.labels,
        out=args.out, seeds=args.seeds, quick=args.quick, embedder=args.embedder, model_dir=args.model_dir,
        preprocess=preps, skip=skip, command=_command_line(args),
    )
    if cfg.quick:
        cfg = _quick(cfg)
    for name in ("n_train", "n_test", "pool_size", "n_value", "n_tiles"):
        v = getattr(args, name)
        if v is not None:
            if v < 1:
                raise CLIError(f"--{name.replace('_', '-')} must be >= 1")
            setattr(cfg, name, v)
    try:
        embed = resolve_embedder(cfg.embedder, cfg.model_dir)
        run_evaluation(cfg, embed)
    except (ValueError, FileNotFoundError, RuntimeError) as exc:
        raise CLIError(str(exc)) from exc


def _command_line(args: argparse.Namespace) -> str:
    """The equivalent ``examine evaluate`` command line of parsed arguments."""
    parts = ["examine", "evaluate"]
    for action_dest, flag in (("dataset", "--dataset"), ("medmnist", "--medmnist"), ("embeddings", "--embeddings"),
                              ("labels", "--labels"), ("out", "--out"), ("seeds", "--seeds"), ("embedder", "--embedder"),
                              ("model_dir", "--model-dir"), ("preprocess", "--preprocess"), ("skip", "--skip"),
                              ("n_train", "--n-train"), ("n_test", "--n-test"), ("pool_size", "--pool-size"),
                              ("n_value", "--n-value"), ("n_tiles", "--n-tiles")):
        v = getattr(args, action_dest, None)
        if v is not None:
            parts += [flag, str(v)]
    if args.quick:
        parts.append("--quick")
    return shlex.join(parts)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register the ``evaluate`` sub-command on an ``argparse`` sub-parser collection."""
    p = subparsers.add_parser(
        "evaluate",
        help="benchmark the ranking policies: valuation curves, annotation simulation, quality screening",
        description="Run every ranking policy and baseline on the same embeddings; write PNG plots and RESULTS.md.",
    )
    p.add_argument("--dataset", choices=["fashion-mnist", "medical-tiles", "medmnist"], default="fashion-mnist",
                   help="labeled dataset for the simulation and valuation curves (medical-tiles: quality screening only)")
    p.add_argument("--medmnist", metavar="PATH.npz", help="a MedMNIST .npz file (with --dataset medmnist)")
    p.add_argument("--embeddings", metavar="NPY", help="precomputed (n, d) embeddings instead of a dataset")
    p.add_argument("--labels", metavar="NPY", help="(n,) labels for --embeddings")
    p.add_argument("--out", default="benchmarks", metavar="DIR", help="folder for the PNG plots and RESULTS.md (default benchmarks)")
    p.add_argument("--seeds", type=int, default=5, help="simulation seeds (default 5)")
    p.add_argument("--quick", action="store_true", help="tiny sizes, 2 seeds: a smoke test in seconds")
    p.add_argument("--embedder", choices=["auto", "mae", "pixel-pca"], default="auto",
                   help="embedding function (auto: the MAE encoder of --model-dir if given, else the pixel-PCA stand-in)")
    p.add_argument("--model-dir", help="encoder folder written by `examine pretrain` (encoder.json + encoder.safetensors)")
    p.add_argument("--preprocess", default="center,none",
                   help=f"comma-separated embedding preprocessing to compare ({', '.join(PREPROCESSING)}); first is the main one")
    p.add_argument("--skip", help="comma-separated parts to skip: simulation, valuation, quality")
    for name, hlp in (("n-train", "embedded training images"), ("n-test", "embedded test images"),
                      ("pool-size", "pool drawn per seed"), ("n-value", "images in a valuation set"),
                      ("n-tiles", "medical tiles for quality screening")):
        p.add_argument(f"--{name}", type=int, help=hlp)
    p.set_defaults(func=_cmd_evaluate)
