"""Tables, plots and the markdown report of ``examine evaluate``."""

from __future__ import annotations

import os
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from examine.evaluate.selectors import MAIN_METHODS
from examine.evaluate.simulation import BATCH, SimulationResult
from examine.ranking import DEFAULT_POLICY

__all__ = ["SetResult", "Report", "write_report", "machine"]


@dataclass
class SetResult:
    """Everything measured on one (data set, embedding) pair."""

    dataset: str
    embedder: str
    n_train: int
    n_test: int
    n_classes: int
    pool_size: int
    full_probe: float
    simulation: SimulationResult | None = None
    seconds: float = 0.0


@dataclass
class Report:
    command: str
    seeds: int
    sets: list[SetResult] = field(default_factory=list)
    valuation: dict[str, Any] | None = None
    quality: dict[str, Any] | None = None
    timings: dict[str, float] = field(default_factory=dict)


def machine() -> str:
    """CPU model, cores, Python and numpy versions of this machine."""
    cpu = platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next((ln.split(":", 1)[1].strip() for ln in fh if ln.startswith("model name")), cpu)
    except OSError:
        pass
    return f"{platform.system()} {platform.machine()}; {cpu}; {os.cpu_count()} CPUs; Python {platform.python_version()}; numpy {np.__version__}"


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in text.lower()).strip("-")


