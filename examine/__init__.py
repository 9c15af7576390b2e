"""examine: rank unlabeled medical images by the EXAMINE score of their MAE embeddings."""

from examine.scoring import examine_scores, marginal_singular_values, scores_from_marginals

__all__ = ["examine_scores", "marginal_singular_values", "scores_from_marginals"]
__version__ = "0.1.0"
