"""Stage `stats`: per-class BatchNorm statistics of the teacher.

One pass (or ``passes``) over the real training set, teacher in ``eval()``, training
augmentation on. For every BN layer l and class c it records the mean and the biased variance
of the layer's *input* over (N, H, W) of class c's samples. Sums are exact float64
accumulations, so the result does not depend on batch size or order (beyond float64 rounding),
unlike the reference's EMA.

    distillery run --until stats
    stats = read_tensors(store, ref, CLASS_BN_STATS)  # {layer: {"mean": (K, C), "var": (K, C), "count": (K,)}}

    config.py   the `stats` section
    stage.py    the job and its @task entry
"""

import lazy_loader as lazy

__getattr__, __dir__, __all__ = lazy.attach(__name__, submod_attrs={
    "config": ["StatsConfig"],
    "stage": ["StatsRequest", "class_bn_stats", "stats_task"],
})
