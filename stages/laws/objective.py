"""The fitting objective: a law bound to data, its summed loss over rows and the exact gradient.

``huber`` (the default) is the SUM of Huber(delta) on log residuals; ``l1`` the sum of |log residual|;
``mle`` Epoch AI's Huber log-likelihood with a free scale (an extra parameter, log sigma), which degenerates
to least absolute deviations. The value is always the sum over rows: averaging it and optimising with
default tolerances is what stopped Hoffmann et al.'s fit early.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import pandas as pd
from scipy import special

from stages.core.cli import UserError
from stages.laws.forms import LOSS, Law

OBJECTIVES = ("huber", "l1", "mle")
DEFAULT_DELTA = 1e-3


class Problem:
    """A law bound to data and an objective: summed loss over rows and its exact gradient.

    Rows carry integer weights so that a bootstrap resample is a weight vector, not a copied table.
    The parameter vector is the law's internal parameters followed by the objective's own (mle: log sigma).
    This call is the largest single cost of a multi-start fit, so it is two small matrix products: the
    parameters scattered into a (term, parameter) matrix times the (parameter, row) features gives every
    term's log, and the per-term residual weights times the (row, parameter) features gives the gradient
    (``np.add.reduceat``, ``np.clip`` and broadcast-and-sum cost more than the math here).
    """

    def __init__(
        self,
        law: Law,
        features: np.ndarray,
        log_loss: np.ndarray,
        objective: str,
        delta: float,
        weights: np.ndarray | None = None,
    ) -> None:
        self.law, self.objective, self.delta = law, objective, float(delta)
        self.features = np.ascontiguousarray(features, float)
        self.log_loss = np.asarray(log_loss, float)
        self.weights = None if weights is None else np.asarray(weights, float)
        self.total_weight = float(len(self.log_loss) if weights is None else self.weights.sum())
        self.n_params = len(law.params)
        self.n_terms = len(law.terms)
        # flat index of (term of parameter j, j) in a (term, parameter) matrix
        self.slots = law.term_of * self.n_params + np.arange(self.n_params)
        self.features_t = np.ascontiguousarray(self.features.T)
        # Huber density normaliser Z(delta) = sqrt(2 pi) (1 - 2 Phi(-delta)) + 2 exp(-delta^2/2) / delta
        self.log_z = math.log(
            math.sqrt(2 * math.pi) * (1 - 2 * special.ndtr(-delta)) + 2 * math.exp(-(delta**2) / 2) / delta
        )

    @property
    def extra_params(self) -> tuple[str, ...]:
        return ("log_sigma",) if self.objective == "mle" else ()

    def with_weights(self, weights: np.ndarray) -> Problem:
        return Problem(self.law, self.features, self.log_loss, self.objective, self.delta, weights)

    def __call__(self, theta: np.ndarray) -> tuple[float, np.ndarray]:
        coef = np.zeros(self.n_terms * self.n_params)
        coef[self.slots] = theta[: self.n_params]
        terms = coef.reshape(self.n_terms, self.n_params) @ self.features
        top = terms.max(axis=0)
        expd = np.exp(terms - top)
        total = expd.sum(axis=0)
        resid = top + np.log(total) - self.log_loss
        value, d_resid, d_extra = self._loss(resid, theta[self.n_params :])
        expd *= d_resid / total  # d value / d term, per term and row
        grad = (expd @ self.features_t).ravel()[self.slots]
        return value, grad if not len(d_extra) else np.concatenate([grad, d_extra])

    def _loss(self, r: np.ndarray, extra: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
        """Summed loss, its derivative per residual and per extra parameter."""
        delta = self.delta
        if self.objective == "l1":
            return self._sum(np.abs(r)), self._times_w(np.sign(r)), extra[:0]
        sigma = float(np.exp(extra[0])) if self.objective == "mle" else 1.0
        z = r / sigma
        size = np.abs(z)
        clipped = np.minimum(size, delta)
        psi = self._times_w(np.copysign(clipped, z))
        huber = self._sum(clipped * (size - 0.5 * clipped))
        if self.objective == "huber":
            return huber, psi, extra[:0]
        value = huber + self.total_weight * (self.log_z + extra[0])
        d_log_sigma = self.total_weight - float((psi * z).sum())
        return value, psi / sigma, np.array([d_log_sigma])

    def _sum(self, per_row: np.ndarray) -> float:
        return float(per_row.sum() if self.weights is None else (per_row * self.weights).sum())

    def _times_w(self, per_row: np.ndarray) -> np.ndarray:
        return per_row if self.weights is None else per_row * self.weights


def inf_if_nonfinite(value: float) -> float:
    """``value``, or +inf when it is NaN or infinite (a failed start never looks best)."""
    return value if math.isfinite(value) else math.inf


def make_problem(
    frame: pd.DataFrame,
    law: Law,
    objective: str = "huber",
    delta: float = DEFAULT_DELTA,
    centres: Mapping[str, float] | None = None,
) -> Problem:
    """The summed ``objective`` of ``law`` on the rows of ``frame`` (law columns and ``loss``).

    Features are centred at ``centres`` (default: the law's centres of ``frame``).
    """
    if objective not in OBJECTIVES:
        raise UserError(f"--objective: unknown {objective!r}; valid: {', '.join(OBJECTIVES)}")
    if not delta > 0:
        raise UserError(f"--delta: must be > 0, got {delta}")
    centres = law.centres(frame) if centres is None else centres
    features = law.features(frame, centres)
    return Problem(law, features, np.log(frame[LOSS].to_numpy(float)), objective, delta)
