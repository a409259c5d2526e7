"""The report's answers from sweep rows: verdicts follow paired differences and their errors."""

from __future__ import annotations

import math

import pytest

from tasks.report.claims import (against_random_real, answers, pruned_vs_full_answer, pruning_cost_answer, ranking_rows,
                            verdict)
from tasks.report.rows import paired_difference
from flows.tables import render_table


def row(mode, ipc, labels, compression, seeds, similarity=(0.6, 0.6, 0.6), label_format="fp16"):
    top1 = sum(seeds) / len(seeds)
    return {"mode": mode, "ipc": ipc, "labels": labels, "compression": compression,
            "label_format": label_format if labels == "soft" else "", "test_top1": top1, "test_top1_std": 0.01,
            "top1_per_seed": list(seeds), "within_class_similarity": sum(similarity) / len(similarity),
            "similarity_per_class": list(similarity)}


ROWS = [
    row("lpld", 10, "soft", 1.0, (0.72, 0.73, 0.71), similarity=(0.50, 0.55, 0.60)),
    row("lpld", 10, "soft", 40.0, (0.70, 0.72, 0.69), similarity=(0.50, 0.55, 0.60)),
    row("sre2l", 10, "soft", 1.0, (0.71, 0.72, 0.70), similarity=(0.60, 0.66, 0.69)),
    row("sre2l", 10, "soft", 40.0, (0.60, 0.62, 0.58), similarity=(0.60, 0.66, 0.69)),
    row("random_real", 10, "soft", 1.0, (0.74, 0.75, 0.73), similarity=(0.7, 0.7, 0.7)),
    row("random_real", 10, "soft", 40.0, (0.70, 0.71, 0.69), similarity=(0.7, 0.7, 0.7)),
    row("lpld", 10, "hard", 0.0, (0.40, 0.41, 0.39)), row("sre2l", 10, "hard", 0.0, (0.35, 0.36, 0.34)),
    row("random_real", 10, "hard", 0.0, (0.65, 0.66, 0.64)),
    row("full", None, "hard", 0.0, (0.90, 0.90, 0.90)),
]


def test_a_paired_difference_takes_seed_by_seed_differences_and_their_standard_error():
    a, b = {"top1_per_seed": [0.80, 0.82, 0.84]}, {"top1_per_seed": [0.79, 0.80, 0.81]}
    delta, error = paired_difference(a, b)
    assert delta == pytest.approx(0.02) and error == pytest.approx(0.01 / math.sqrt(3))
    assert paired_difference({"top1_per_seed": [0.8]}, {"top1_per_seed": [0.7]})[1] == math.inf  # one seed: unknown


def test_a_claim_holds_only_beyond_two_standard_errors():
    assert verdict(0.03, 0.01) == "holds"
    assert verdict(-0.03, 0.01) == "does not hold"
    assert verdict(0.015, 0.01) == verdict(-0.015, 0.01) == "undecided at this noise"


def test_each_question_is_answered_with_its_paired_numbers():
    text = "\n".join(line for lines in answers(ROWS).values() for line in lines)
    assert "**holds**: lpld 0.5500, sre2l 0.6500, random_real 0.7000" in text  # 0.10 / 0.11 / 0.09 lower per class
    assert "1x to 40x costs lpld +0.0167 ± 0.0033 and sre2l +0.1100 ± 0.0058 top-1 (positive = lost) (paired difference +0.0933 ± 0.0033)" in text
    assert "**holds (equal within noise)**: lpld 40x 0.7033 ± 0.0100 vs sre2l 1x 0.7100 ± 0.0100 (paired difference -0.0067 ± 0.0033)" in text
    assert "40x fp16 +0.0033 ± 0.0033 (undecided at this noise)" in text
    assert "- IPC 10, random_real: **holds**: soft 1x 0.7400 ± 0.0100 vs hard 0.6500 ± 0.0100" in text
    assert "- n/a (no image set was run at two IPCs)" in text


def test_a_clear_loss_does_not_hold_and_a_missing_point_is_na():
    worse = [r if (r["mode"], r["compression"]) != ("lpld", 40.0) else {**r, "top1_per_seed": [0.50, 0.52, 0.51],
                                                                          "test_top1": 0.51} for r in ROWS]
    assert pruned_vs_full_answer(worse, 10).startswith("- IPC 10: **does not hold**")
    assert pruning_cost_answer(worse, 10).startswith("- IPC 10: **does not hold**")
    assert "40x fp16 -0.1900 ± 0.0058 (does not hold)" in against_random_real(worse, 10, "lpld")
    assert pruning_cost_answer([r for r in ROWS if r["mode"] != "sre2l"], 10) == "- IPC 10: n/a (the sweep lacks sre2l at 1x or 40x)"


def test_a_larger_ipc_is_compared_with_the_smaller_one_seed_by_seed():
    rows = [*ROWS, row("lpld", 50, "soft", 1.0, (0.75, 0.74, 0.73))]
    assert "(f) Does a larger IPC train better students at 1x?" in answers(rows)
    [line] = answers(rows)["(f) Does a larger IPC train better students at 1x?"]
    assert line == ("- lpld: **holds**: IPC 50 0.7400 ± 0.0100 vs IPC 10 0.7200 ± 0.0100 "
                    "(paired difference +0.0200 ± 0.0058)")


def test_compact_formats_are_compared_with_random_real_at_the_same_format():
    compact = [*ROWS, row("lpld", 10, "soft", 40.0, (0.69, 0.70, 0.68), label_format="topk+seed")]
    assert "topk+seed" not in against_random_real(compact, 10, "lpld")  # random_real has no topk point
    compact.append(row("random_real", 10, "soft", 40.0, (0.60, 0.61, 0.59), label_format="topk+seed"))
    assert "40x topk+seed +0.0900 ± 0.0000 (holds)" in against_random_real(compact, 10, "lpld")


def test_dd_ranking_scores_come_from_the_1x_hard_and_full_points():
    ranking = {r["mode"]: r for r in ranking_rows(ROWS)}
    assert ranking["lpld"]["hlr"] == 0.5 and ranking["lpld"]["ior"] == -0.02  # 0.90-0.40, 0.72-0.74
    assert ranking["random_real"]["ior"] == 0.0
    assert 0 < ranking["lpld"]["lrs"] < ranking["random_real"]["lrs"] < 1
    assert ranking_rows([r for r in ROWS if r["mode"] != "full"]) == []
    assert render_table(ranking_rows(ROWS)).startswith("| mode | ipc | hard_labels |")
