"""Which process this is under a distributed launch (`accelerate launch`, `torchrun`).

Root of the package because the run directory itself needs it (only rank 0 writes the
manifest); the training side of distribution is `train/distributed.py`.
"""

from __future__ import annotations

import os


def world_rank() -> int:
    """Global rank of this process (0 when not launched by a distributed launcher).

    >>> world_rank() if "RANK" not in os.environ else 0
    0
    """
    return int(os.environ.get("RANK", "0") or 0)


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1") or 1)


def is_main_process() -> bool:
    """True in the one process that writes the run directory (global rank 0)."""
    return world_rank() == 0
