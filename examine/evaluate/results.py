"""Tables, plots and the markdown report of ``examine evaluate``."""

from __future__ import annotations

import os
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from examine.evaluate.screening import FIRST
from examine.evaluate.selectors import BASELINES, MAIN_METHODS
from examine.evaluate.simulation import BANDS, BATCH, SimulationResult
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
    screening: list[dict[str, Any]] = field(default_factory=list)
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


def screening_section(evidence: list[dict[str, Any]]) -> list[str]:
    """The screening evidence in Markdown: per set, AUROC by kind, flag shares, the queue's first 50."""
    if not evidence:
        return []
    L = [
        "## Screening unusable images",
        "",
        "Per set, held-out images (never seen by the set's encoder) with 10 % planted defects of nine kinds "
        "(dealt in turn) and a 1 % rare clean class (the set's last class), never made defective. A method's "
        "score says how likely an image is unusable; AUROC overall and per kind (that kind against the clean "
        "images; 0.5 = chance), the mean over several pools planted with different seeds. Duplicates are "
        "copies of a clean image still in the pool; the screening scores both images of a pair, keeps one "
        "and flags the other. Among the first 50 served, a planted defect counts as unusable, except a "
        "near-duplicate: one image of a pair is worth its label, the second one served is wasted.",
        "",
    ]
    for ev in evidence:
        kinds = [k for k in next(iter(ev["auroc"].values())) if k != "all"]
        L += [
            f"### {ev['dataset']}",
            "",
            f"{ev.get('pools', 1)} pools of {ev['n']} images, each {ev['n_bad']} unusable and {ev['n_rare']} of the "
            f"rare class; embeddings: {ev['embedder']}.",
            "",
            "| method | all | " + " | ".join(kinds) + " |",
            "|---|---|" + "---|" * len(kinds),
        ]
        for name, row in ev["auroc"].items():
            low = ev.get("auroc_min", {}).get(name)
            worst = f" (worst pool {low:.3f})" if low is not None and ev.get("pools", 1) > 1 else ""
            L.append(f"| {name} | **{row['all']:.3f}**{worst} | " + " | ".join(f"{row[k]:.2f}" for k in kinds) + " |")
        L += ["", "| flags of | clean images flagged | rare class flagged | unusable flagged |", "|---|---|---|---|"]
        for name, sh in ev["flagged"].items():
            L.append(f"| {name} | {sh['clean']:.1%} | {sh['rare']:.1%} | {sh['unusable']:.1%} |")
        head_worst = ev.get("first_worst", {})
        L += ["", f"| cold-start queue | unusable among the first {FIRST}: mean | worst pool |", "|---|---|---|"]
        L += [f"| {name} | {sh:.1%} | {head_worst.get(name, sh):.1%} |" for name, sh in ev["first"].items()]
        if ev.get("examples"):
            L += [
                "",
                "Reasons given (first flagged images of the first pool): "
                + "; ".join(f"#{i}: {r}" for i, r in ev["examples"][:3]),
            ]
        L.append("")
        L += _common_defects_table(ev.get("common"))
    return L


def _common_defects_table(common: dict[str, Any] | None) -> list[str]:
    if not common:
        return []
    planted = ", ".join(f"{v} {k}" for k, v in common["planted"].items())
    L = [
        f"When defects are common: {common['pools']} pools of {common['n']} images, each with {planted} "
        "(copies of clean images still in the pool); a near-duplicate group (a clean image and its copies) "
        "counts as handled when exactly one of it is left unflagged, and clean images are those without a "
        "planted copy.",
        "",
        "| "
        + " | ".join(f"{k} flagged" if k != "duplicate groups kept once" else k for k in common["flagged"])
        + f" | wasted among the first {FIRST}: no screening | with screening (worst pool) |",
        "|" + "---|" * (len(common["flagged"]) + 2),
    ]
    screened = "deferring examine screening's flags"
    L.append(
        "| "
        + " | ".join(f"{v:.1%}" for v in common["flagged"].values())
        + f" | {common['first']['no screening']:.1%} | {common['first'][screened]:.1%}"
        + f" ({common['first_worst'][screened]:.1%}) |"
    )
    return [*L, ""]


