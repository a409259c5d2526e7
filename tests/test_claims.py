"""The report's answers from sweep rows: each claim a paired difference over replicates, decided at
95 % with Holm across the report, both sre2l variants, the margin of (c), IPC at two budgets."""

from __future__ import annotations

import pytest

from flows.tables import render_table
from tasks.report.claims import all_claims, answers, decided_claims, random_real_claims, ranking_rows


def row(mode, ipc, labels, compression, runs, similarity=(0.6, 0.6, 0.6, 0.6, 0.6), label_format="fp16", steps=2400):
    return {"mode": mode, "ipc": ipc, "labels": labels, "compression": compression,
            "label_format": label_format if labels == "soft" else "", "test_top1": sum(runs) / len(runs),
            "test_top1_std": 0.01, "test_runs": list(runs), "val_runs": list(runs), "student_steps": steps,
            "within_class_similarity": sum(similarity) / len(similarity), "similarity_runs": list(similarity)}


def shifted(runs, by):
    return tuple(round(v + by, 4) for v in runs)


LPLD_1X = (0.830, 0.835, 0.828, 0.832, 0.834)
ROWS = [
    row("lpld", 10, "soft", 1.0, LPLD_1X, similarity=(0.55, 0.56, 0.54, 0.55, 0.56)),
    row("lpld", 10, "soft", 40.0, shifted(LPLD_1X, -0.018)),
    row("sre2l", 10, "soft", 1.0, shifted(LPLD_1X, 0.002), similarity=(0.58, 0.59, 0.57, 0.58, 0.585)),
    row("sre2l", 10, "soft", 40.0, (0.80, 0.81, 0.795, 0.802, 0.808)),
    row("sre2l+pooled", 10, "soft", 1.0, shifted(LPLD_1X, -0.001), similarity=(0.56, 0.55, 0.555, 0.56, 0.565)),
    row("sre2l+pooled", 10, "soft", 40.0, shifted(LPLD_1X, -0.02)),
    row("random_real", 10, "soft", 1.0, shifted(LPLD_1X, 0.02)),
    row("random_real", 10, "soft", 40.0, shifted(LPLD_1X, 0.01)),
    row("lpld", 10, "hard", 0.0, (0.40, 0.41, 0.39, 0.42, 0.40)),
    row("random_real", 10, "hard", 0.0, (0.65, 0.66, 0.64, 0.65, 0.66)),
    row("full", None, "hard", 0.0, (0.90, 0.91, 0.90)),
]


def _lines() -> str:
    return "\n".join(line for lines in answers(ROWS, margin=0.005).values() for line in lines)


def test_each_question_is_answered_against_both_sre2l_variants_with_its_interval():
    text = _lines()
    assert "- IPC 10, against sre2l as published (running statistics): **holds**: lpld 0.5520 vs sre2l 0.5810" in text
    assert "- IPC 10, against sre2l on lpld's exact statistics, pooled: " in text
    assert text.count("95 % CI [") == len([c for c in all_claims(ROWS, margin=0.005) if c.decision is not None])
    assert "(d) Do synthetic images beat the random real subset at the same label bytes?" in answers(ROWS, margin=0.005)


def test_non_inferiority_is_judged_against_the_margin_not_equality():
    claims = {c.label: c for c in decided_claims(ROWS, margin=0.005)
              if c.question.startswith("(c)")}
    published = claims["IPC 10, against sre2l as published (running statistics)"].decision
    assert published.mean < -0.005 and published.verdict == "does not hold"  # lpld 40x is 0.020 below sre2l 1x
    loose = {c.label: c for c in decided_claims(ROWS, margin=0.05) if c.question.startswith("(c)")}
    assert loose["IPC 10, against sre2l as published (running statistics)"].decision.verdict == "holds"


def test_holm_counts_every_decision_of_the_report():
    decided = [c.decision for c in decided_claims(ROWS, margin=0.005) if c.decision is not None]
    assert sorted(d.level for d in decided)[0] == 0.05 / len(decided)


