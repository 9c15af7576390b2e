"""The ``examine evaluate`` sub-command: every queue on every (data set, embedding), one report."""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from examine.evaluate.data import DATASETS, LabeledSet, load_labeled_set
from examine.evaluate.embedders import EMBEDDERS, Embedder, EmbedFn, mae_embedder, pixel_pca_embedder
from examine.evaluate.results import Report, SetResult, write_report
from examine.evaluate.screening import (
    COMMON_FRACTION,
    COMMON_KINDS,
    common_defects_evidence,
    screening_evidence,
    screening_pool,
)
from examine.evaluate.selectors import SLOW_METHODS, selectors
from examine.evaluate.simulation import BUDGETS, probe_accuracy, simulate_annotation, single_thread, standardize
from examine.evaluate.valuation import plant_corruptions, valuation_curves

__all__ = ["EvalConfig", "run_evaluation", "add_parser"]


#: Sets simulated on a smaller pool (so to smaller budgets): the medical tiles by source are saturated (random
#: labels reach 0.97 at 10 labels, the headroom is within its spread), so budgets past 200 would cost an hour
#: and show nothing.
POOL_CAP: dict[str, int] = {"medical-tiles": 600}


#: Sets the screening evidence runs on (the shirts are a subset of Fashion-MNIST).
SCREENING_SETS = ("fashion-mnist", "digits", "medical-tiles")


class EvalConfig(argparse.Namespace):
    """Parsed options (the defaults are the committed ``benchmarks/RESULTS.md``)."""

    datasets: list[str] = ["fashion-mnist", "digits", "medical-tiles", "shirts", "fashion-mosaics"]
    embedders: list[str] = ["mae", "pixel-pca"]
    seeds: int = 3
    budgets: list[int] = list(BUDGETS)
    slow_limit: int = 200
    jobs: int = min(2, os.cpu_count() or 1)
    n_train: int = 6000
    n_test: int = 2000
    pool_size: int = 5000
    n_value: int = 400
    n_screen: int = 1000
    screen_pools: int = 5
    fraction: float = 0.15
    skip: list[str] = []
    out: str = "benchmarks"
    cache: str = "runs/evaluate"
    model_dir: str | None = None
    pretrain_epochs: int | None = None
    quick: bool = False
    methods: list[str] = []
    command: str = "examine evaluate"


def _embedder(name: str, cfg: EvalConfig) -> Embedder:
    if name == "mae":
        return mae_embedder(cfg.cache, model_dir=cfg.model_dir, epochs=cfg.pretrain_epochs, progress=not cfg.quick)
    return pixel_pca_embedder(64)


#: A multi-label set is simulated against the baselines that do not need one class per image: TypiClust (it
#: never reads the labels) and random; scikit-activeml's margin, entropy and TCM take one class per image.
MULTI_LABEL_BASELINES = ("typiclust",)


def _methods(data: LabeledSet) -> dict:
    if data.multi_label:
        return selectors(data.n_classes, policies=("clusters",), baselines=MULTI_LABEL_BASELINES)
    return selectors(data.n_classes)


def _chosen(methods: dict, names: list[str]) -> dict:
    """Only the methods named (all when none are), in the simulation's order; an unknown name is an error."""
    unknown = sorted(set(names) - set(methods))
    if unknown:
        raise SystemExit(f"examine evaluate: unknown methods {unknown}; choose from {sorted(methods)}")
    return {k: v for k, v in methods.items() if not names or k in names}


