"""Stage `synthesize` (recover), in one folder:

    config.py      the `synthesis` section, the request, SynthesisError, the real images a config needs (no torch)
    stage.py       the request for a config, units, the job that builds them, the @task entry (every mode)
    recovery.py    the per-unit loop: BatchNorm-statistics matching plus cross-entropy
    selection.py   real images chosen with the teacher (mode=select, init=selected)
    loss_curve.py  the loss curve each unit stores, and its summary in the manifest
    diversity.py   within-class similarity and teacher agreement of an image set

    distillery run --until synthesize --set synthesis.mode=sre2l
"""

import lazy_loader as lazy

__getattr__, __dir__, __all__ = lazy.attach(__name__, submod_attrs={
    "config": ["SynthesisConfig", "SynthesisError", "SynthesizeRequest"],
    "stage": ["SynthesisJob", "synthesize_request", "synthesize_task"],
})
