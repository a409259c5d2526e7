"""Stage `teacher` (squeeze): train the teacher on the real training set, or load given weights.

SGD with momentum and weight decay, linear warm-up then cosine decay per step, per-sample
random-resized-crop and flip. Stores the state dict (read back by :func:`tasks.models.load_teacher`,
with ``weights_only=True``). The teacher reads the train split and reports its top-1 on the
validation split; its fingerprint names those two alone, and its test top-1 is measured by
`evaluate`, which reads the test split.

    distillery run --until teacher --set teacher.epochs=2

    config.py   the `teacher` section
    stage.py    the job and its @task entry
"""

import lazy_loader as lazy

__getattr__, __dir__, __all__ = lazy.attach(__name__, submod_attrs={
    "config": ["TeacherConfig"],
    "stage": ["TeacherRequest", "teacher_request", "teacher_task", "train_teacher"],
})
