"""Scaling-law forms as data: every law is a log-sum-exp of terms that are linear in their parameters.

Writing log L = LSE_k(term_k) with each term a signed sum of parameters times products of log columns
(chinchilla: LSE(a - alpha log N, b - beta log D, e)) keeps coefficients positive, makes the prediction
numerically stable and gives an exact gradient (softmax weights times the features), so one fitter serves
every law. All logs are natural; columns are raw counts (tokens, parameters).

Three parameter spaces, all linked by exact maps:

- *reported*: the paper's convention (A = e^a, alpha, ...; the sparsity forms keep the log-coefficients
  d1, d2, d3 because the paper writes them as e^d);
- *log space*: the coefficients of the terms written in raw log columns (a, alpha, ...);
- *internal*: what the optimiser sees. For every law except ``chinchilla`` the log columns are centred at
  the data's mean log before forming the features, which removes the strong correlation between a
  log-coefficient and its exponents (log D ~ 20, log D1 log D2 ~ 500). Centring a variable inside a
  monomial is a reparameterisation only when the monomials it expands into exist in the same term, so the
  centred set is chosen per monomial (sparsity form 3 centres P, not N_active, in its interaction).
  ``chinchilla`` stays uncentred so that its default grid is exactly Hoffmann et al.'s.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

LOSS = "loss"
_TINY = float(np.finfo(float).tiny)

# Parameter roles, read off each law's terms by ``Law.roles`` (one rule for every law, so a new law needs no
# table kept in step). The fit diagnostics (stages.laws.diagnostics) judge each role against its own bounds.
FLOOR = "floor"  # the constant of a term that is a constant alone (E, e^d3): the irreducible loss
COEFFICIENT = "coefficient"  # the constant of a term with columns (A, B, e^d1): its scale at log columns 0
EXPONENT = "exponent"  # -param x one log column (alpha, beta, a, b): a decay exponent, positive in a sane fit
INTERACTION = "interaction"  # any other monomial (alpha3, c: +param x a product of logs): either sign is a law


@dataclass(frozen=True)
class Monomial:
    """One summand of a term: ``sign * param * prod(log column for column in variables)``."""

    param: str
    sign: int = 1
    variables: tuple[str, ...] = ()


Derived = Callable[[Mapping[str, float], pd.DataFrame], dict[str, float]]


@dataclass(frozen=True)
class Law:
    """A scaling law: its columns, its terms, how parameters are reported and where fits start."""

    name: str
    formula: str
    columns: tuple[str, ...]
    terms: tuple[tuple[Monomial, ...], ...]
    exp_params: Mapping[str, str]  # log-space coefficient -> reported name of its exponential
    grid: Mapping[str, tuple[float, ...]]  # start values per internal parameter
    centre: bool = True
    derived: Derived | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        names = [m.param for term in self.terms for m in term]
        if len(set(names)) != len(names) or set(names) != set(self.grid):
            raise ValueError(f"law {self.name}: every parameter needs exactly one monomial and a grid")

    @property
    def params(self) -> tuple[str, ...]:
        """Log-space/internal parameter names, grouped by term (the optimiser's vector order)."""
        return tuple(m.param for term in self.terms for m in term)

    @property
    def reported_params(self) -> tuple[str, ...]:
        return tuple(self.exp_params.get(p, p) for p in self.params)

    @property
    def roles(self) -> dict[str, str]:
        """Reported parameter name -> FLOOR, COEFFICIENT, EXPONENT or INTERACTION, in ``params`` order."""
        out = {}
        for term in self.terms:
            for m in term:
                if not m.variables:
                    role = FLOOR if len(term) == 1 else COEFFICIENT
                else:
                    role = EXPONENT if len(m.variables) == 1 and m.sign < 0 else INTERACTION
                out[self.exp_params.get(m.param, m.param)] = role
        return out

    @property
    def monomials(self) -> tuple[Monomial, ...]:
        return tuple(m for term in self.terms for m in term)

    @property
    def term_of(self) -> np.ndarray:
        """Term index of each parameter."""
        return np.array([k for k, term in enumerate(self.terms) for _ in term], dtype=np.intp)

    @property
    def term_starts(self) -> np.ndarray:
        """First parameter index of each term (for ``np.add.reduceat``)."""
        sizes = [len(term) for term in self.terms]
        return np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.intp)

    def centred_sets(self) -> tuple[frozenset[str], ...]:
        """Per monomial, the variables that may be centred without leaving the law's family."""
        out = []
        for term in self.terms:
            present = {frozenset(m.variables) for m in term}
            for m in term:
                chosen: set[str] = set()
                for v in m.variables if self.centre else ():
                    trial = chosen | {v}
                    subsets = itertools.chain.from_iterable(
                        itertools.combinations(sorted(trial), r) for r in range(len(trial) + 1)
                    )
                    if all(frozenset(m.variables) - set(t) in present for t in subsets):
                        chosen = trial
                out.append(frozenset(chosen))
        return tuple(out)

    def centres(self, frame: pd.DataFrame) -> dict[str, float]:
        """Mean log of each column over ``frame`` (zeros for an uncentred law)."""
        return {c: float(np.log(frame[c].to_numpy(float)).mean()) if self.centre else 0.0 for c in self.columns}

    def features(self, frame: pd.DataFrame, centres: Mapping[str, float]) -> np.ndarray:
        """Signed feature row per parameter, shape (n_params, n_rows); term k's log is their weighted sum."""
        logs = {c: np.log(frame[c].to_numpy(float)) for c in self.columns}
        rows = []
        for m, centred in zip(self.monomials, self.centred_sets(), strict=True):
            row = np.full(len(frame), float(m.sign))
            for v in m.variables:
                row = row * (logs[v] - centres[v] if v in centred else logs[v])
            rows.append(row)
        return np.array(rows)

    def log_space_map(self, centres: Mapping[str, float]) -> np.ndarray:
        """Matrix M with log-space params = M @ internal params (unit diagonal, hence invertible)."""
        mons, sets = self.monomials, self.centred_sets()
        index = {(k, frozenset(m.variables)): i for i, (k, m) in enumerate(zip(self.term_of, mons, strict=True))}
        out = np.eye(len(mons))
        for j, (k, m, centred) in enumerate(zip(self.term_of, mons, sets, strict=True)):
            for r in range(1, len(centred) + 1):
                for dropped in itertools.combinations(sorted(centred), r):
                    i = index[(k, frozenset(m.variables) - set(dropped))]
                    out[i, j] += mons[i].sign * m.sign * float(np.prod([-centres[v] for v in dropped]))
        return out

    def to_reported(self, internal: np.ndarray, centres: Mapping[str, float]) -> dict[str, float]:
        log_space = self.log_space_map(centres) @ np.asarray(internal, float)
        return {
            self.exp_params.get(p, p): float(np.exp(v)) if p in self.exp_params else float(v)
            for p, v in zip(self.params, log_space, strict=True)
        }

    def to_internal(self, reported: Mapping[str, float], centres: Mapping[str, float]) -> np.ndarray:
        missing = [p for p in self.reported_params if p not in reported]
        if missing:
            raise KeyError(f"law {self.name}: missing parameter(s) {', '.join(missing)}")
        log_space = np.array(
            # a coefficient that underflowed to 0.0 when reported (e.g. a floor E = exp(-800)) maps back to the
            # smallest positive float: its term then contributes nothing, instead of making every prediction NaN
            [
                np.log(max(reported[self.exp_params[p]], _TINY)) if p in self.exp_params else reported[p]
                for p in self.params
            ]
        )
        return np.linalg.solve(self.log_space_map(centres), log_space)

    def start_grid(self) -> np.ndarray:
        """Every combination of the grid values, shape (n_starts, n_params), in a fixed order."""
        return np.array(list(itertools.product(*(self.grid[p] for p in self.params))), dtype=float)

    def terms_log(self, internal: np.ndarray, features: np.ndarray) -> np.ndarray:
        """Log of each term, shape (n_terms, n_rows)."""
        return np.add.reduceat(np.asarray(internal, float)[:, None] * features, self.term_starts, axis=0)

    def log_terms(self, reported: Mapping[str, float], frame: pd.DataFrame) -> np.ndarray:
        """Log of each term at each row of ``frame`` from reported parameters, shape (n_terms, n_rows)."""
        raw = dict.fromkeys(self.columns, 0.0)
        return self.terms_log(self.to_internal(reported, raw), self.features(frame, raw))

    def log_predict(self, reported: Mapping[str, float], frame: pd.DataFrame) -> np.ndarray:
        """log L at each row of ``frame`` from reported parameters."""
        return np.logaddexp.reduce(self.log_terms(reported, frame), axis=0)


