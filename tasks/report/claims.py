"""The report's claims, each a paired difference over replicates decided at 95 %, Holm-corrected
across the report (:mod:`tasks.report.decisions`):

(a) within-class similarity is lower for lpld than for sre2l;
(b) pruning to 40x costs lpld less than sre2l;
(c) lpld at 40x is at least as good as sre2l at 1x, within a stated margin (non-inferiority);
(d) a synthetic set beats the random real subset at the same label bytes (DD-Ranking's IOR);
(e) soft labels at 1x beat hard labels on the same images;
(f) a larger IPC beats a smaller one at the same pruning factor, at equal student steps and at equal epochs;
(g) a compact label format is at least as good as fp16 at the same kept steps, within the margin;

(a)-(c) twice: against sre2l as published (the teacher's running statistics) and against
``sre2l+pooled`` (the exact statistics lpld matches, pooled over classes), so that class-wise
against global is the only difference in the second. Replicate r of one point is paired with
replicate r of another (the same run seed: the same teacher when shared, the same student
draws); test top-1 decides, validation top-1 is reported beside it. Of several selection
criteria (``select-<criterion>``) only the one with the best validation top-1 where they were
compared (the pruning factor most of them were run at) makes claims (d) and (e), so the test
split never picks the criterion. A point the sweep did not run gives "n/a". DD-Ranking's HLR /
IOR / LRS per mode are in :mod:`tasks.report.ranking`.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

from tasks.report.decisions import Decision, describe, holm
from tasks.report.ranking import label_robust_score
from tasks.report.rows import Row, find, pm

FULL, PRUNED = 1.0, 40.0
SRE2L = {"sre2l": "sre2l as published (running statistics)", "sre2l+pooled": "sre2l on lpld's exact statistics, pooled"}


@dataclass(frozen=True)
class Claim:
    """One line of the report: a question, a label, and a decision (None: the sweep lacks a point)."""

    question: str
    label: str
    decision: Decision | None
    missing: str = ""


def _soft(rows: list[Row], mode: str, ipc: int, compression: float, label_format: str = "fp16",
          **where: Any) -> Row | None:
    return find(rows, mode=mode, ipc=ipc, labels="soft", compression=compression, label_format=label_format, **where)


def _ipcs(rows: list[Row]) -> list[int]:
    return sorted({r["ipc"] for r in rows if r["ipc"] is not None})


def similarity_claims(rows: list[Row], ipc: int) -> list[Claim]:
    question = "(a) Is within-class similarity lower for lpld than sre2l?"
    lpld, claims = find(rows, mode="lpld", ipc=ipc), []
    for mode, described in SRE2L.items():
        other = find(rows, mode=mode, ipc=ipc)
        label = f"IPC {ipc}, against {described}"
        if lpld is None or other is None:
            claims.append(Claim(question, label, None, f"the sweep has no lpld and {mode} images at IPC {ipc}"))
            continue
        if not lpld["similarity_runs"] or not other["similarity_runs"]:
            claims.append(Claim(question, label, None, "one image a class has no within-class pairs"))
            continue
        shown = f"lpld {lpld['within_class_similarity']:.4f} vs {mode} {other['within_class_similarity']:.4f}; {mode} minus lpld"
        claims.append(Claim(question, label, Decision.paired(shown, other["similarity_runs"], lpld["similarity_runs"])))
    return claims


def pruning_cost_claims(rows: list[Row], ipc: int) -> list[Claim]:
    question = "(b) Does pruning to 40x cost lpld less than sre2l?"
    claims = []
    for mode, described in SRE2L.items():
        points = {(m, c): _soft(rows, m, ipc, c) for m in ("lpld", mode) for c in (FULL, PRUNED)}
        label = f"IPC {ipc}, against {described}"
        if any(row is None for row in points.values()):
            claims.append(Claim(question, label, None, f"the sweep lacks lpld or {mode} at 1x or 40x"))
            continue
        cost = {m: [a - b for a, b in zip(points[m, FULL]["test_runs"], points[m, PRUNED]["test_runs"])] for m in ("lpld", mode)}
        shown = (f"1x to 40x costs lpld {sum(cost['lpld']) / len(cost['lpld']):+.4f} and {mode} "
                 f"{sum(cost[mode]) / len(cost[mode]):+.4f} top-1 (positive: lost); {mode}'s cost minus lpld's")
        claims.append(Claim(question, label, Decision.paired(shown, cost[mode], cost["lpld"])))
    return claims


def non_inferiority_claims(rows: list[Row], ipc: int, margin: float) -> list[Claim]:
    question = f"(c) Is lpld at 40x at least as good as sre2l at 1x (non-inferiority, margin {margin:g})?"
    claims, lpld = [], _soft(rows, "lpld", ipc, PRUNED)
    for mode, described in SRE2L.items():
        other = _soft(rows, mode, ipc, FULL)
        label = f"IPC {ipc}, against {described}"
        if lpld is None or other is None:
            claims.append(Claim(question, label, None, f"the sweep lacks lpld at 40x or {mode} at 1x"))
            continue
        shown = f"lpld 40x {pm(lpld)} vs {mode} 1x {pm(other)}"
        claims.append(Claim(question, label, Decision.paired(shown, lpld["test_runs"], other["test_runs"], margin=margin)))
    return claims


def _selection_rows(rows: list[Row], ipc: int) -> list[Row]:
    """The fp16 soft-label points of the selection criteria at ``ipc`` that were compared: those at the
    pruning factor where the most criteria were run (the larger factor on a tie)."""
    selected = [r for r in rows if r["mode"].startswith("select-") and r["ipc"] == ipc and r["labels"] == "soft"
                and r["label_format"] == "fp16" and r.get("val_top1") is not None]
    if not selected:
        return []
    counts = Counter(r["compression"] for r in selected)
    compared = max(counts, key=lambda factor: (counts[factor], factor))
    return sorted((r for r in selected if r["compression"] == compared), key=lambda r: r["mode"])


def chosen_selection(rows: list[Row], ipc: int) -> str | None:
    """The selection criterion's image set with the best validation top-1 where they were compared (None: none)."""
    selected = _selection_rows(rows, ipc)
    return max(selected, key=lambda r: r["val_top1"])["mode"] if selected else None