def plot_simulation(results: list[SetResult], path: Path) -> None:
    """One panel per embedding of a data set: mean accuracy ± std per budget of the main methods."""
    plt = _plt()
    fig, axes = plt.subplots(1, len(results), figsize=(6.5 * len(results), 4.5), squeeze=False)
    for ax, r in zip(axes[0], results):
        sim = r.simulation
        assert sim is not None
        for m in sim.accuracy:
            if m not in MAIN_METHODS:
                continue
            mu, sd = sim.mean_std(m)
            ax.errorbar(
                sim.budgets,
                mu,
                yerr=sd,
                label=m,
                marker="o",
                ms=3,
                capsize=2,
                lw=2.2 if m == DEFAULT_POLICY else 1.2,
                ls="-" if m in (DEFAULT_POLICY, "paper", "class-aware") else "--",
            )
        ax.set_xscale("log")
        ax.set_xticks(sim.budgets, [str(b) for b in sim.budgets])
        ax.set_xlabel(f"labels (batches of {BATCH})")
        ax.set_ylabel("test accuracy (logistic regression)")
        ax.set_title(f"{r.dataset} — {r.embedder}\n(all {r.n_train} labels: {r.full_probe:.3f})", fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_valuation(val: dict[str, Any], path: Path) -> None:
    plt = _plt()
    fig, axes = plt.subplots(1, 3, figsize=(13, 4))
    titles = {
        "remove_high": "remove most valuable first (lower = better)",
        "remove_low": "remove least valuable first (higher = better)",
        "add_high": "add most valuable first (higher = better)",
    }
    for ax, (kind, title) in zip(axes, titles.items()):
        for m, c in val["curves"].items():
            ax.plot(val["steps"], c[kind].mean(axis=0), label=m, marker=".")
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("points")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("test accuracy")
    axes[0].legend(fontsize=8)
    fig.suptitle(
        f"Valuation curves — {val['dataset']}, {val['embedder']} (n={val['n']}, {val['seeds']} sets)", fontsize=9
    )
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_quality(q: dict[str, Any], path: Path) -> None:
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
    ax.set_title(f"Quality screening on medical tiles — {q['embedder']}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _simulation_table(r: SetResult) -> list[str]:
    sim = r.simulation
    assert sim is not None
    lines = [
        "| method | " + " | ".join(str(b) for b in sim.budgets) + " | Δ vs random, 20–200 | s |",
        "|---|" + "---|" * (len(sim.budgets) + 2),
    ]
    for m, a in sim.accuracy.items():
        mu, sd = a.mean(axis=0), a.std(axis=0)
        d, ds = sim.delta(m)
        name = f"**{m}** (default)" if m == DEFAULT_POLICY else m
        cells = [f"{x:.3f} ± {s:.3f}" for x, s in zip(mu, sd)]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {d:+.3f} ± {ds:.3f} | {sim.seconds[m]:.0f} |")
    return lines


def verdict(r: SetResult) -> str:
    """One line: the default queue against random and TypiClust on this set."""
    sim = r.simulation
    assert sim is not None
    d, ds = sim.delta(DEFAULT_POLICY)
    line = f"default `{DEFAULT_POLICY}` vs random {d:+.3f} ± {ds:.3f} (paired seed spread)"
    if "typiclust" in sim.accuracy:
        gap = float((sim.accuracy[DEFAULT_POLICY] - sim.accuracy["typiclust"])[:, sim.columns()].mean())
        line += f"; vs TypiClust {gap:+.3f}"
    if "paper" in sim.accuracy:
        line += f"; the paper's order vs random {sim.delta('paper')[0]:+.3f}"
    head, head_sd = headroom(r)
    line += f"; headroom {head:+.3f} ± {head_sd:.3f}"
    return line


def headroom(r: SetResult, budgets: tuple[int, int] = (20, 200)) -> tuple[float, float]:
    """The most any queue could gain over random here: the all-label probe minus random's accuracy
    (mean over the budgets), mean and std over seeds, in the units of ``SimulationResult.delta``.

    When the mean is not above its own spread, no queue can beat random by more than the spread on this set.
    """
    sim = r.simulation
    assert sim is not None
    gap = r.full_probe - sim.accuracy["random"][:, sim.columns(budgets)].mean(axis=1)
    return float(gap.mean()), float(gap.std())


def write_report(report: Report, out: Path) -> Path:
    """Write the plots and ``RESULTS.md`` into ``out``; return the markdown path."""
    out.mkdir(parents=True, exist_ok=True)
    L = [
        "# Does the queue help? Evidence for examine's ranking",
        "",
        "Generated by `examine evaluate` (`examine/evaluate/`); do not edit by hand.",
        "",
        "| | |",
        "|---|---|",
        f"| command | `{report.command}` |",
        f"| seeds | {report.seeds} (each seed draws its own pool; methods are paired on it) |",
        f"| machine | {machine()} |",
        "| wall time | " + ", ".join(f"{k} {v:.0f} s" for k, v in report.timings.items()) + " |",
        f"| date | {time.strftime('%Y-%m-%d %H:%M %Z')} |",
        "",
    ]
    L += [
        "## Summary",
        "",
        "| data set | embedding | linear probe, all labels | verdict (mean over budgets 20–200) |",
        "|---|---|---|---|",
    ]
    for r in report.sets:
        L.append(f"| {r.dataset} | {r.embedder} | {r.full_probe:.3f} | {verdict(r) if r.simulation else '—'} |")
    L += [
        "",
        "## Annotation simulation",
        "",
        f"Batches of {BATCH}; labels revealed after each batch; at each budget scikit-learn's LogisticRegression "
        "(C=1) on the standardised embeddings of the labeled images is scored on a held-out test set. "
        "mean ± std over seeds; Δ = paired gain over random (same seed and pool), averaged over budgets 20–200, "
        "± its std over seeds; s = seconds spent choosing. The summary's headroom is the all-label probe minus "
        "random, in the same units: the most any queue could gain. "
        f"`{DEFAULT_POLICY}[fixed k=20]` is the order Label Studio serves by itself from predictions that carry "
        "a fixed `cluster` (fewest solved tasks in the cluster first, then the lowest score).",
        "",
    ]
    by_set: dict[str, list[SetResult]] = {}
    for r in report.sets:
        by_set.setdefault(r.dataset, []).append(r)
    for name, results in by_set.items():
        with_sim = [r for r in results if r.simulation is not None]
        if not with_sim:
            continue
        png = f"simulation-{_slug(name)}.png"
        plot_simulation(with_sim, out / png)
        L += [f"### {name}", "", f"![{name}]({png})", ""]
        for r in with_sim:
            L += [
                f"**{r.embedder}** — {r.n_classes} classes, pool {r.pool_size} per seed, test {r.n_test}, "
                f"linear probe with all {r.n_train} labels: {r.full_probe:.3f}",
                "",
            ]
            L += _simulation_table(r) + [""]
    val = report.valuation
    if val is not None:
        plot_valuation(val, out / "valuation.png")
        L += [
            "## Valuation curves (the paper's protocol)",
            "",
            f"{val['dataset']}, {val['embedder']}: {val['n']} labeled images, {val['fraction']:.0%} corrupted, "
            f"mean of {val['seeds']} sets. Areas are the mean test accuracy along each curve. EXAMINE uses no labels; "
            "KNN-Shapley and leave-one-out do.",
            "",
            "![valuation](valuation.png)",
            "",
            "| method | AUROC low value = corrupted | remove most valuable first (lower better) | "
            "remove least valuable first (higher better) | add most valuable first (higher better) |",
            "|---|---|---|---|---|",
        ]
        for m, c in val["curves"].items():
            a = val["auroc"][m]
            L.append(
                f"| {m} | {np.nanmean(a):.3f} ± {np.nanstd(a):.3f} | {c['remove_high'].mean():.3f} | "
                f"{c['remove_low'].mean():.3f} | {c['add_high'].mean():.3f} |"
            )
        L.append("")
    q = report.quality
    if q is not None:
        plot_quality(q, out / "quality.png")
        kinds = list(next(iter(q["auroc"].values())))
        L += [
            "## Quality screening (real medical tiles)",
            "",
            f"{q['n']} tiles from real medical images, {q['n_bad']} corrupted, {q['embedder']}. "
            'AUROC of "lowest EXAMINE score = corrupted" (0.5 = chance; per kind: that kind against the clean tiles).',
            "",
            "![quality](quality.png)",
            "",
            "| preprocess | " + " | ".join(kinds) + " |",
            "|---|" + "---|" * len(kinds),
        ]
        for p, row in q["auroc"].items():
            L.append(f"| {p} | " + " | ".join(f"{row[k]:.3f}" for k in kinds) + " |")
        L.append("")
    path = out / "RESULTS.md"
    path.write_text("\n".join(L))
    return path