def _format_value(x: float) -> str:
    return np.format_float_positional(float(x), trim="-")


def _chinchilla_derived(p: Mapping[str, float], frame: pd.DataFrame) -> dict[str, float]:
    """Compute-optimal allocation N_opt = G (C/6)^a_opt, D_opt = (C/6)^b_opt / G (Hoffmann et al. eq. 4)."""
    alpha, beta = p["alpha"], p["beta"]
    ratio = alpha * p["A"] / (beta * p["B"])
    with np.errstate(all="ignore"):  # a resample with a negative exponent has no allocation: NaN, not complex
        return {
            "a_opt": beta / (alpha + beta),
            "b_opt": alpha / (alpha + beta),
            "G": float(np.power(ratio, 1.0 / (alpha + beta))) if ratio > 0 else float("nan"),
        }


def _alpha_eff(p: Mapping[str, float], frame: pd.DataFrame) -> dict[str, float]:
    """Effective D2 exponent alpha2 - alpha3 ln D1 at each distinct D1 of the table (the sunk-cost effect)."""
    alpha3 = p.get("alpha3", 0.0)
    return {
        f"alpha_eff(D1={_format_value(d1)})": p["alpha2"] - alpha3 * float(np.log(d1))
        for d1 in np.unique(frame["D1"].to_numpy(float))
    }