def _bands(sim: SimulationResult) -> list[tuple[int, int]]:
    """The summary bands that hold at least one budget of this simulation."""
    return [b for b in BANDS if sim.columns(b)]


def _band(b: tuple[int, int]) -> str:
    return f"{b[0]}–{b[1]:,}"


def _pm(d: tuple[float, float]) -> str:
    return "—" if np.isnan(d[0]) else f"{d[0]:+.3f} ± {d[1]:.3f}"


def _simulation_table(r: SetResult) -> list[str]:
    sim = r.simulation
    assert sim is not None
    bands = _bands(sim)
    lines = [
        "| method | "
        + " | ".join(str(b) for b in sim.budgets)
        + "".join(f" | Δ vs random, {_band(b)}" for b in bands)
        + " | s |",
        "|---|" + "---|" * (len(sim.budgets) + len(bands) + 1),
    ]
    for m in sim.accuracy:
        mu, sd = sim.mean_std(m)
        name = f"**{m}** (default)" if m == DEFAULT_POLICY else m
        cells = ["—" if np.isnan(x) else f"{x:.3f} ± {s:.3f}" for x, s in zip(mu, sd)]
        deltas = "".join(f" | {_pm(sim.delta(m, b))}" for b in bands)
        lines.append(f"| {name} | " + " | ".join(cells) + deltas + f" | {sim.seconds[m]:.0f} |")
    return lines


def best_baseline(sim: SimulationResult, band: tuple[int, int]) -> tuple[str, float] | None:
    """The baseline (TypiClust, uncertainty, TCM) with the highest mean accuracy in ``band``, and the default's gap to it."""
    cols = sim.columns(band)
    names = [m for m in BASELINES if m in sim.accuracy and not np.isnan(sim.accuracy[m][:, cols]).any()]
    if not cols or not names:
        return None
    best = max(names, key=lambda m: float(sim.accuracy[m][:, cols].mean()))
    return best, float((sim.accuracy[DEFAULT_POLICY] - sim.accuracy[best])[:, cols].mean())


def labels_to_95(r: SetResult, method: str) -> str:
    """Labels the method needs to reach 95 % of the all-label probe's accuracy (mean curve)."""
    sim = r.simulation
    assert sim is not None
    n = sim.labels_to_reach(method, 0.95 * r.full_probe)
    return f"> {sim.budgets[-1]:,}" if n is None else f"{n:,.0f}"


def _prelabel_table(r: SetResult) -> list[str]:
    sim = r.simulation
    assert sim is not None
    methods = [m for m in ("random", DEFAULT_POLICY) if m in sim.prelabel]
    lines = [
        "| method | " + " | ".join(str(b) for b in sim.budgets) + " |",
        "|---|" + "---|" * len(sim.budgets),
    ]
    for m in methods:
        mu = sim.prelabel[m].mean(axis=0)
        lines.append(f"| {m} | " + " | ".join("—" if np.isnan(x) else f"{x:.3f}" for x in mu) + " |")
    return lines


def verdict(r: SetResult) -> str:
    """One line per band: the default queue against random and the best baseline on this set."""
    sim = r.simulation
    assert sim is not None
    parts = []
    for band in _bands(sim):
        line = f"{_band(band)}: vs random {_pm(sim.delta(DEFAULT_POLICY, band))}"
        best = best_baseline(sim, band)
        if best is not None:
            line += f", vs best baseline ({best[0]}) {best[1]:+.3f}"
        head, head_sd = headroom(r, band)
        line += f", headroom {head:+.3f} ± {head_sd:.3f}"
        parts.append(line)
    if "paper" in sim.accuracy:
        parts.append(f"the paper's order vs random (20–200) {sim.delta('paper')[0]:+.3f}")
    return "; ".join(parts)


