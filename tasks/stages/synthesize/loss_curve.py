"""The synthesis loss curve: which window of the iterations each one is averaged into, and the
summary a synthesis manifest keeps (mean over units, and whether the loss had stopped falling).

Each unit's curve is ``(points, 3)`` rows of (total, CE, BN) loss, every row the mean over one
of ``points = min(CURVE_POINTS, iterations)`` equal windows; the stage stores the units'
curves as ``loss_curve [units, points, 3]`` in its image store.

    window = curve_windows(500)            # (500,) int64 in [0, 20)
    summary = curve_summary(curves, 500)   # {"mean_loss": [...], "last_fifth_drop": 0.04, ...}
"""

from __future__ import annotations

import numpy as np
import torch

CURVE_POINTS = 20  # points of each unit's stored loss curve


def curve_windows(iterations: int) -> torch.Tensor:
    """(iterations,) int64: the loss-curve point each iteration is averaged into (equal windows,
    at most CURVE_POINTS of them)."""
    points = min(CURVE_POINTS, iterations)
    return torch.arange(iterations) * points // iterations


def curve_summary(curves: np.ndarray, iterations: int) -> dict[str, object]:
    """The manifest's view of the loss curves: the mean over units per point, and how much the
    total loss still fell over the last fifth of the iterations (near 0: converged)."""
    mean = curves.mean(0)  # (points, 3)
    ends = torch.bincount(curve_windows(iterations)).cumsum(0).tolist()
    tail = mean[max(int(len(mean) * 0.8) - 1, 0), 0]
    return {
        "iterations": ends,  # the last iteration (exclusive) of each point's window
        "mean_loss": [round(float(v), 5) for v in mean[:, 0]],
        "mean_ce": [round(float(v), 5) for v in mean[:, 1]],
        "mean_bn": [round(float(v), 5) for v in mean[:, 2]],
        "last_fifth_drop": float((tail - mean[-1, 0]) / max(abs(tail), 1e-12)),
    }