def _judged(rows: list[Row], ipc: int) -> list[str]:
    """The image sets at ``ipc`` that make claims (d) and (e): all but the criteria validation did not choose."""
    chosen = chosen_selection(rows, ipc)
    return sorted({r["mode"] for r in rows if r["ipc"] == ipc and (not r["mode"].startswith("select-") or r["mode"] == chosen)},
                  key=mode_order)


def random_real_claims(rows: list[Row], ipc: int, mode: str) -> list[Claim]:
    """``mode`` against random_real at every label budget both have (same factor and format)."""
    question = "(d) Do synthetic images beat the random real subset at the same label bytes?"
    chosen = ""
    if mode.startswith("select-"):
        compared = _selection_rows(rows, ipc)
        scores = ", ".join(f"{r['mode']} {r['val_top1']:.4f}" for r in compared)
        # one criterion alone was chosen elsewhere (a confirmation run): nothing was compared here
        chosen = f" (chosen on validation top-1 at {compared[0]['compression']:g}x: {scores})" if len(compared) > 1 else ""
    # a budget is a factor and format at a student step count: rows at other steps are never paired
    budgets = sorted({(r["compression"], r["label_format"], r["student_steps"]) for r in rows
                      if r["labels"] == "soft" and r["ipc"] == ipc and r["mode"] == mode})
    claims = []
    for compression, label_format, steps in budgets:
        ours, real = (_soft(rows, m, ipc, compression, label_format, student_steps=steps) for m in (mode, "random_real"))
        if ours is not None and real is not None:
            shown = f"{mode} {pm(ours)} vs random_real {pm(real)}"
            several = sum(b[:2] == (compression, label_format) for b in budgets) > 1
            at = f", {steps:,} student steps" if several else ""
            claims.append(Claim(question, f"IPC {ipc}, {mode}, {compression:g}x {label_format}{at}{chosen}",
                                Decision.paired(shown, ours["test_runs"], real["test_runs"])))
    return claims or [Claim(question, f"IPC {ipc}, {mode}", None, f"the sweep lacks {mode} or random_real with soft labels")]


def soft_vs_hard_claims(rows: list[Row], ipc: int) -> list[Claim]:
    question = "(e) Do soft labels at 1x beat hard labels on the same images?"
    claims = []
    for mode in _judged(rows, ipc):
        soft, hard = _soft(rows, mode, ipc, FULL), find(rows, mode=mode, ipc=ipc, labels="hard")
        if soft is not None and hard is not None:
            claims.append(Claim(question, f"IPC {ipc}, {mode}", Decision.paired(
                f"soft 1x {pm(soft)} vs hard {pm(hard)}", soft["test_runs"], hard["test_runs"])))
    return claims or [Claim(question, f"IPC {ipc}", None, "the sweep lacks soft 1x and hard-label points of one image set")]


def compact_format_claims(rows: list[Row], ipc: int, margin: float) -> list[Claim]:
    """Each compact label format against fp16 of the same images at the same kept steps (non-inferiority)."""
    question = (f"(g) Is a compact label format at least as good as fp16 at the same kept steps "
                f"(non-inferiority, margin {margin:g})?")
    claims = []
    for compact in (r for r in rows if r["ipc"] == ipc and r["labels"] == "soft" and r["label_format"] != "fp16"):
        fp16 = _soft(rows, compact["mode"], ipc, compact["compression"], student_steps=compact["student_steps"])
        if fp16 is not None:
            shown = (f"{compact['label_format']} {pm(compact)} ({compact.get('smaller_than_fp16', 0):g}x smaller than "
                     f"unpruned fp16) vs fp16 {pm(fp16)}")
            claims.append(Claim(question, f"IPC {ipc}, {compact['mode']}, {compact['compression']:g}x", Decision.paired(
                shown, compact["test_runs"], fp16["test_runs"], margin=margin)))
    return claims


