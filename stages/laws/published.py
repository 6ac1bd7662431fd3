"""Published fits, usable wherever the planner reads fit JSON files (``--fits liew2025``).

``liew2025``: Table 2 of Liew, Kato & Takase, "Scaling Laws for Upcycling Mixture-of-Experts Language Models",
arXiv:2502.03009 (ICML 2025), "Fitted parameters for joint scaling laws". One irreducible loss E = 0.165 is
shared by all three laws. Natural logs, raw counts (tokens, parameters). The table's rows, in our law names:

* Upcycled -> ``joint_upcycled``: L = A D1^-alpha1 D2^(-alpha2 + alpha3 ln D1) + B N1^-beta + E, with
  A = 16.3, alpha1 = 0.043, alpha2 = 0.085, alpha3 = 7.98e-4, B = 8.53, beta = 0.112 (same names as the paper).
* MoE (from scratch) and Dense -> ``chinchilla``. The paper writes L = A D^-alpha + B N^-beta + E (A, alpha
  with data, as the table's "alpha/alpha1" column shows); our ``chinchilla`` is L = E + A N^-alpha + B D^-beta,
  so the paper's (A, alpha) become our (B, beta) and its (B, beta) our (A, alpha). The MoE law is in N1, the
  size of the dense model the MoE is built from (the table's note), not in the MoE's own parameter count.

These are the paper's fits to its own runs: Llama-2-like dense models and Mixtral-like MoEs (8 experts, top-2)
trained on the CommonCrawl part of SlimPajama-DC (368B tokens), loss = cross-entropy in nats on that corpus's
validation set with the paper's tokenizer. Absolute losses transfer to no other corpus or tokenizer, and the
laws know nothing of other expert counts: N_active only enters the planner's compute ledger.

Valid range: the paper's exact grid of model sizes and token counts is not given in the parts of the paper
available to us, so the ``ranges`` below are an approximate envelope, flagged as such wherever they are used.
Upper ends: the largest dense model the paper names (1B, its Table 7) and the size of the training corpus
(368B tokens; data repetition is a separate ablation). Lower ends (1e8 parameters, 1e9 tokens) are assumed.
The paper publishes point estimates only: no bootstrap resamples, hence no intervals.
"""

from __future__ import annotations

import copy
from typing import Any

_E = 0.165  # shared irreducible loss (Table 2 caption)
_N_RANGE = [1e8, 1e9]
_TOKEN_RANGE = [1e9, 3.68e11]
_SOURCE = "Liew, Kato & Takase 2025, arXiv:2502.03009, Table 2"
_CAVEAT = (
    "liew2025: Table 2 of Liew et al. (arXiv:2502.03009), fitted on SlimPajama-DC CommonCrawl with 8-expert "
    "top-2 MoEs (losses in nats on their data and tokenizer); the fitted ranges are approximate (N1 <= 1e9, "
    "tokens <= 3.68e11 from the paper, lower ends 1e8 and 1e9 assumed); no bootstrap, so no intervals"
)

LIEW2025: dict[str, dict[str, Any]] = {
    "upcycled": {
        "law": "joint_upcycled",
        "params": {"A": 16.3, "alpha1": 0.043, "alpha2": 0.085, "alpha3": 7.98e-4, "B": 8.53, "beta": 0.112, "E": _E},
        "ranges": {"N1": _N_RANGE, "D1": _TOKEN_RANGE, "D2": _TOKEN_RANGE},
        "source": f"{_SOURCE}, row Upcycled",
    },
    "scratch_chinchilla": {
        "law": "chinchilla",
        # paper: A = 32.0, alpha = 0.161 (data); B = 7.05, beta = 0.080 (N1)
        "params": {"A": 7.05, "alpha": 0.080, "B": 32.0, "beta": 0.161, "E": _E},
        "ranges": {"N": _N_RANGE, "D": _TOKEN_RANGE},
        "source": f"{_SOURCE}, row MoE (from scratch), in N1",
    },
    "dense_chinchilla": {
        "law": "chinchilla",
        # paper: A = 8.83, alpha = 0.088 (data); B = 12.3, beta = 0.116 (parameters)
        "params": {"A": 12.3, "alpha": 0.116, "B": 8.83, "beta": 0.088, "E": _E},
        "ranges": {"N": _N_RANGE, "D": _TOKEN_RANGE},
        "source": f"{_SOURCE}, row Dense",
    },
}

FIT_SETS: dict[str, dict[str, dict[str, Any]]] = {"liew2025": LIEW2025}
CAVEATS: dict[str, str] = {"liew2025": _CAVEAT}


def fit_set(name: str) -> dict[str, dict[str, Any]]:
    """A copy of the published fit set ``name`` (fit-JSON-like dicts keyed by fit name)."""
    return copy.deepcopy(FIT_SETS[name])
