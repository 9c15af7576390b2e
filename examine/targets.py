"""What the labels teach when an image answers several questions: one probe per question.

A labeling project often asks more than one thing of an image (tissue type *and* image quality), lets an
image hold several classes (a multi-choice question), or draws regions whose labels say what the image
contains (boxes of nodules, masks of tumours). Each question is a :class:`Target`:

- ``"class"``: one class per image (a single-choice question): one multinomial :class:`~examine.probe.Probe`;
- ``"multi"``: several classes per image, only where the question was answered (a multi-choice question):
  one yes/no probe per class;
- ``"presence"``: several classes per image, every labeled image answers (region labels: an image without a
  box of a class does not hold it): one yes/no probe per class.

:class:`TargetProbe` fits them all on the same standardised embeddings and gives the queue one uncertainty
per image: the mean over the targets that learn of each target's margin (a yes/no class's margin is
``|2p - 1|``; a target of several yes/no classes takes its most unsure class), so a question with many
classes weighs as much as one with two and no question drowns another. With one ``"class"`` target it is
exactly that target's :class:`~examine.probe.Probe`.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from examine.probe import Probe, ProbeError, column_moments, linear_logits

__all__ = ["KINDS", "Target", "TargetProbe", "fit_label_sets", "label_sets_seen"]

#: The kinds of target (see the module's docstring).
KINDS = ("class", "multi", "presence")


@dataclass(frozen=True)
class Target:
    """One question the labels answer: its name, its classes (in the config's order) and its kind."""

    name: str
    classes: tuple[Hashable, ...]
    kind: str = "class"

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"target {self.name!r}: kind must be one of {KINDS}, got {self.kind!r}")

    def answer(self, given: Any) -> list[Hashable] | None:
        """The classes one labeled image gives this target (only declared ones), or None when it says nothing."""
        values = [] if given is None else [given] if isinstance(given, (str, int)) else list(given)
        kept = list(dict.fromkeys(v for v in values if v in self.classes))
        if self.kind == "presence":
            return kept
        if not kept:
            return None
        return kept[:1] if self.kind == "class" else kept