def run_evaluation(cfg: EvalConfig, log: Callable[[str], None] = print) -> Path:
    """Run the simulation on every data set and embedding, then valuation and screening; write the report."""
    t_all = time.perf_counter()
    report = Report(command=cfg.command, seeds=cfg.seeds)
    fitted: dict[tuple[str, str], EmbedFn] = {}
    sets: dict[str, LabeledSet] = {}
    for ds in cfg.datasets:
        data = load_labeled_set(ds, cfg.n_train, cfg.n_test)
        sets[ds] = data
        for emb_name in cfg.embedders:
            t0 = time.perf_counter()
            embedder = _embedder(emb_name, cfg)
            log(f"{data.name}: embedding {len(data.train)} + {len(data.test)} images with {embedder.name}")
            X, T, fn = embedder(data)
            fitted[(ds, emb_name)] = fn
            report.timings[f"embed {data.name} {emb_name}"] = time.perf_counter() - t0
            with single_thread():
                full = probe_accuracy(standardize(X, X), data.y_train, standardize(T, X), data.y_test)
            log(f"  linear probe with all {len(X)} labels: {full:.3f}")
            pool = min(cfg.pool_size, len(X), POOL_CAP.get(ds, len(X)))
            result = SetResult(data.name, embedder.name, len(X), len(T), data.n_classes, pool, full)
            if "simulation" not in cfg.skip:
                t0 = time.perf_counter()
                budgets = [b for b in cfg.budgets if b <= pool // 3 or b == min(cfg.budgets)]
                with single_thread():
                    result.simulation = simulate_annotation(
                        X,
                        data.y_train,
                        T,
                        data.y_test,
                        _chosen(_methods(data), cfg.methods),
                        budgets=budgets,
                        seeds=cfg.seeds,
                        pool_size=pool,
                        limits={m: cfg.slow_limit for m in SLOW_METHODS},
                        jobs=cfg.jobs,
                        log=log,
                    )
                result.seconds = time.perf_counter() - t0
                report.timings[f"simulate {data.name} {emb_name}"] = result.seconds
            report.sets.append(result)
    first = next((d for d in cfg.datasets if not sets[d].multi_label), None)  # the valuation takes one class each
    if "valuation" not in cfg.skip and first is not None:
        t0 = time.perf_counter()
        report.valuation = _valuation(cfg, sets[first], fitted[(first, cfg.embedders[0])], cfg.embedders[0], log)
        report.timings["valuation"] = time.perf_counter() - t0
    if "screening" not in cfg.skip:
        t0 = time.perf_counter()
        emb = cfg.embedders[0]
        for ds in [d for d in cfg.datasets if d in SCREENING_SETS]:
            pools = [screening_pool(sets[ds], cfg.n_screen, seed=seed) for seed in range(max(1, cfg.screen_pools))]
            log(
                f"screening: {sets[ds].name}, {len(pools)} pools of {len(pools[0].images)} held-out images, "
                f"{int(pools[0].bad.sum())} planted defects each"
            )
            with single_thread():
                ev = screening_evidence(pools, fitted[(ds, emb)], baselines=not cfg.quick, log=log)
                common = [
                    screening_pool(sets[ds], cfg.n_screen, seed=seed, kinds=COMMON_KINDS, fraction=COMMON_FRACTION)
                    for seed in range(max(1, cfg.screen_pools))
                ]
                ev["common"] = common_defects_evidence(common, fitted[(ds, emb)], log=log)
            ev["dataset"], ev["embedder"] = sets[ds].name, f"{emb} fitted on {sets[ds].name}'s training images"
            report.screening.append(ev)
        report.timings["screening"] = time.perf_counter() - t0
    report.timings["total"] = time.perf_counter() - t_all
    path = write_report(report, Path(cfg.out))
    log(f"wrote {path}")
    return path


def _valuation(cfg: EvalConfig, data: LabeledSet, embed: EmbedFn, emb_name: str, log: Callable[[str], None]) -> dict:
    n_seeds = max(1, min(cfg.seeds, 3))
    runs = []
    T = embed(data.test)
    for seed in range(n_seeds):
        rng = np.random.default_rng(2000 + seed)
        idx = rng.choice(len(data.train), size=min(cfg.n_value, len(data.train)), replace=False)
        imgs, bad, _ = plant_corruptions(data.train[idx], cfg.fraction, rng)
        with single_thread():
            res = valuation_curves(
                embed(imgs),
                data.y_train[idx],
                bad,
                T,
                data.y_test,
                seed=seed,
                preprocess=("none", "center"),
                step=max(5, len(idx) // 16),
            )
        log(
            f"  valuation set {seed}: AUROC(low value = corrupted) "
            + ", ".join(f"{k} {v:.3f}" for k, v in res["auroc"].items())
        )
        runs.append(res)
    methods = list(runs[0]["curves"])
    return {
        "dataset": data.name,
        "embedder": emb_name,
        "n": len(idx),
        "seeds": n_seeds,
        "fraction": cfg.fraction,
        "steps": runs[0]["steps"],
        "curves": {m: {k: np.stack([r["curves"][m][k] for r in runs]) for k in runs[0]["curves"][m]} for m in methods},
        "auroc": {m: np.array([r["auroc"][m] for r in runs]) for m in methods},
    }


def _csv(kind: Callable[[str], object], allowed: tuple[str, ...] | None = None) -> Callable[[str], list]:
    def parse(text: str) -> list:
        items = [s.strip() for s in text.split(",") if s.strip()]
        if not items:
            raise argparse.ArgumentTypeError("empty list")
        if allowed is not None:
            bad = [s for s in items if s not in allowed and not s.endswith(".npz")]
            if bad:
                raise argparse.ArgumentTypeError(f"unknown {bad}; choose from {', '.join(allowed)}")
        try:
            return [kind(s) for s in items]
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from exc

    return parse


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _cmd_evaluate(args: argparse.Namespace) -> None:
    cfg = EvalConfig(**vars(args))
    if cfg.quick:  # smoke-test sizes where no explicit value was given
        quick = dict(
            seeds=2,
            n_train=400,
            n_test=200,
            pool_size=300,
            n_value=60,
            n_screen=120,
            screen_pools=2,
            budgets=[10, 20, 50],
            pretrain_epochs=1,
        )
        for k, v in quick.items():
            if getattr(cfg, k) == getattr(EvalConfig, k):
                setattr(cfg, k, v)
    for p in cfg.datasets:
        if p.endswith(".npz") and not Path(p).is_file():
            sys.exit(f"examine evaluate: {p}: no such MedMNIST file")
    cfg.command = shlex.join(["examine", "evaluate", *sys.argv[2:]]) if sys.argv[1:2] == ["evaluate"] else cfg.command
    try:
        run_evaluation(cfg)
    except (ValueError, FileNotFoundError, RuntimeError) as exc:
        sys.exit(f"examine evaluate: {exc}")


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register the ``evaluate`` sub-command."""
    d = EvalConfig
    p = subparsers.add_parser(
        "evaluate",
        help="the evidence: annotation simulation, valuation curves, quality screening → RESULTS.md",
        description="Run every queue (examine's policies, random, k-center, TypiClust, ProbCover) on the same "
        "embeddings of labeled image sets and write plots and RESULTS.md.",
    )
    p.add_argument(
        "--datasets",
        type=_csv(str, DATASETS),
        default=d.datasets,
        help=f"comma-separated: {', '.join(DATASETS)} or MedMNIST .npz paths (default: %(default)s)",
    )
    p.add_argument(
        "--embedders",
        type=_csv(str, EMBEDDERS),
        default=d.embedders,
        help="mae (the default CPU MAE recipe, pretrained on each set's training images) and/or pixel-pca",
    )
    p.add_argument(
        "--model-dir", help="use this encoder (written by `examine pretrain`) instead of pretraining per set"
    )
    p.add_argument("--seeds", type=_positive, default=d.seeds)
    p.add_argument(
        "--budgets",
        type=_csv(int),
        default=d.budgets,
        help="label budgets (default %(default)s; budgets above a third of the pool are left out)",
    )
    p.add_argument(
        "--slow-limit",
        type=_positive,
        default=d.slow_limit,
        help="largest budget of the k-means methods (clusters, coverage-margin, TypiClust, ...): above 200 labels "
        "each of their batches costs 5-25 s on 2 cores (default %(default)s)",
    )
    p.add_argument(
        "--jobs",
        type=_positive,
        default=d.jobs,
        help="processes running (seed, method) pairs of the simulation side by side (default: up to 2 CPUs)",
    )
    p.add_argument(
        "--n-train", type=_positive, default=d.n_train, help="training images per set (the pool is drawn from them)"
    )
    p.add_argument("--n-test", type=_positive, default=d.n_test)
    p.add_argument("--pool-size", type=_positive, default=d.pool_size)
    p.add_argument("--n-value", type=_positive, default=d.n_value, help="images in a valuation set")
    p.add_argument("--n-screen", type=_positive, default=d.n_screen, help="held-out images per set for the screening")
    p.add_argument(
        "--screen-pools", type=_positive, default=d.screen_pools, help="planted pools per set (seeds 0, 1, ...)"
    )
    p.add_argument("--skip", type=_csv(str, ("simulation", "valuation", "screening")), default=[])
    p.add_argument(
        "--methods",
        type=_csv(str),
        default=[],
        help="simulate only these queues (comma-separated, e.g. random,adaptive,adaptive[pca256]; default: all)",
    )
    p.add_argument("--out", default=d.out, help="folder for RESULTS.md and the plots (default %(default)s)")
    p.add_argument("--cache", default=d.cache, help="folder for the pretrained encoders (reused by later runs)")
    p.add_argument(
        "--pretrain-epochs",
        type=_positive,
        default=None,
        help="MAE epochs instead of the recipe's (the committed results use the recipe)",
    )
    p.add_argument("--quick", action="store_true", help="tiny sizes, 2 seeds, 1 MAE epoch: a smoke test")
    p.set_defaults(func=_cmd_evaluate)