def test_a_missing_point_is_na_and_compact_formats_pair_with_the_same_format():
    no_pooled = [r for r in ROWS if r["mode"] != "sre2l+pooled"]
    lines = answers(no_pooled, margin=0.005)["(b) Does pruning to 40x cost lpld less than sre2l?"]
    assert lines[1] == ("- IPC 10, against sre2l on lpld's exact statistics, pooled: n/a (the sweep lacks lpld or "
                        "sre2l+pooled at 1x or 40x)")
    compact = [*ROWS, row("lpld", 10, "soft", 40.0, shifted(LPLD_1X, -0.03), label_format="topk+seed")]
    assert not [c for c in random_real_claims(compact, 10, "lpld") if "topk" in c.label]  # random_real has no topk
    compact.append(row("random_real", 10, "soft", 40.0, shifted(LPLD_1X, -0.05), label_format="topk+seed"))
    [topk] = [c for c in random_real_claims(compact, 10, "lpld") if "topk" in c.label]
    assert topk.decision.mean == pytest.approx(0.02)


def test_lpld_against_sre2l_is_asked_only_at_the_ipcs_that_have_either():
    headroom = [*ROWS, row("random_real", 20, "soft", 1.0, shifted(LPLD_1X, 0.025))]
    questions = [c for c in all_claims(headroom, margin=0.005) if c.question.startswith(("(a)", "(b)", "(c)"))]
    assert len(questions) == 6 and all(c.label.startswith("IPC 10,") for c in questions)
    only_real = [r for r in headroom if r["mode"] in ("random_real", "full")]
    lines = answers(only_real, margin=0.005)["(a) Is within-class similarity lower for lpld than sre2l?"]
    assert lines == ["- IPC 10, against sre2l as published (running statistics): n/a (the sweep has no lpld and sre2l "
                     "images at IPC 10)", "- IPC 10, against sre2l on lpld's exact statistics, pooled: n/a (the sweep "
                     "has no lpld and sre2l+pooled images at IPC 10)"]


def test_a_larger_ipc_is_compared_at_equal_steps_and_at_equal_epochs():
    rows = [*ROWS, row("lpld", 50, "soft", 1.0, shifted(LPLD_1X, 0.01), steps=2400),
            row("lpld", 50, "soft", 1.0, shifted(LPLD_1X, 0.02), steps=12000)]
    lines = answers(rows, margin=0.005)["(f) Does a larger IPC train better students at the same pruning factor?"]
    assert lines[0].startswith("- lpld, IPC 50 vs 10, 1x, equal student steps: ")
    assert lines[1].startswith("- lpld, IPC 50 vs 10, 1x, 12,000 student steps against 2,400: ")


def test_dd_ranking_scores_come_from_the_1x_hard_and_full_points():
    ranking = {r["mode"]: r for r in ranking_rows(ROWS)}
    assert ranking["lpld"]["hlr"] == round(sum((0.90, 0.91, 0.90)) / 3 - 0.404, 4)
    assert ranking["lpld"]["ior"] == -0.02 and ranking["random_real"]["ior"] == 0.0
    assert 0 < ranking["lpld"]["lrs"] < ranking["random_real"]["lrs"] < 1
    assert ranking_rows([r for r in ROWS if r["mode"] != "full"]) == []
    assert render_table(ranking_rows(ROWS)).startswith("| mode | ipc | hard_labels |")


def test_only_the_criterion_chosen_on_validation_is_judged_against_random_real():
    # compared at 40x: herding is best on test, kcenter on validation; validation picks, so herding makes no claim
    herding, kcenter = (row("select-herding", 10, "soft", 40.0, shifted(LPLD_1X, 0.04)),
                        row("select-kcenter", 10, "soft", 40.0, shifted(LPLD_1X, 0.03)))
    herding["val_top1"], kcenter["val_top1"] = 0.80, 0.81
    kcenter_1x = row("select-kcenter", 10, "soft", 1.0, shifted(LPLD_1X, 0.035))
    kcenter_1x["val_top1"] = 0.70  # not a compared point: one criterion alone at 1x
    rows = [*ROWS, herding, kcenter, kcenter_1x, row("select-kcenter", 10, "hard", 0.0, (0.7, 0.71, 0.69, 0.7, 0.7)),
            row("select-herding", 10, "hard", 0.0, (0.7, 0.71, 0.69, 0.7, 0.7))]
    labels = [c.label for c in all_claims(rows, margin=0.005) if c.question.startswith(("(d)", "(e)"))]
    assert not [label for label in labels if "herding," in label or label.endswith("herding")]
    chosen = [label for label in labels if label.startswith("IPC 10, select-kcenter, ")]
    assert [label.split(" (")[0] for label in chosen] == ["IPC 10, select-kcenter, 1x fp16", "IPC 10, select-kcenter, 40x fp16"]
    assert chosen[0].endswith("(chosen on validation top-1 at 40x: select-herding 0.8000, select-kcenter 0.8100)")
    assert "IPC 10, select-kcenter" in labels  # its soft-against-hard claim
    alone = [r for r in rows if r["mode"] != "select-herding"]  # a confirmation run of the chosen criterion
    assert [c.label for c in all_claims(alone, margin=0.005) if c.label.startswith("IPC 10, select-kcenter, ")] == [
        "IPC 10, select-kcenter, 1x fp16", "IPC 10, select-kcenter, 40x fp16"]


