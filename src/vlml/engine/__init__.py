"""Training engine: the epoch loop, checkpoints, EMA, AMP, metrics log, device resolution,
learning-rate schedules."""

from vlml.device import resolve_device
from vlml.engine.checkpoint import load_checkpoint, load_weights, save_checkpoint, save_weights
from vlml.engine.metrics_log import MetricsLog, read_log
from vlml.engine.predict import Predictions, predict
from vlml.engine.schedule import one_cycle
from vlml.engine.seeding import seeded
from vlml.engine.trainer import BEST, LAST, FitResult, LoopConfig, Trainer

__all__ = [
    "predict", "Predictions", "seeded",
    "Trainer", "LoopConfig", "FitResult", "LAST", "BEST", "resolve_device", "MetricsLog",
    "read_log", "save_checkpoint", "load_checkpoint", "save_weights", "load_weights", "one_cycle",
]
