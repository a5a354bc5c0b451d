"""Named learning-rate schedules shared by the trainers (``train_lm`` and ``train_sft``).

A schedule maps (step, steps, peak lr, warmup steps) to the learning rate of optimizer step ``step``
(0-based). Both warm up linearly to the peak over ``warmup_steps`` starting at lr / warmup_steps, never at zero.
The schedule's name is part of every checkpoint fingerprint, so switching schedules never resumes a run.
"""

from __future__ import annotations

import math
from typing import Callable

Schedule = Callable[[int, int, float, int], float]


def cosine(step: int, steps: int, lr: float, warmup_steps: int, min_lr_ratio: float = 0.1) -> float:
    """Linear warmup, then cosine decay from ``lr`` to ``min_lr_ratio * lr`` at the last step.

    The pretraining schedule (ladder, emergence task ladder, V/D base models).
    """
    if step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    frac = (step - warmup_steps) / max(1, steps - warmup_steps)
    return lr * (min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, frac))))


def linear(step: int, steps: int, lr: float, warmup_steps: int) -> float:
    """Linear warmup, then linear decay towards 0 (it would reach 0 at step ``steps``, one past the last).

    The SFT schedule (open-instruct's ``linear``, except that warmup starts at lr / warmup_steps, not 0).
    """
    if step < warmup_steps:
        return lr * ((step + 1) / warmup_steps)
    return lr * max(0.0, (steps - step) / max(1, steps - warmup_steps))


SCHEDULES: dict[str, Schedule] = {"cosine": cosine, "linear": linear}


def get_schedule(name: str) -> Schedule:
    """The schedule called ``name``; an unknown name raises, listing the known ones."""
    try:
        return SCHEDULES[name]
    except (KeyError, TypeError):
        raise ValueError(f"lr schedule: unknown {name!r}; known schedules are {sorted(SCHEDULES)}") from None
