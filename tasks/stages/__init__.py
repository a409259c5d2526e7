"""The pipeline's stages, a folder each (normalization: one module), in the order they run:

    normalization  a train split's mean and std, measured once (only where none is known)
    teacher/       train the teacher (or load given weights)             -> model.pt
    stats/         per-class BatchNorm statistics of the teacher          -> class_bn_stats.pt
    synthesize/    IPC images per class (lpld, sre2l, random_real, imported) -> images.zarr
    relabel/       the teacher's soft labels for E epochs of augmented steps -> labels.zarr
    prune/         keep a fraction of the stored steps                     -> labels.zarr
    evaluate/      students trained on images + kept labels: top-1

Each owns its pydantic config section (in its ``config.py``, which imports no torch, so a config is
loaded and refused before torch or Prefect is; each package exports its names lazily, with
lazy_loader, so importing one does not import the others) and its request (what determines its output) and has one
thin Prefect entry declared with :func:`tasks.stages.stage_task.stage_task`, which reads its
inputs from storage and writes its artifact back. No stage imports another: what one stage
reads of another's output is named in :mod:`storage.file_names` and read through storage/ or
the shared modules of tasks/. :mod:`tasks.stages.units` maps the units of the three splittable
stages for scale-out.
"""

STAGES = ("teacher", "stats", "synthesize", "relabel", "prune", "evaluate")  # the order they run
SAVED_BY_UNIT = ("synthesize", "relabel", "evaluate")  # stages that save each finished unit (a stop keeps them)
