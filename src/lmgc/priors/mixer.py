"""Online geometric mixing of several next-symbol distributions into one.

The mixed distribution is ``p(s) ∝ exp(Σ_i w_i log p_i(s))``, the multi-symbol form of the
logistic mixing of PAQ-style compressors. After each symbol the weights of the context that was
used take one gradient step on the code length: ``w_i += lr · (log p_i(x) − E_p[log p_i])``.
Everything is float64 numpy with fixed reduction order, so encoder and decoder, which see the
same expert outputs, compute the same mixtures.
"""

from __future__ import annotations

import numpy as np

__all__ = ["GeometricMixer"]

_FLOOR = 1e-9  # no expert may veto a symbol outright


class GeometricMixer:
    """Weights per mixing context (e.g. the digit position), learned online.

    Args:
        n_experts: distributions mixed at every step.
        n_contexts: independent weight sets.
        learning_rate: step size of the online gradient descent.
    """

    def __init__(self, n_experts: int, n_contexts: int, learning_rate: float) -> None:
        self.weights = np.full((n_contexts, n_experts), 1.0 / n_experts)
        self.learning_rate = learning_rate
        self._last: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None

    def mix(self, experts: np.ndarray, contexts: np.ndarray) -> np.ndarray:
        """(batch, experts, alphabet) probabilities and (batch,) contexts -> (batch, alphabet)."""
        log_p = np.log(np.maximum(experts, _FLOOR))
        scores = (self.weights[contexts][:, :, None] * log_p).sum(axis=1)
        scores -= scores.max(axis=1, keepdims=True)
        mixed = np.exp(scores)
        mixed /= mixed.sum(axis=1, keepdims=True)
        self._last = (log_p, contexts, mixed)
        return mixed

    def update(self, symbols: np.ndarray, rows: np.ndarray) -> None:
        """Learn from the symbols that followed the last :meth:`mix`, for the given rows only."""
        if self._last is None:
            return
        log_p, contexts, mixed = self._last
        log_p, contexts, mixed, symbols = log_p[rows], contexts[rows], mixed[rows], symbols[rows]
        expected = (mixed[:, None, :] * log_p).sum(axis=2)
        gradient = log_p[np.arange(len(rows)), :, symbols] - expected
        np.add.at(self.weights, contexts, self.learning_rate * gradient)
