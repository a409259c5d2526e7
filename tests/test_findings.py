"""The report's answers from sweep rows: verdicts follow the numbers and their error bars."""

from __future__ import annotations

from tasks.findings import answers, pruning_cost_answer, pruned_vs_full_answer, random_real_answer, ranking_rows
from tasks.results import to_markdown


def row(mode, ipc, labels, compression, top1, std=0.01, similarity=0.6):
    return {"mode": mode, "ipc": ipc, "labels": labels, "compression": compression, "test_top1": top1,
            "test_top1_std": std, "within_class_similarity": similarity}


ROWS = [
    row("lpld", 10, "soft", 1.0, 0.72, similarity=0.55), row("lpld", 10, "soft", 40.0, 0.70, similarity=0.55),
    row("sre2l", 10, "soft", 1.0, 0.71, similarity=0.65), row("sre2l", 10, "soft", 40.0, 0.60, similarity=0.65),
    row("random_real", 10, "soft", 1.0, 0.74, similarity=0.70), row("random_real", 10, "soft", 40.0, 0.70, similarity=0.70),
    row("lpld", 10, "hard", 0.0, 0.40), row("sre2l", 10, "hard", 0.0, 0.35), row("random_real", 10, "hard", 0.0, 0.65),
    row("full", None, "hard", 0.0, 0.90, std=0.0, similarity=None),
]


def test_each_question_is_answered_with_its_numbers():
    text = "\n".join(line for lines in answers(ROWS).values() for line in lines)
    assert "**yes** (lpld 0.5500, sre2l 0.6500, random_real 0.7000" in text
    assert "**yes**: 1x to 40x costs lpld +0.0200 ± 0.0141 and sre2l +0.1100 ± 0.0141" in text
    assert "**no**: lpld 40x 0.7000 ± 0.0100 vs sre2l 1x 0.7100 ± 0.0100" not in text  # 0.01 apart is noise
    assert "**yes, within noise**: lpld 40x 0.7000 ± 0.0100 vs sre2l 1x 0.7100 ± 0.0100" in text


def test_a_clear_loss_is_a_no_and_a_missing_point_is_na():
    worse = [r if (r["mode"], r["compression"]) != ("lpld", 40.0) else {**r, "test_top1": 0.50} for r in ROWS]
    assert pruned_vs_full_answer(worse, 10).startswith("- IPC 10: **no**")
    assert pruning_cost_answer(worse, 10).startswith("- IPC 10: **no**")
    assert "random_real ahead" in random_real_answer(worse, 10)
    assert pruning_cost_answer([r for r in ROWS if r["mode"] != "sre2l"], 10) == "- IPC 10: n/a (the sweep lacks sre2l at 1x or 40x)"


def test_dd_ranking_scores_come_from_the_1x_hard_and_full_points():
    ranking = {r["mode"]: r for r in ranking_rows(ROWS)}
    assert ranking["lpld"]["hlr"] == 0.5 and ranking["lpld"]["ior"] == -0.02  # 0.90-0.40, 0.72-0.74
    assert ranking["random_real"]["ior"] == 0.0
    assert 0 < ranking["lpld"]["lrs"] < ranking["random_real"]["lrs"] < 1
    assert ranking_rows([r for r in ROWS if r["mode"] != "full"]) == []
    assert to_markdown(ranking_rows(ROWS)).startswith("| mode | ipc | hard_labels |")
