"""DD-Ranking's label-robust score on fractions."""

from __future__ import annotations

import math

import pytest

from tasks.report.ranking import label_robust_score


def test_the_score_combines_recovery_and_improvement_and_stays_in_the_unit_interval():
    scores = label_robust_score(full_hard=0.93, syn_hard=0.70, syn_soft=0.80, random_soft=0.75)
    assert scores["hlr"] == pytest.approx(0.23) and scores["ior"] == pytest.approx(0.05)
    alpha = 0.5 * 0.05 - 0.5 * 0.23
    assert scores["lrs"] == pytest.approx((math.exp(alpha) - math.exp(-1)) / (math.e - math.exp(-1)))
    best = label_robust_score(full_hard=0.0, syn_hard=1.0, syn_soft=1.0, random_soft=0.0, lam=0.5)
    worst = label_robust_score(full_hard=1.0, syn_hard=0.0, syn_soft=0.0, random_soft=1.0)
    assert best["lrs"] == pytest.approx(1.0) and worst["lrs"] == pytest.approx(0.0)


def test_percentages_are_refused_with_the_fix():
    with pytest.raises(ValueError, match=r"syn_soft=80 is not an accuracy fraction .*give 0.72, not 72"):
        label_robust_score(full_hard=0.9, syn_hard=0.7, syn_soft=80, random_soft=0.7)
