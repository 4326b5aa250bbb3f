"""Device selection and seeding."""

from __future__ import annotations

import os
import random

import numpy as np
import torch


def select_device(name: str = "auto") -> torch.device:
    """'auto' takes the GPU this process was given (CUDA_VISIBLE_DEVICES is respected), else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("train.device is 'cuda' but no CUDA device is visible to this process")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch so a trial is repeatable on the same machine."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    os.environ.setdefault("PYTHONHASHSEED", str(seed))
