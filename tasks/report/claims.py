"""The report's claims, each settled from sweep rows by a paired difference and its error.

(a) within-class similarity is lower for lpld than for sre2l (paired by class);
(b) pruning to 40x costs lpld less than sre2l (paired by student seed);
(c) lpld at 40x is at least as good as sre2l at 1x;
(d) lpld against random_real at the same label budget, and the aim beyond the paper: any
    synthetic set (e.g. ``init=real``) above the random real subset at equal label bytes;
(e) soft labels at 1x against hard labels on the same images;
(f) a larger IPC against a smaller one at 1x;
plus DD-Ranking's HLR / IOR / label-robust score per mode (:mod:`tasks.report.ranking`).

Students of one seed index share their initial weights and stream draws across points, so
differences are taken seed by seed (:func:`tasks.report.rows.paired_difference`). A claim
"holds" when its difference is more than ``DECIDED`` standard errors on the claimed side,
"does not hold" when as far on the other, and is "undecided at this noise" in between. Every
line states the difference and its error; a point the sweep did not run gives "n/a".
"""

from __future__ import annotations

from tasks.report.ranking import label_robust_score
from tasks.report.rows import Row, find, paired_difference, pm

FULL, PRUNED = 1.0, 40.0
DECIDED = 2.0  # standard errors a difference must clear to settle a claim


def verdict(delta: float, error: float) -> str:
    """For a claim that says ``delta > 0``."""
    if delta > DECIDED * error:
        return "holds"
    if delta < -DECIDED * error:
        return "does not hold"
    return "undecided at this noise"


def _soft(rows: list[Row], mode: str, ipc: int, compression: float, label_format: str = "fp16") -> Row | None:
    return find(rows, mode=mode, ipc=ipc, labels="soft", compression=compression, label_format=label_format)


def _claim(delta: float, error: float, what: str) -> str:
    return f"**{verdict(delta, error)}**: {what} (paired difference {delta:+.4f} ± {error:.4f})"


def similarity_answer(rows: list[Row], ipc: int) -> str:
    values = {m: find(rows, mode=m, ipc=ipc) for m in ("lpld", "sre2l", "random_real")}
    if values["lpld"] is None or values["sre2l"] is None:
        return f"- IPC {ipc}: n/a (the sweep has no lpld and sre2l images at this IPC)"
    lpld, sre2l, real = (values[m] and values[m]["within_class_similarity"] for m in ("lpld", "sre2l", "random_real"))
    delta, error = paired_difference(values["sre2l"], values["lpld"], key="similarity_per_class")
    shown = f"lpld {lpld:.4f}, sre2l {sre2l:.4f}" + (f", random_real {real:.4f}" if real is not None else "")
    return f"- IPC {ipc}: " + _claim(delta, error, f"{shown}; lower is more diverse; sre2l minus lpld over classes")


def pruning_cost_answer(rows: list[Row], ipc: int) -> str:
    points = {(m, c): _soft(rows, m, ipc, c) for m in ("lpld", "sre2l") for c in (FULL, PRUNED)}
    missing = [m for (m, _), r in points.items() if r is None]
    if missing:
        return f"- IPC {ipc}: n/a (the sweep lacks {missing[0]} at 1x or 40x)"
    lpld = paired_difference(points["lpld", FULL], points["lpld", PRUNED])
    sre2l = paired_difference(points["sre2l", FULL], points["sre2l", PRUNED])
    delta, error = paired_difference(
        _cost_row(points["sre2l", FULL], points["sre2l", PRUNED]), _cost_row(points["lpld", FULL], points["lpld", PRUNED])
    )
    return (f"- IPC {ipc}: " + _claim(delta, error, f"1x to 40x costs lpld {lpld[0]:+.4f} ± {lpld[1]:.4f} and sre2l "
                                                    f"{sre2l[0]:+.4f} ± {sre2l[1]:.4f} top-1 (positive = lost)"))


def _cost_row(full: Row, pruned: Row) -> Row:
    """A pseudo-row whose per-seed values are the per-seed losses of pruning."""
    return {"top1_per_seed": [a - b for a, b in zip(full["top1_per_seed"], pruned["top1_per_seed"])]}


def pruned_vs_full_answer(rows: list[Row], ipc: int) -> str:
    lpld, sre2l = _soft(rows, "lpld", ipc, PRUNED), _soft(rows, "sre2l", ipc, FULL)
    if lpld is None or sre2l is None:
        return f"- IPC {ipc}: n/a (the sweep lacks lpld at 40x or sre2l at 1x)"
    delta, error = paired_difference(lpld, sre2l)
    if delta >= -DECIDED * error and delta <= DECIDED * error:
        word = "holds (equal within noise)"  # "at least as good": a tie within the error is what is claimed
    else:
        word = verdict(delta, error)
    return (f"- IPC {ipc}: **{word}**: lpld 40x {pm(lpld)} vs sre2l 1x {pm(sre2l)} "
            f"(paired difference {delta:+.4f} ± {error:.4f})")


