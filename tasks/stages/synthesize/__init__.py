"""Stage `synthesize` (recover), in one folder:

    config.py      the `synthesis` section, the request, SynthesisError
    stage.py       units, the job that builds them, the @task entry (lpld, sre2l, random_real, imported)
    recovery.py    the per-unit loop: BatchNorm-statistics matching plus cross-entropy
    loss_curve.py  the loss curve each unit stores, and its summary in the manifest
    diversity.py   within-class similarity and teacher agreement of an image set

    distillery run --until synthesize --set synthesis.mode=sre2l
"""

from tasks.stages.synthesize.config import SynthesisConfig, SynthesisError, SynthesizeRequest, synthesize_request
from tasks.stages.synthesize.stage import SynthesisJob, synthesize_task

__all__ = ["SynthesisConfig", "SynthesisError", "SynthesisJob", "SynthesizeRequest", "synthesize_request",
           "synthesize_task"]