def _m(param: str, sign: int = 1, *variables: str) -> Monomial:
    """Shorthand for the law table below."""
    return Monomial(param, sign, tuple(variables))


# Grid for the non-chinchilla laws, in internal (centred) coordinates: a log-coefficient is the log of its
# term at the data's centre, so the same few values suit any data whose losses are O(1-10) nats;
# interactions start at zero. 3 values per coefficient, 2 per exponent: upcycled 36 starts, joint_upcycled 216.
_COEF = (-2.0, -0.5, 1.0)
_EXPONENT = (0.1, 0.5)
_INTERACTION = (0.0,)

_HOFFMANN = {
    "a": tuple(float(x) for x in range(0, 30, 5)),
    "alpha": (0.0, 0.5, 1.0, 1.5, 2.0),
    "b": tuple(float(x) for x in range(0, 30, 5)),
    "beta": (0.0, 0.5, 1.0, 1.5, 2.0),
    "e": (-1.0, -0.5, 0.0, 0.5, 1.0),
}

_UPCYCLED_TERM = (_m("a"), _m("alpha1", -1, "D1"), _m("alpha2", -1, "D2"), _m("alpha3", 1, "D1", "D2"))
_UPCYCLED_GRID = {"a": _COEF, "alpha1": _EXPONENT, "alpha2": _EXPONENT, "alpha3": _INTERACTION, "e": _COEF}

