"""Stage `prune`: keep a fraction of the stored steps, as a real, smaller soft-label store.

Ratio r keeps ``floor((1 - r) * S)`` of the stream's S steps, at least one (10x/20x/30x/40x =
r 0.9/0.95/0.97/0.975; the real factor S / kept is recorded, and is exact when S is a
multiple). Rules: ``prefix`` keeps the first steps of the seeded stream (already a random
sample; the reference's rule, and the one relabel can generate alone), ``uniform`` a seeded
random subset of steps, ``epoch`` whole epochs chosen at random. The student still trains E
epochs (:mod:`tasks.labels.replay` says how they are drawn from the kept pool).

    distillery run --until prune --set prune.ratio=0.975

    config.py   the `prune` section
    stage.py    the job and its @task entry
"""

import lazy_loader as lazy

__getattr__, __dir__, __all__ = lazy.attach(__name__, submod_attrs={
    "config": ["PruneConfig"],
    "stage": ["PruneError", "PruneRequest", "kept_steps", "prune_task", "pruned_layout", "write_pruned"],
})
