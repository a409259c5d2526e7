"""Stage `evaluate`, in one folder:

    config.py    the `evaluate` section (recipes, soft or hard labels, seeds) and the request
    students.py  training one student: soft labels replayed from a store, or hard labels
    stage.py     the job (one unit per seed) and the @task entry: top-1 over seeds, label bytes

    distillery run --set evaluate.seeds=3 --set evaluate.recipe=imagenet
"""

from tasks.stages.evaluate.config import RECIPES, EvaluateConfig, EvaluateRequest, Recipe
from tasks.stages.evaluate.stage import EvaluateJob, evaluate_task
from tasks.stages.evaluate.students import create_optimizer, soft_label_loss, student_lr, train_student

__all__ = ["RECIPES", "EvaluateConfig", "EvaluateJob", "EvaluateRequest", "Recipe", "create_optimizer",
           "evaluate_task", "soft_label_loss", "student_lr", "train_student"]