class TargetProbe:
    """Linear probes for several targets on one standardisation of the pool (see the module's docstring).

    Attributes (after :meth:`fit`)
    ------------------------------
    counts_ : dict
        ``(target, class) → labels`` for every class of every target (0 for a class never given).
    n_labels_ : int
        Labeled images that answer at least one target.
    cv_accuracy_ : float or None
        Mean over the learning targets of their cross-validated accuracy (a yes/no target: the mean of its
        classes'); None when none could be estimated.
    per_target_ : dict
        Per target name: ``kind``, ``labels`` (images answering it), ``counts``, ``cv_accuracy`` and
        ``learns`` (False, with ``why``, below two classes or two answers).
    """

    def __init__(self, targets: Sequence[Target], *, C: float = 1.0, cv: bool = False):
        names = [t.name for t in targets]
        if not targets or len(set(names)) != len(names):
            raise ValueError(f"targets must be a non-empty list with distinct names, got {names}")
        self.targets = tuple(targets)
        self.C = float(C)
        self.cv = bool(cv)

    def fit(
        self,
        X: np.ndarray,
        answers: Sequence[Mapping[str, Any]],
        *,
        moments: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> TargetProbe:
        """Fit on labeled rows ``X``; ``answers[j]`` maps target names to what row ``j`` gives (a class or a list).

        ``moments`` (default: those of ``X``) standardise every probe; pass the pool's
        (:func:`~examine.probe.column_moments`) so labeled and unlabeled rows share one scale.
        ProbeError when no target has two classes to learn from.
        """
        if len(answers) != len(X):
            raise ProbeError(f"one answer per row: got {len(answers)} answers for {len(X)} rows")
        scale = moments if moments is not None else column_moments(X)
        self.heads_: dict[str, Any] = {}
        self.per_target_ = self.tally(answers)
        self.counts_: dict[tuple[str, Hashable], int] = {
            (name, c): n for name, info in self.per_target_.items() for c, n in info["counts"].items()
        }
        answering: set[int] = set()
        for t in self.targets:
            rows, given = self._answered(t, answers)
            info = self.per_target_[t.name]
            head = self._fit_target(t, X, rows, given, scale, info)
            if head is not None:
                self.heads_[t.name] = head
                answering.update(rows)
                info["learns"] = True
                info.pop("why", None)
        if not self.heads_:
            raise ProbeError(
                "no target has labels of 2 classes: "
                + "; ".join(f"{n}: {i['why']}" for n, i in self.per_target_.items())
            )
        self.n_labels_ = len(answering)
        accs = [i["cv_accuracy"] for i in self.per_target_.values() if i["cv_accuracy"] is not None]
        self.cv_accuracy_ = float(np.mean(accs)) if accs else None
        return self

    @staticmethod
    def _answered(t: Target, answers: Sequence[Mapping[str, Any]]) -> tuple[list[int], list[list[Hashable]]]:
        rows, given = [], []
        for j, a in enumerate(answers):
            got = t.answer(a.get(t.name)) if isinstance(a, Mapping) else None
            if got is not None:
                rows.append(j)
                given.append(got)
        return rows, given

    def tally(self, answers: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
        """Per target, before any fit: ``kind``, ``labels`` (rows answering it), ``counts`` per class, and
        ``learns`` False with ``why`` (:meth:`fit` sets ``learns`` where a probe learns)."""
        out = {}
        for t in self.targets:
            _, given = self._answered(t, answers)
            counts = {c: sum(c in g for g in given) for c in t.classes}
            why = "needs labels of at least 2 classes" if t.kind == "class" else "needs images with and without a class"
            out[t.name] = {
                "kind": t.kind,
                "labels": len(given),
                "counts": counts,
                "cv_accuracy": None,
                "learns": False,
                "why": why,
            }
        return out

    def _fit_target(self, t: Target, X, rows, given, scale, info) -> Any:
        Xl = X[rows] if rows else X[:0]
        if t.kind == "class":
            if len({g[0] for g in given}) < 2:
                return None
            probe = Probe(C=self.C, cv=self.cv).fit(Xl, [g[0] for g in given], classes=t.classes, moments=scale)
            info["cv_accuracy"] = probe.cv_accuracy_
            return probe
        heads: dict[Hashable, Probe] = {}
        constant: dict[Hashable, float] = {}
        accs: list[float] = []
        for c in t.classes:
            yes = [c in g for g in given]
            if not any(yes) or all(yes):  # always or never given so far: what the labels say, learned from none
                constant[c] = 1.0 if given and all(yes) else 0.0
                continue
            heads[c] = Probe(C=self.C, cv=self.cv).fit(Xl, yes, classes=[False, True], moments=scale)
            acc = heads[c].cv_accuracy_
            if acc is not None:
                accs.append(acc)
        if not heads:
            return None
        info["cv_accuracy"] = float(np.mean(accs)) if accs else None
        return _YesNoHeads(t.classes, heads, constant)

    @property
    def classes_seen(self) -> int:
        """The most classes any one probe has seen: a ``"class"`` target's classes with a label; a target of
        yes/no probes counts 2 once one of them learns (present and absent seen), else 1. Each label answers
        every target at once, so the queue's switch to uncertainty (5 labels per class) waits for the probe
        with the most classes, not for their sum over targets or classes. Measured on a multi-label set
        (``examine evaluate --datasets fashion-mosaics``): counting a multi-label target's 10 classes kept the
        coverage order to 50 labels, below random at 20 and 50; counting 2 beat random from 10 labels on."""
        best = 0
        for t in self.targets:
            n = sum(1 for c in t.classes if self.counts_.get((t.name, c), 0))
            best = max(best, n if t.kind == "class" else (2 if t.name in self.heads_ else min(n, 1)))
        return best

    # ------------------------------------------------------------------ using it

    def predict_proba(self, X: np.ndarray, targets: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        """Per learning target (of ``targets``, default all), an ``(n, len(classes))`` array: class probabilities
        (``"class"``, rows sum to 1) or each class's probability of being present (``"multi"``, ``"presence"``).
        Each target is one pass over ``X``."""
        wanted = self.heads_.keys() if targets is None else [t for t in targets if t in self.heads_]
        return {name: self.heads_[name].predict_proba(X) for name in wanted}

    def margin(self, X: np.ndarray) -> np.ndarray:
        """How sure the probes are of each row, 0 (most unsure) to 1: the mean over learning targets."""
        total = np.zeros(len(X))
        for head in self.heads_.values():
            total += head.margin(X)
        return total / len(self.heads_)


class _YesNoHeads:
    """One yes/no probe per class of a target, applied in one pass over the rows."""

    def __init__(self, classes: tuple[Hashable, ...], heads: dict[Hashable, Probe], constant: dict[Hashable, float]):
        self.classes = classes
        self.learned = [k for k, c in enumerate(classes) if c in heads]
        self.constant = {k: constant[c] for k, c in enumerate(classes) if c in constant}
        probes = [heads[classes[k]] for k in self.learned]
        # Each probe's standardisation folded into its weights: P(yes) = sigmoid(x @ w + b), all classes at once.
        self.mean = probes[0].mean_
        # (Each was fitted with classes [False, True] and saw both: its one logit is the class's presence.)
        self.weights = np.stack([np.atleast_2d(p.model_.coef_)[0] / p.scale_ for p in probes], axis=1)  # (d, h)
        self.bias = np.array([float(np.atleast_1d(p.model_.intercept_)[0]) for p in probes])

    def _present(self, X: np.ndarray) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(-linear_logits(X, self.mean, self.weights, self.bias)))

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        P = np.zeros((len(X), len(self.classes)))
        P[:, self.learned] = self._present(X)
        for k, p in self.constant.items():
            P[:, k] = p
        return P

    def margin(self, X: np.ndarray) -> np.ndarray:
        return np.abs(2.0 * self._present(X) - 1.0).min(axis=1)


def label_sets_seen(sets: Sequence[Iterable[Hashable]]) -> int:
    """:attr:`TargetProbe.classes_seen` of one ``"presence"`` target answered by ``sets`` (the classes of each
    labeled image), without fitting: 2 once some class is in some images and not in others, else 1 (0: none)."""
    each: list[set[Hashable]] = [set(s) for s in sets]
    union: set[Hashable] = set().union(*each)
    return 2 if each and union - set.intersection(*each) else min(len(union), 1)


def fit_label_sets(
    X: np.ndarray,
    sets: Sequence[Iterable[Hashable]],
    moments: tuple[np.ndarray, np.ndarray],
    *,
    cv: bool = False,
) -> TargetProbe | None:
    """A multi-label pool's probes: one ``"presence"`` target (an empty set: none of the classes) on the labeled
    rows ``X`` with their ``sets`` of classes, in their first-seen order; None while no class can be learned."""
    answers = [{LABEL_SETS: list(s)} for s in sets]
    classes = tuple(dict.fromkeys(c for a in answers for c in a[LABEL_SETS]))
    try:
        return TargetProbe([Target(LABEL_SETS, classes, "presence")], cv=cv).fit(X, answers, moments=moments)
    except ProbeError:
        return None


#: The one target of :func:`fit_label_sets`.
LABEL_SETS = "labels"
