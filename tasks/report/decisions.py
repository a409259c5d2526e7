"""How the report decides a claim: a paired difference over replicates, a 95 % two-sided
t-interval on n - 1 degrees of freedom, and Holm's step-down correction across every decision of
the report.

A claim says a paired difference ``d`` is positive (superiority) or above ``-margin``
(non-inferiority: "at least as good, within the margin"). Each gets a p-value: two-sided for
``d = 0`` (superiority), twice the one-sided one for ``d <= -margin`` (non-inferiority, so its
95 % two-sided interval clearing ``-margin`` is the same decision). Holm then orders the
p-values of the report and tests the i-th smallest at ``alpha / (m - i + 1)``, stopping at the
first that fails. A claim **holds** when it passes in its direction; a superiority claim **does
not hold** when it passes the other way, a non-inferiority claim when its whole interval lies
below ``-margin``; anything else is **undecided**, with the replicates that would settle it at the
observed spread.

    decided = holm([Decision.paired("lpld beats sre2l", a, b), ...])   # alpha 0.05
    decided[0].verdict, decided[0].interval, decided[0].replicates_to_settle()
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from statistics import fmean, stdev
from typing import Sequence

from scipy import stats

ALPHA = 0.05
SETTLE_LIMIT = 1000  # the most replicates replicates_to_settle counts up to


@dataclass(frozen=True)
class Decision:
    """One claim about a paired difference: its values, kind, margin and (after :func:`holm`) its verdict."""

    claim: str
    differences: tuple[float, ...]
    margin: float | None = None  # None: superiority (d > 0); else non-inferiority (d > -margin)
    level: float | None = None  # Holm's level for this claim, set by holm()
    passed: bool = False  # set by holm(): the claim's test passed at its level

    @classmethod
    def paired(cls, claim: str, ours: Sequence[float], theirs: Sequence[float], *, margin: float | None = None) -> Decision:
        """``ours[i] - theirs[i]`` over the replicates both have (pairs by index)."""
        return cls(claim, tuple(a - b for a, b in zip(ours, theirs)), margin)

    @property
    def n(self) -> int:
        return len(self.differences)

    @property
    def mean(self) -> float:
        return fmean(self.differences) if self.differences else math.nan

    @property
    def standard_error(self) -> float:
        return stdev(self.differences) / math.sqrt(self.n) if self.n > 1 else math.inf

    def interval(self, confidence: float = 1 - ALPHA) -> tuple[float, float]:
        """The two-sided t-interval of the mean difference (n - 1 degrees of freedom)."""
        if self.n < 2:
            return -math.inf, math.inf
        half = stats.t.ppf(1 - (1 - confidence) / 2, self.n - 1) * self.standard_error
        return self.mean - half, self.mean + half

    @property
    def shifted(self) -> float:
        """The distance the claim needs above zero: d (superiority) or d + margin (non-inferiority)."""
        return self.mean + (self.margin or 0.0)

    @property
    def p_value(self) -> float:
        if self.n < 2:
            return 1.0
        if self.standard_error == 0:
            return 0.0 if self.shifted != 0 else 1.0
        t = self.shifted / self.standard_error
        if self.margin is None:
            return float(2 * stats.t.sf(abs(t), self.n - 1))
        return float(min(1.0, 2 * stats.t.sf(t, self.n - 1)))

    @property
    def verdict(self) -> str:
        if self.passed and self.shifted > 0:
            return "holds"
        low, high = self.interval(1 - (self.level or ALPHA))
        worse = (self.passed and self.mean < 0) if self.margin is None else high < -self.margin
        return "does not hold" if worse else "undecided"

    def has_spread(self) -> bool:
        """Whether the replicates give a spread and an effect to size a study by."""
        return self.n >= 2 and stdev(self.differences) > 0 and self.shifted != 0

    def replicates_to_settle(self, limit: int = SETTLE_LIMIT) -> int | None:
        """About how many replicates would decide the claim at its level, were the mean and the
        spread what they are now (None: no spread to go by, or more than ``limit``)."""
        if not self.has_spread():
            return None
        spread, effect = stdev(self.differences), abs(self.shifted)
        for n in range(max(2, self.n + 1), limit + 1):  # undecided at n: only more replicates can settle it
            if stats.t.ppf(1 - (self.level or ALPHA) / 2, n - 1) * spread / math.sqrt(n) < effect:
                return n
        return None


def holm(decisions: list[Decision], alpha: float = ALPHA) -> list[Decision]:
    """The decisions (same order) with Holm's level and outcome: the i-th smallest p-value is tested
    at ``alpha / (m - i + 1)`` until one fails; those after it keep the level they would have had."""
    order = sorted(range(len(decisions)), key=lambda i: decisions[i].p_value)
    decided, failed = list(decisions), False
    for rank, index in enumerate(order):
        level = alpha / (len(decisions) - rank)
        passed = not failed and decisions[index].p_value < level
        failed = failed or not passed
        decided[index] = replace(decisions[index], level=level, passed=passed)
    return decided


def describe(decision: Decision) -> str:
    """``**holds**: <claim> (paired difference +0.0123, 95 % CI [+0.0040, +0.0206], n = 5, Holm p-level 0.0083)``."""
    low, high = decision.interval()
    margin = f", margin {decision.margin:g}" if decision.margin is not None else ""
    text = (f"**{decision.verdict}**: {decision.claim} (paired difference {decision.mean:+.4f}, 95 % CI "
            f"[{low:+.4f}, {high:+.4f}], n = {decision.n}, p = {decision.p_value:.3g} against Holm's "
            f"{decision.level or ALPHA:.3g}{margin})")
    if decision.verdict == "undecided":
        needed = decision.replicates_to_settle()
        if decision.level is not None and decision.p_value < decision.level:
            text += "; it clears its own level, but Holm's step-down stopped at a claim of smaller p-value"
        elif needed:
            text += f"; about {needed} replicates would settle it at this spread"
        elif decision.has_spread():  # a difference this small against this spread: a tie for any study size
            text += f"; more than {SETTLE_LIMIT:,} replicates would be needed at this spread"
        else:
            text += "; no spread to go by"
    return text
