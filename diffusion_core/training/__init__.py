"""Training, framework-free: the objective (objective.py), the schedules of a run (rules.py), the
run's configuration and command line (config.py), its checkpoint file (state.py), and the one
training loop (loop.py, cli.py) that each framework drives with a small step engine (engine.py).
"""
from .objective import (LOSS_WEIGHTINGS, LossConfig, TrainingDraw, draw, loss_weight, q_sample, target,
                        target_coefficients, weighted_mse, x0_from_output)
from .rules import ema_decay_at, learning_rate_at

__all__ = ["LOSS_WEIGHTINGS", "LossConfig", "TrainingDraw", "draw", "ema_decay_at", "learning_rate_at",
           "loss_weight", "q_sample", "target", "target_coefficients", "weighted_mse", "x0_from_output"]
