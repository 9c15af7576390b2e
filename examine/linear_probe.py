"""The class-aware policy's probe: multinomial logistic regression in numpy, no scikit-learn needed."""

from __future__ import annotations

import math

import numpy as np

__all__ = ["LinearProbe"]


class LinearProbe:
    """Multinomial logistic regression in numpy (L2-penalised, accelerated gradient).

    Small and dependency-free so that the backend does not need scikit-learn.
    Features are standardised with the training mean and a single scale.

    Parameters
    ----------
    l2 : float
        Penalty on the weights (not the bias), per sample.
    max_iter : int
        Iterations of Nesterov-accelerated gradient descent.
    """

    def __init__(self, l2: float = 1e-3, max_iter: int = 300):
        if l2 < 0:
            raise ValueError(f"l2 must be >= 0, got {l2}")
        if max_iter < 1:
            raise ValueError(f"max_iter must be >= 1, got {max_iter}")
        self.l2 = float(l2)
        self.max_iter = int(max_iter)

    def fit(self, X: np.ndarray, y: np.ndarray) -> LinearProbe:
        """Fit on rows ``X`` with integer classes ``y`` in ``0..C-1`` (C ≥ 2)."""
        X = np.asarray(X, dtype=np.float64)
        y = np.asarray(y, dtype=np.int64)
        if X.ndim != 2 or y.shape != (len(X),):
            raise ValueError(f"X must be (n, d) and y (n,), got {X.shape} and {y.shape}")
        n_classes = int(y.max()) + 1 if len(y) else 0
        if n_classes < 2:
            raise ValueError("a probe needs at least 2 classes")
        self.mean_ = X.mean(axis=0)
        scale = float(np.sqrt(((X - self.mean_) ** 2).sum(axis=1).mean()))
        self.scale_ = scale if scale > 0 else 1.0
        Z = np.hstack([(X - self.mean_) / self.scale_, np.ones((len(X), 1))])
        n, d1 = Z.shape
        Y = np.zeros((n, n_classes))
        Y[np.arange(n), y] = 1.0
        # Softmax cross-entropy Hessian ≤ ½ ZᵀZ / n (⊗ I): a safe step size.
        lip = 0.5 * np.linalg.norm(Z, 2) ** 2 / n + self.l2
        step = 1.0 / lip
        pen = np.full((d1, 1), self.l2)
        pen[-1] = 0.0
        W = np.zeros((d1, n_classes))
        V = W.copy()
        t = 1.0
        for _ in range(self.max_iter):
            P = _softmax(Z @ V)
            grad = Z.T @ (P - Y) / n + pen * V
            W_next = V - step * grad
            t_next = 0.5 * (1.0 + math.sqrt(1.0 + 4.0 * t * t))
            V = W_next + ((t - 1.0) / t_next) * (W_next - W)
            W, t = W_next, t_next
        self.coef_ = W
        return self

    def decision_function(self, X: np.ndarray) -> np.ndarray:
        X = np.asarray(X, dtype=np.float64)
        Z = (X - self.mean_) / self.scale_
        return Z @ self.coef_[:-1] + self.coef_[-1]

    def predict(self, X: np.ndarray) -> np.ndarray:
        return np.argmax(self.decision_function(X), axis=1)


def _softmax(A: np.ndarray) -> np.ndarray:
    A = A - A.max(axis=1, keepdims=True)
    np.exp(A, out=A)
    A /= A.sum(axis=1, keepdims=True)
    return A
