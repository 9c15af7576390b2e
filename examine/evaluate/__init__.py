"""The evidence: does a queue help annotators? (``examine evaluate`` → ``benchmarks/RESULTS.md``).

Every queue is judged on the same embeddings of a labeled image set:

* :mod:`~examine.evaluate.data` — labeled sets that work offline (Fashion-MNIST,
  medical tiles labeled by their source image, MedMNIST ``.npz`` files);
* :mod:`~examine.evaluate.embedders` — the default CPU MAE recipe pretrained on
  the set itself, and pixel PCA as a control embedding;
* :mod:`~examine.evaluate.selectors` — the ranking policies, random, k-center
  and the cold-start baselines of scikit-activeml (TypiClust, ProbCover);
* :mod:`~examine.evaluate.simulation` — the annotation simulation (batches of
  10, labels revealed after each batch, a standardised logistic regression);
* :mod:`~examine.evaluate.valuation` — the paper's valuation curves;
* :mod:`~examine.evaluate.screening` — planted unusable images: our screening against
  EXAMINE alone, cleanvision and cleanlab (:mod:`~examine.evaluate.defects` plants them);
* :mod:`~examine.evaluate.results` — tables, plots and the markdown report;
* :mod:`~examine.evaluate.command` — the ``evaluate`` sub-command.
"""

from examine.evaluate.data import LabeledSet, load_labeled_set
from examine.evaluate.embedders import Embedder, mae_embedder, pixel_pca_embedder
from examine.evaluate.screening import screening_evidence, screening_pool
from examine.evaluate.selectors import Selector, selectors
from examine.evaluate.simulation import SimulationResult, probe_accuracy, simulate_annotation
from examine.evaluate.valuation import auroc, valuation_curves

__all__ = [
    "Embedder",
    "LabeledSet",
    "Selector",
    "SimulationResult",
    "auroc",
    "load_labeled_set",
    "mae_embedder",
    "pixel_pca_embedder",
    "probe_accuracy",
    "screening_evidence",
    "screening_pool",
    "selectors",
    "simulate_annotation",
    "valuation_curves",
]