def larger_ipc_claims(rows: list[Row]) -> list[Claim]:
    """Each image set's fp16 soft-label students at every larger IPC against its smallest at the same
    pruning factor, once per student budget run."""
    question = "(f) Does a larger IPC train better students at the same pruning factor?"
    claims = []
    for mode in sorted({r["mode"] for r in rows if r["ipc"] is not None}, key=mode_order):
        factors = sorted({r["compression"] for r in rows if r["mode"] == mode and r["ipc"] is not None
                          and r["labels"] == "soft" and r["label_format"] == "fp16"})
        for factor in factors:
            ipcs = sorted({r["ipc"] for r in rows if r["mode"] == mode and _soft(rows, mode, r["ipc"], factor)})
            if len(ipcs) < 2:
                continue
            small = _soft(rows, mode, ipcs[0], factor)
            for large in (r for ipc in ipcs[1:] for r in rows if r["mode"] == mode and r["ipc"] == ipc
                          and r["labels"] == "soft" and r["compression"] == factor and r["label_format"] == "fp16"):
                budget = "equal student steps" if large["student_steps"] == small["student_steps"] else (
                    f"{large['student_steps']:,} student steps against {small['student_steps']:,}")
                claims.append(Claim(question, f"{mode}, IPC {large['ipc']} vs {ipcs[0]}, {factor:g}x, {budget}",
                                    Decision.paired(f"IPC {large['ipc']} {pm(large)} vs IPC {ipcs[0]} {pm(small)}",
                                                    large["test_runs"], small["test_runs"])))
    return claims or [Claim(question, "every image set", None, "no image set was run at two IPCs")]


def all_claims(rows: list[Row], *, margin: float) -> list[Claim]:
    """Every claim of the report, in the order they are shown."""
    ipcs = _ipcs(rows)
    # (a)-(c) compare lpld with sre2l: only at the IPCs that have either (the first IPC when none
    # does, so that each question still says what the sweep lacks), not at e.g. a random-real-only IPC.
    synthesized = [i for i in ipcs if any(r["ipc"] == i and r["mode"] in ("lpld", *SRE2L) for r in rows)] or ipcs[:1]
    hard = [i for i in ipcs if any(r["ipc"] == i and r["labels"] == "hard" for r in rows)] or ipcs[:1]  # likewise (e)
    return [
        *(c for i in synthesized for c in similarity_claims(rows, i)),
        *(c for i in synthesized for c in pruning_cost_claims(rows, i)),
        *(c for i in synthesized for c in non_inferiority_claims(rows, i, margin)),
        *(c for i in ipcs for mode in _synthetic(rows, i) for c in random_real_claims(rows, i, mode)),
        *(c for i in hard for c in soft_vs_hard_claims(rows, i)),
        *larger_ipc_claims(rows),
        *(c for i in ipcs for c in compact_format_claims(rows, i, margin)),
    ]


def _synthetic(rows: list[Row], ipc: int) -> list[str]:
    """The image sets claim (d) judges against random real at ``ipc``."""
    return [m for m in _judged(rows, ipc) if m != "random_real" and not m.startswith("sre2l")]


def decided_claims(rows: list[Row], *, margin: float) -> list[Claim]:
    """:func:`all_claims` with every decision Holm-corrected across the report."""
    claims = all_claims(rows, margin=margin)
    present = [c for c in claims if c.decision is not None]
    decided = iter(holm([c.decision for c in present]))
    return [Claim(c.question, c.label, next(decided)) if c.decision is not None else c for c in claims]


def answers(rows: list[Row], *, margin: float) -> dict[str, list[str]]:
    """The claims as markdown lines under their questions."""
    out: dict[str, list[str]] = {}
    for claim in decided_claims(rows, margin=margin):
        line = describe(claim.decision) if claim.decision is not None else f"n/a ({claim.missing})"
        out.setdefault(claim.question, []).append(f"- {claim.label}: {line}")
    return out


def ranking_rows(rows: list[Row]) -> list[Row]:
    """HLR, IOR and LRS per image set and IPC, from the 1x soft, hard-label and full-data points."""
    full = find(rows, mode="full")
    out = []
    for ipc in _ipcs(rows):
        random_soft = _soft(rows, "random_real", ipc, FULL)
        for mode in sorted({r["mode"] for r in rows if r["ipc"] == ipc}, key=mode_order):
            soft, hard = _soft(rows, mode, ipc, FULL), find(rows, mode=mode, ipc=ipc, labels="hard")
            if None in (full, random_soft, soft, hard):
                continue
            score = label_robust_score(full_hard=full["test_top1"], syn_hard=hard["test_top1"],
                                       syn_soft=soft["test_top1"], random_soft=random_soft["test_top1"])
            out.append({"mode": mode, "ipc": ipc, "hard_labels": hard["test_top1"], "soft_labels": soft["test_top1"],
                        "hlr": round(score["hlr"], 4), "ior": round(score["ior"], 4), "lrs": round(score["lrs"], 4)})
    return out


def mode_order(mode: str) -> tuple[int, str]:
    order = ("lpld", "lpld+real", "sre2l", "sre2l+pooled", "random_real")
    return (order.index(mode) if mode in order else len(order), mode)