def diagnosis(report: Report) -> list[str]:
    """For every (set, embedding, band) where a queue loses to random beyond the paired seed spread: is the
    embedding or the policy the cause?

    The policy is the cause when the same policy also loses on pixel PCA; the embedding when the policy wins on
    pixel PCA and the embedding's all-label probe is below pixel PCA's; otherwise the embedding's geometry.
    """
    lines = []
    for r in report.sets:
        sim = r.simulation
        if sim is None:
            continue
        pca = next(
            (o for o in report.sets if o.dataset == r.dataset and o.embedder.startswith("pixel-pca") and o.simulation),
            None,
        )
        for band in _bands(sim):
            causes = []
            for m in sim.accuracy:
                d, sd = sim.delta(m, band)
                if m == "random" or np.isnan(d) or d >= -sd or d >= 0:
                    continue
                if pca is None or pca is r or pca.simulation is None or m not in pca.simulation.accuracy:
                    causes.append(f"`{m}` {d:+.3f} ± {sd:.3f} (no other embedding to compare)")
                    continue
                pd_, _ = pca.simulation.delta(m, band)
                if np.isnan(pd_):
                    why = "not run on pixel PCA in this band"
                elif pd_ < 0:
                    why = f"the policy (it loses on pixel PCA too: {pd_:+.3f})"
                elif r.full_probe < pca.full_probe:
                    why = f"the embedding (wins on pixel PCA, {pd_:+.3f}; all-label probe {r.full_probe:.3f} < {pca.full_probe:.3f})"
                else:
                    why = (
                        f"the embedding's geometry (wins on pixel PCA, {pd_:+.3f}, whose all-label probe is not better)"
                    )
                causes.append(f"`{m}` {d:+.3f} ± {sd:.3f}: {why}")
            if causes:
                lines.append(f"- **{r.dataset}, {r.embedder}, {_band(band)} labels**: " + "; ".join(causes) + ".")
    return lines


def headroom(r: SetResult, budgets: tuple[int, int] = (20, 200)) -> tuple[float, float]:
    """The most any queue could gain over random here: the all-label probe minus random's accuracy
    (mean over the budgets), mean and std over seeds, in the units of ``SimulationResult.delta``.

    When the mean is not above its own spread, no queue can beat random by more than the spread on this set.
    """
    sim = r.simulation
    assert sim is not None
    gap = r.full_probe - sim.accuracy["random"][:, sim.columns(budgets)].mean(axis=1)
    return float(gap.mean()), float(gap.std())


def sim_has_prelabel(r: SetResult) -> bool:
    return r.simulation is not None and DEFAULT_POLICY in r.simulation.prelabel


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
        f"Default queue: `{DEFAULT_POLICY}`. Each band is the mean over its budgets of the paired gain (± its std "
        "over seeds). The best baseline is the one of TypiClust, margin, entropy and TCM with the highest accuracy "
        "in that band. Labels to 95 %: where the mean curve first reaches 95 % of the all-label probe's accuracy.",
        "",
        "| data set | embedding | linear probe, all labels | labels to 95 %: default / random | verdict |",
        "|---|---|---|---|---|",
    ]
    for r in report.sets:
        if r.simulation is None:
            L.append(f"| {r.dataset} | {r.embedder} | {r.full_probe:.3f} | — | — |")
            continue
        reach = f"{labels_to_95(r, DEFAULT_POLICY)} / {labels_to_95(r, 'random')}"
        L.append(f"| {r.dataset} | {r.embedder} | {r.full_probe:.3f} | {reach} | {verdict(r)} |")
    causes = diagnosis(report)
    if causes:
        L += [
            "",
            "### Where a queue loses to random, and why",
            "",
            "Every queue below random by more than its paired seed spread in a band, with the cause: the same "
            "policy on the pixel-PCA control embedding, and the all-label probe of both embeddings.",
            "",
            *causes,
        ]
    L += [
        "",
        "## Annotation simulation",
        "",
        f"Batches of {BATCH}; labels revealed after each batch; at each budget scikit-learn's LogisticRegression "
        "(C=1) on the standardised embeddings of the labeled images is scored on a held-out test set. "
        "mean ± std over seeds; Δ = paired gain over random (same seed and pool), averaged over the budgets of "
        "each band, ± its std over seeds; s = seconds spent choosing. The summary's headroom is the all-label "
        "probe minus random, in the same units: the most any queue could gain.",
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
            if sim_has_prelabel(r):
                L += [
                    "Pre-annotation accuracy: the probe's class against the truth on the images still unlabeled "
                    "(what annotators are shown), mean over seeds:",
                    "",
                    *_prelabel_table(r),
                    "",
                ]
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
    L += screening_section(report.screening)
    path = out / "RESULTS.md"
    path.write_text("\n".join(L))
    return path