def test_a_compact_format_is_judged_against_fp16_at_the_same_kept_steps_within_the_margin():
    lpld_40x = shifted(LPLD_1X, -0.018)
    close = [*ROWS, row("lpld", 10, "soft", 40.0, shifted(lpld_40x, -0.001), label_format="prob8+stream")]
    [claim] = [c for c in decided_claims(close, margin=0.005) if c.question.startswith("(g)")]
    assert claim.label == "IPC 10, lpld, 40x" and claim.decision.mean == pytest.approx(-0.001)
    assert claim.decision.verdict == "holds"
    far = [*ROWS, row("lpld", 10, "soft", 40.0, (0.79, 0.80, 0.795, 0.80, 0.79), label_format="prob8+stream")]
    [claim] = [c for c in decided_claims(far, margin=0.005) if c.question.startswith("(g)")]
    assert claim.decision.verdict == "does not hold"


def test_a_headroom_sweep_compares_every_larger_ipc_at_each_factor_and_asks_e_once():
    """Random real at IPC 10, 20, 100 and 5,000 at 1x and 40x (docs/headroom-ipc10): (f) each larger IPC
    against IPC 10 at the same factor, never across factors; (e) only where hard labels were run, and one
    n/a line, not one per IPC, when nowhere."""
    rows = [row("random_real", ipc, "soft", factor, shifted(LPLD_1X, lift - cost), steps=6000)
            for ipc, lift in ((10, 0.0), (20, 0.003), (100, 0.01), (5000, 0.02)) for factor, cost in ((1.0, 0), (40.0, 0.01))]
    rows.append(row("random_real", 10, "soft", 40.0, shifted(LPLD_1X, -0.05), label_format="logp8+stream"))
    lines = answers(rows, margin=0.005)
    assert [line.split(":")[0] for line in lines["(f) Does a larger IPC train better students at the same pruning factor?"]] == [
        f"- random_real, IPC {ipc} vs 10, {factor}, equal student steps" for factor in ("1x", "40x")
        for ipc in (20, 100, 5000)]
    assert all("+0.0" in line for line in lines["(f) Does a larger IPC train better students at the same pruning factor?"])  # larger IPC against smaller: never 40x against 1x
    assert lines["(e) Do soft labels at 1x beat hard labels on the same images?"] == [
        "- IPC 10: n/a (the sweep lacks soft 1x and hard-label points of one image set)"]
    with_hard = [*rows, row("random_real", 100, "hard", 0.0, shifted(LPLD_1X, -0.2))]
    [soft_vs_hard] = answers(with_hard, margin=0.005)["(e) Do soft labels at 1x beat hard labels on the same images?"]
    assert soft_vs_hard.startswith("- IPC 100, random_real: ")


def test_d_pairs_a_set_with_random_real_at_the_same_student_steps():
    """A sweep over relabel.epochs has two random real rows at one factor; (d) must not pair lpld's
    6,000-step students with whichever of them comes first."""
    rows = [row("random_real", 10, "soft", 1.0, shifted(LPLD_1X, 0.05), steps=1200),
            row("random_real", 10, "soft", 1.0, shifted(LPLD_1X, 0.02), steps=6000),
            row("lpld", 10, "soft", 1.0, LPLD_1X, steps=6000)]
    [claim] = random_real_claims(rows, 10, "lpld")
    assert claim.label == "IPC 10, lpld, 1x fp16" and claim.decision.mean == pytest.approx(-0.02)
    rows.append(row("lpld", 10, "soft", 1.0, shifted(LPLD_1X, 0.01), steps=1200))
    labels = {c.label: round(c.decision.mean, 4) for c in random_real_claims(rows, 10, "lpld")}
    assert labels == {"IPC 10, lpld, 1x fp16, 1,200 student steps": -0.04, "IPC 10, lpld, 1x fp16, 6,000 student steps": -0.02}
