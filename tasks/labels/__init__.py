"""Soft labels as students see them: the seeded stream of steps, and the public replay API.

    stream.py   which images each step holds and how they are augmented, from (seed, step) alone
    replay.py   ReplayedSteps: a store's steps replayed as batches and teacher logits, for any student loop

The stored format itself (arrays, codecs, chunks) is :mod:`storage.softlabels`.

    from tasks.labels import ReplayedSteps
    steps = ReplayedSteps.from_export("distilled", seed=0)
"""

from tasks.labels.replay import ReplayedSteps, StudentStep

__all__ = ["ReplayedSteps", "StudentStep"]
