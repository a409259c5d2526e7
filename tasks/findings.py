"""The report's questions, answered from sweep rows with their error bars.

(a) is within-class similarity lower for lpld than for sre2l;
(b) does pruning to 40x cost lpld less than sre2l;
(c) is lpld at 40x at least as good as sre2l at 1x;
(d) how lpld compares with random_real at the same label budget;
plus DD-Ranking's HLR / IOR / label-robust score per mode (:mod:`tasks.ranking`).

Each answer is a markdown line that states the numbers it rests on; a point the sweep did not
run gives "n/a", never a guess. A difference counts as settled only when it exceeds its
standard error (the two seed stds in quadrature); otherwise the line says "within noise".
"""

from __future__ import annotations

from tasks.ranking import label_robust_score
from tasks.results import Row, difference, find, pm

FULL, PRUNED = 1.0, 40.0


def _verdict(delta: float, error: float, *, better: str, worse: str) -> str:
    if abs(delta) <= error:
        return "within noise"
    return better if delta > 0 else worse


def similarity_answer(rows: list[Row], ipc: int) -> str:
    values = {m: find(rows, mode=m, ipc=ipc) for m in ("lpld", "sre2l", "random_real")}
    if values["lpld"] is None or values["sre2l"] is None:
        return f"- IPC {ipc}: n/a (the sweep has no lpld and sre2l images at this IPC)"
    lpld, sre2l = values["lpld"]["within_class_similarity"], values["sre2l"]["within_class_similarity"]
    real = values["random_real"]["within_class_similarity"] if values["random_real"] else None
    shown = f"lpld {lpld:.4f}, sre2l {sre2l:.4f}" + (f", random_real {real:.4f}" if real is not None else "")
    return f"- IPC {ipc}: **{'yes' if lpld < sre2l else 'no'}** ({shown}; lower is more diverse)"


def _soft(rows: list[Row], mode: str, ipc: int, compression: float) -> Row | None:
    return find(rows, mode=mode, ipc=ipc, labels="soft", compression=compression)


def pruning_cost_answer(rows: list[Row], ipc: int) -> str:
    drops = {}
    for mode in ("lpld", "sre2l"):
        full, pruned = _soft(rows, mode, ipc, FULL), _soft(rows, mode, ipc, PRUNED)
        if full is None or pruned is None:
            return f"- IPC {ipc}: n/a (the sweep lacks {mode} at 1x or 40x)"
        drops[mode] = difference(full, pruned)
    (lpld, lpld_err), (sre2l, sre2l_err) = drops["lpld"], drops["sre2l"]
    verdict = _verdict(sre2l - lpld, (lpld_err**2 + sre2l_err**2) ** 0.5, better="yes", worse="no")
    return (f"- IPC {ipc}: **{verdict}**: 1x to 40x costs lpld {lpld:+.4f} ± {lpld_err:.4f} and sre2l "
            f"{sre2l:+.4f} ± {sre2l_err:.4f} top-1 (positive = lost)")


def pruned_vs_full_answer(rows: list[Row], ipc: int) -> str:
    lpld, sre2l = _soft(rows, "lpld", ipc, PRUNED), _soft(rows, "sre2l", ipc, FULL)
    if lpld is None or sre2l is None:
        return f"- IPC {ipc}: n/a (the sweep lacks lpld at 40x or sre2l at 1x)"
    delta, error = difference(lpld, sre2l)
    verdict = "yes" if delta > error else "yes, within noise" if delta >= -error else "no"
    return (f"- IPC {ipc}: **{verdict}**: lpld 40x {pm(lpld)} vs sre2l 1x {pm(sre2l)} "
            f"(difference {delta:+.4f} ± {error:.4f})")


def random_real_answer(rows: list[Row], ipc: int) -> str:
    parts = []
    for compression in sorted({r["compression"] for r in rows if r["labels"] == "soft" and r["ipc"] == ipc}):
        lpld, real = _soft(rows, "lpld", ipc, compression), _soft(rows, "random_real", ipc, compression)
        if lpld is None or real is None:
            continue
        delta, error = difference(lpld, real)
        parts.append(f"{compression:g}x {delta:+.4f} ± {error:.4f} "
                     f"({_verdict(delta, error, better='lpld ahead', worse='random_real ahead')})")
    if not parts:
        return f"- IPC {ipc}: n/a (the sweep lacks lpld or random_real with soft labels)"
    return f"- IPC {ipc}, lpld minus random_real at equal label bytes: " + "; ".join(parts)


def ranking_rows(rows: list[Row]) -> list[Row]:
    """HLR, IOR and LRS per mode and IPC, from the 1x soft, hard-label and full-data points."""
    full = find(rows, mode="full")
    out = []
    for ipc in sorted({r["ipc"] for r in rows if r["ipc"] is not None}):
        random_soft = _soft(rows, "random_real", ipc, FULL)
        for mode in ("lpld", "sre2l", "random_real"):
            soft, hard = _soft(rows, mode, ipc, FULL), find(rows, mode=mode, ipc=ipc, labels="hard")
            if None in (full, random_soft, soft, hard):
                continue
            score = label_robust_score(full_hard=full["test_top1"], syn_hard=hard["test_top1"],
                                       syn_soft=soft["test_top1"], random_soft=random_soft["test_top1"])
            out.append({"mode": mode, "ipc": ipc, "hard_labels": hard["test_top1"], "soft_labels": soft["test_top1"],
                        "hlr": round(score["hlr"], 4), "ior": round(score["ior"], 4), "lrs": round(score["lrs"], 4)})
    return out


def answers(rows: list[Row]) -> dict[str, list[str]]:
    """The four questions, one markdown line per IPC each."""
    ipcs = sorted({r["ipc"] for r in rows if r["ipc"] is not None})
    return {
        "(a) Is within-class similarity lower for lpld than sre2l?": [similarity_answer(rows, i) for i in ipcs],
        "(b) Does pruning to 40x cost lpld less than sre2l?": [pruning_cost_answer(rows, i) for i in ipcs],
        "(c) Is lpld at 40x at least as good as sre2l at 1x?": [pruned_vs_full_answer(rows, i) for i in ipcs],
        "(d) lpld against random_real at the same label budget": [random_real_answer(rows, i) for i in ipcs],
    }
