"""The report's decision rule against intervals computed by hand: a paired mean difference, a 95 %
two-sided t-interval on n - 1 degrees of freedom, Holm's step-down across the report, and the
non-inferiority margin."""

from __future__ import annotations

import math

import pytest

from tasks.report.decisions import Decision, describe, holm

T_975 = {2: 4.302652729911275, 3: 3.182446305284263, 4: 2.7764451051977987}  # Student's t quantiles (tables)


def _decide(*decisions: Decision) -> list[Decision]:
    return holm(list(decisions))


def test_a_difference_beyond_two_standard_errors_is_undecided_at_the_t_quantile_of_three_replicates():
    [d] = _decide(Decision("a", (0.01, 0.02, 0.03)))
    se = 0.01 / math.sqrt(3)  # sd 0.01 of three differences
    assert d.mean == pytest.approx(0.02) and d.standard_error == pytest.approx(se)
    assert d.mean > 2 * se  # what the old rule (2 standard errors) called "holds"
    assert d.interval() == pytest.approx((0.02 - T_975[2] * se, 0.02 + T_975[2] * se))  # [-0.00484, +0.04484]
    t = 0.02 / se
    assert d.p_value == pytest.approx(1 - t / math.sqrt(t * t + 2))  # two-sided p of Student's t on 2 df, closed form
    assert d.verdict == "undecided"
    assert d.replicates_to_settle() == 4  # t(3) 3.18 x 0.01 / 2 = 0.0159 < 0.02; t(2) 4.30 x 0.01 / 1.73 = 0.0248 > 0.02


def test_a_clear_difference_holds_and_its_mirror_does_not():
    diffs = (0.05, 0.06, 0.055, 0.052, 0.058)
    [holds, fails] = _decide(Decision("b", diffs), Decision("b-", tuple(-d for d in diffs)))
    sd = math.sqrt((25e-6 + 25e-6 + 0 + 9e-6 + 9e-6) / 4)
    half = T_975[4] * sd / math.sqrt(5)
    assert holds.interval() == pytest.approx((0.055 - half, 0.055 + half))  # [+0.0499, +0.0601]
    assert (holds.verdict, fails.verdict) == ("holds", "does not hold")
    assert describe(holds).startswith("**holds**: b (paired difference +0.0550, 95 % CI [+0.0499, +0.0601], n = 5,")


def test_non_inferiority_holds_only_when_the_interval_clears_the_margin():
    diffs = (-0.002, 0.001, -0.004, 0.0, -0.001)  # mean -0.0012, sd sqrt(14.8e-6 / 4)
    half = T_975[4] * math.sqrt(14.8e-6 / 4) / math.sqrt(5)
    [within] = _decide(Decision("c", diffs, margin=0.005))
    assert within.interval() == pytest.approx((-0.0012 - half, -0.0012 + half))  # [-0.00359, +0.00119]
    assert within.interval()[0] > -0.005 and within.verdict == "holds"
    [tight] = _decide(Decision("c", diffs, margin=0.002))  # -0.00359 < -0.002: not shown within the margin
    assert tight.verdict == "undecided"
    [worse] = _decide(Decision("c", tuple(d - 0.02 for d in diffs), margin=0.005))  # the whole interval below -0.005
    assert worse.verdict == "does not hold"
    assert "margin 0.005" in describe(within)


def test_holm_tests_the_smallest_p_at_alpha_over_m_and_stops_at_the_first_failure():
    # Three claims each with p = 1 - t / sqrt(t^2 + 2) near 0.03 on 2 df: each holds alone at 0.05,
    # none under Holm (the smallest is tested at 0.05 / 3 = 0.0167).
    close = Decision("x", (0.02258, 0.03258, 0.04258))
    t = 0.03258 / (0.01 / math.sqrt(3))
    assert close.p_value == pytest.approx(1 - t / math.sqrt(t * t + 2)) and 0.0167 < close.p_value < 0.05
    assert _decide(close)[0].verdict == "holds"
    decided = _decide(close, close, close)
    assert [d.verdict for d in decided] == ["undecided"] * 3 and decided[0].level == pytest.approx(0.05 / 3)
    clear = Decision("y", (0.05, 0.06, 0.055, 0.052, 0.058))  # p ~ 1e-5 passes 0.05 / 2, then close meets 0.05 / 1
    decided = _decide(close, clear)
    assert [d.verdict for d in decided] == ["holds", "holds"]
    assert [d.level for d in decided] == pytest.approx([0.05, 0.025])


def test_one_replicate_decides_nothing():
    [d] = _decide(Decision("z", (0.1,)))
    assert d.verdict == "undecided" and d.interval() == (-math.inf, math.inf) and d.replicates_to_settle() is None


def test_a_tie_too_close_to_settle_says_so_rather_than_that_it_has_no_spread():
    """docs/selection-ipc1/settle: +0.0007 over 40 replicates at a paired SD near 0.017 needs far more
    than 1,000 replicates; a claim with one replicate or identical differences has no spread at all."""
    diffs = tuple(0.0007 + 0.017 * (1 if i % 2 else -1) for i in range(40))
    [tie] = _decide(Decision("t", diffs))
    assert tie.verdict == "undecided" and tie.replicates_to_settle() is None
    assert describe(tie).endswith("; more than 1,000 replicates would be needed at this spread")
    [single] = _decide(Decision("s", (0.01,)))
    assert describe(single).endswith("; no spread to go by")


def test_a_claim_that_clears_its_level_after_holm_stopped_says_so_rather_than_asking_for_replicates_it_has():
    """docs/headroom-ipc10: IPC 5,000 at 1x had p = 0.0234 against Holm's 0.025 but stayed undecided, as
    a claim of smaller p-value had failed; the page said about 5 replicates, the 5 it had, would settle it."""
    first = Decision("first", (0.02258, 0.03258, 0.04258))  # p near 0.030: fails 0.05 / 2
    blocked = Decision("blocked", (0.018, 0.028, 0.038))  # p near 0.040: under 0.05 / 1, never tested
    decided = _decide(first, blocked)
    assert [d.verdict for d in decided] == ["undecided", "undecided"]
    assert decided[1].p_value < decided[1].level == 0.05
    assert describe(decided[1]).endswith("; it clears its own level, but Holm's step-down stopped at a claim of "
                                         "smaller p-value")
    assert decided[0].p_value > decided[0].level and decided[0].replicates_to_settle() > decided[0].n