LAWS: dict[str, Law] = {
    law.name: law
    for law in (
        Law(
            "chinchilla",
            "L = E + A N^-alpha + B D^-beta",
            ("N", "D"),
            ((_m("a"), _m("alpha", -1, "N")), (_m("b"), _m("beta", -1, "D")), (_m("e"),)),
            {"a": "A", "b": "B", "e": "E"},
            _HOFFMANN,
            centre=False,
            derived=_chinchilla_derived,
        ),
        Law(
            "upcycled",
            "L = A D1^-alpha1 D2^(-alpha2 + alpha3 ln D1) + E",
            ("D1", "D2"),
            (_UPCYCLED_TERM, (_m("e"),)),
            {"a": "A", "e": "E"},
            _UPCYCLED_GRID,
            derived=_alpha_eff,
        ),
        Law(
            "upcycled_no_interaction",
            "L = A D1^-alpha1 D2^-alpha2 + E",
            ("D1", "D2"),
            (_UPCYCLED_TERM[:3], (_m("e"),)),
            {"a": "A", "e": "E"},
            {k: v for k, v in _UPCYCLED_GRID.items() if k != "alpha3"},
            derived=_alpha_eff,
        ),
        Law(
            "upcycled_additive",
            "L = A D1^-alpha1 + B D2^-alpha2 + E",
            ("D1", "D2"),
            ((_m("a"), _m("alpha1", -1, "D1")), (_m("b"), _m("alpha2", -1, "D2")), (_m("e"),)),
            {"a": "A", "b": "B", "e": "E"},
            {"a": _COEF, "alpha1": _EXPONENT, "b": _COEF, "alpha2": _EXPONENT, "e": _COEF},
        ),
        Law(
            "joint_upcycled",
            "L = A D1^-alpha1 D2^(-alpha2 + alpha3 ln D1) + B N1^-beta + E",
            ("N1", "D1", "D2"),
            (_UPCYCLED_TERM, (_m("b"), _m("beta", -1, "N1")), (_m("e"),)),
            {"a": "A", "b": "B", "e": "E"},
            {**_UPCYCLED_GRID, "b": _COEF, "beta": _EXPONENT},
            derived=_alpha_eff,
        ),
        Law(
            "sparsity",
            "L = e^d1 P^-a N_active^-b e^(c ln P ln N_active) + e^d3",
            ("P", "N_active"),
            ((_m("d1"), _m("a", -1, "P"), _m("b", -1, "N_active"), _m("c", 1, "P", "N_active")), (_m("d3"),)),
            {},
            {"d1": _COEF, "a": _EXPONENT, "b": _EXPONENT, "c": _INTERACTION, "d3": _COEF},
        ),
        Law(
            "sparsity_no_interaction",
            "L = e^d1 P^-a N_active^-b + e^d3",
            ("P", "N_active"),
            ((_m("d1"), _m("a", -1, "P"), _m("b", -1, "N_active")), (_m("d3"),)),
            {},
            {"d1": _COEF, "a": _EXPONENT, "b": _EXPONENT, "d3": _COEF},
        ),
        Law(
            "sparsity_additive_interaction",
            "L = e^d1 P^-a + e^d2 N_active^-b e^(c ln P ln N_active) + e^d3",
            ("P", "N_active"),
            (
                (_m("d1"), _m("a", -1, "P")),
                (_m("d2"), _m("b", -1, "N_active"), _m("c", 1, "P", "N_active")),
                (_m("d3"),),
            ),
            {},
            {"d1": _COEF, "a": _EXPONENT, "d2": _COEF, "b": _EXPONENT, "c": _INTERACTION, "d3": _COEF},
        ),
        Law(
            "sparsity_additive",
            "L = e^d1 P^-a + e^d2 N_active^-b + e^d3",
            ("P", "N_active"),
            ((_m("d1"), _m("a", -1, "P")), (_m("d2"), _m("b", -1, "N_active")), (_m("d3"),)),
            {},
            {"d1": _COEF, "a": _EXPONENT, "d2": _COEF, "b": _EXPONENT, "d3": _COEF},
        ),
    )
}


def get_law(name: str) -> Law:
    """The law called ``name``; a KeyError lists the valid names."""
    try:
        return LAWS[name]
    except KeyError:
        raise KeyError(f"unknown law {name!r}; valid laws: {', '.join(sorted(LAWS))}") from None


def predict(law_name: str, params: Mapping[str, float], frame: pd.DataFrame) -> np.ndarray:
    """Predicted loss at each row of ``frame`` from reported parameters (e.g. a fit JSON's ``params``)."""
    return np.exp(get_law(law_name).log_predict(params, frame))