def against_random_real(rows: list[Row], ipc: int, mode: str) -> str:
    """``mode`` minus random_real at every label budget both have (same factor and format)."""
    parts = []
    budgets = sorted({(r["compression"], r["label_format"]) for r in rows
                      if r["labels"] == "soft" and r["ipc"] == ipc and r["mode"] == mode})
    for compression, label_format in budgets:
        ours, real = _soft(rows, mode, ipc, compression, label_format), _soft(rows, "random_real", ipc, compression, label_format)
        if ours is None or real is None:
            continue
        delta, error = paired_difference(ours, real)
        parts.append(f"{compression:g}x {label_format} {delta:+.4f} ± {error:.4f} ({verdict(delta, error)})")
    if not parts:
        return f"- IPC {ipc}, {mode}: n/a (the sweep lacks {mode} or random_real with soft labels)"
    return f"- IPC {ipc}, {mode} minus random_real at equal label bytes: " + "; ".join(parts)


def soft_vs_hard_answer(rows: list[Row], ipc: int) -> list[str]:
    """Soft labels at 1x against hard labels on the same images, per image set."""
    lines = []
    for mode in sorted({r["mode"] for r in rows if r["ipc"] == ipc}, key=_mode_order):
        soft, hard = _soft(rows, mode, ipc, FULL), find(rows, mode=mode, ipc=ipc, labels="hard")
        if soft is None or hard is None:
            continue
        delta, error = paired_difference(soft, hard)
        lines.append(f"- IPC {ipc}, {mode}: " + _claim(delta, error, f"soft 1x {pm(soft)} vs hard {pm(hard)}"))
    return lines or [f"- IPC {ipc}: n/a (the sweep lacks soft 1x and hard-label points of one image set)"]


def larger_ipc_answer(rows: list[Row]) -> list[str]:
    """Each image set's 1x students at its largest IPC against its smallest."""
    lines = []
    for mode in sorted({r["mode"] for r in rows if r["ipc"] is not None}, key=_mode_order):
        ipcs = sorted({r["ipc"] for r in rows if r["mode"] == mode and _soft(rows, mode, r["ipc"], FULL)})
        if len(ipcs) < 2:
            continue
        large, small = _soft(rows, mode, ipcs[-1], FULL), _soft(rows, mode, ipcs[0], FULL)
        delta, error = paired_difference(large, small)
        lines.append(f"- {mode}: " + _claim(delta, error, f"IPC {ipcs[-1]} {pm(large)} vs IPC {ipcs[0]} {pm(small)}"))
    return lines or ["- n/a (no image set was run at two IPCs)"]


def ranking_rows(rows: list[Row]) -> list[Row]:
    """HLR, IOR and LRS per image set and IPC, from the 1x soft, hard-label and full-data points."""
    full = find(rows, mode="full")
    out = []
    for ipc in sorted({r["ipc"] for r in rows if r["ipc"] is not None}):
        random_soft = _soft(rows, "random_real", ipc, FULL)
        for mode in sorted({r["mode"] for r in rows if r["ipc"] == ipc}, key=_mode_order):
            soft, hard = _soft(rows, mode, ipc, FULL), find(rows, mode=mode, ipc=ipc, labels="hard")
            if None in (full, random_soft, soft, hard):
                continue
            score = label_robust_score(full_hard=full["test_top1"], syn_hard=hard["test_top1"],
                                       syn_soft=soft["test_top1"], random_soft=random_soft["test_top1"])
            out.append({"mode": mode, "ipc": ipc, "hard_labels": hard["test_top1"], "soft_labels": soft["test_top1"],
                        "hlr": round(score["hlr"], 4), "ior": round(score["ior"], 4), "lrs": round(score["lrs"], 4)})
    return out


def _mode_order(mode: str) -> tuple[int, str]:
    order = ("lpld", "lpld+real", "sre2l", "random_real")
    return (order.index(mode) if mode in order else len(order), mode)


def answers(rows: list[Row]) -> dict[str, list[str]]:
    """The claims, one markdown line per IPC (and per synthetic image set for (d))."""
    ipcs = sorted({r["ipc"] for r in rows if r["ipc"] is not None})
    synthetic = sorted({r["mode"] for r in rows if r["ipc"] is not None and r["mode"] not in ("random_real", "sre2l")},
                       key=_mode_order)
    return {
        "(a) Is within-class similarity lower for lpld than sre2l?": [similarity_answer(rows, i) for i in ipcs],
        "(b) Does pruning to 40x cost lpld less than sre2l?": [pruning_cost_answer(rows, i) for i in ipcs],
        "(c) Is lpld at 40x at least as good as sre2l at 1x?": [pruned_vs_full_answer(rows, i) for i in ipcs],
        "(d) Do synthetic images beat the random real subset at the same label bytes?": [
            against_random_real(rows, i, mode) for i in ipcs for mode in synthetic],
        "(e) Do soft labels at 1x beat hard labels on the same images?": [
            line for i in ipcs for line in soft_vs_hard_answer(rows, i)],
        "(f) Does a larger IPC train better students at 1x?": larger_ipc_answer(rows),
    }
