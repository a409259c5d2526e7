"""Stage `relabel`: the teacher's soft labels for E epochs of augmented synthetic batches.

The steps come from the seeded stream of :mod:`tasks.labels.stream`; each step's augmented
batch goes through the teacher and its logits are stored in the chosen format
(:mod:`storage.label_codec`) in the soft-label store (:mod:`storage.softlabels`). Work is done and saved chunk by chunk, so a killed run resumes at
the first unfinished chunk and ends with the same bytes. With ``generate: kept`` and the
``prefix`` prune rule only the steps the prune will keep are generated at all.

    distillery run --until relabel --set relabel.epochs=300 --set relabel.label_format=topk

    config.py   the `relabel` section
    stage.py    the job and its @task entry
"""

import lazy_loader as lazy

__getattr__, __dir__, __all__ = lazy.attach(__name__, submod_attrs={
    "config": ["RelabelConfig"],
    "stage": ["RelabelError", "RelabelJob", "RelabelRequest", "label_steps", "relabel_request", "relabel_task",
              "store_layout"],
})
