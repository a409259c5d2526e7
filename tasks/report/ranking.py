"""DD-Ranking's label-robust score, on accuracy fractions (so it stays in [0, 1]).

From four test top-1 accuracies of students trained the same way:

* HLR (hard-label recovery)      = full real data, hard labels  - distilled images, hard labels
* IOR (improvement over random)  = distilled images, soft labels - random real subset, soft labels
* LRS = (exp(lam * IOR - (1 - lam) * HLR) - exp(-1)) / (e - exp(-1)),  lam = 0.5 by default

Lower HLR and higher IOR mean the images themselves carry the information, not the labels.
"""

from __future__ import annotations

import math


def label_robust_score(
    *, full_hard: float, syn_hard: float, syn_soft: float, random_soft: float, lam: float = 0.5
) -> dict[str, float]:
    for name, value in (("full_hard", full_hard), ("syn_hard", syn_hard), ("syn_soft", syn_soft),
                        ("random_soft", random_soft)):
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"{name}={value} is not an accuracy fraction in [0, 1] (give 0.72, not 72)")
    if not 0.0 <= lam <= 1.0:
        raise ValueError(f"lam={lam} must be in [0, 1]")
    hlr, ior = full_hard - syn_hard, syn_soft - random_soft
    alpha = lam * ior - (1.0 - lam) * hlr
    lrs = (math.exp(alpha) - math.exp(-1.0)) / (math.e - math.exp(-1.0))
    return {"hlr": hlr, "ior": ior, "lrs": lrs}
