"""Stage `evaluate`, in one folder:

    config.py    the `evaluate` section (recipes, soft or hard labels, seeds) and the request
    students.py  training one student: soft labels replayed from a store, or hard labels
    stage.py     the job (one unit per seed) and the @task entry: top-1 over seeds, label bytes

    distillery run --set evaluate.seeds=3 --set evaluate.recipe=imagenet
"""

import lazy_loader as lazy

__getattr__, __dir__, __all__ = lazy.attach(__name__, submod_attrs={
    "config": ["RECIPES", "EvaluateConfig", "EvaluateRequest", "Recipe"],
    "stage": ["EvaluateJob", "evaluate_task"],
    "students": ["create_optimizer", "soft_label_loss", "student_lr", "train_student"],
})
