"""Training and evaluation (installed as ``pgtm.inference``)."""

from pgtm.inference.evaluate import evaluate, log_weights, pareto_khat, save_json
from pgtm.inference.train import TrainConfig, TrainingDiverged, TrainResult, train

__all__ = [
    "TrainConfig",
    "TrainResult",
    "TrainingDiverged",
    "evaluate",
    "log_weights",
    "pareto_khat",
    "save_json",
    "train",
]
