"""The SNN log layout of ALGORITHM.md §4, shared by the writer (spiking_utils) and the readers (figs/).

Four text files, one integer per line, batch-major: batch 0 steps 0..T-1, then batch 1, ...
Kept free of TensorFlow so that the figure scripts start quickly.
"""
import numpy as np

LOG_FILES = ("accuracy.txt", "spike_num.txt", "spike_collect.txt", "sop_num.txt")
LOG_BATCH_SIZE = 50  # the authors' batch; the logs hold one line per (batch of 50, step)


def steps_to_final(accuracy_per_step):
    """The first step, counted from 1, from which the accuracy stays at its final value (§5)."""
    accuracy_per_step = np.asarray(accuracy_per_step)
    different = np.flatnonzero(accuracy_per_step != accuracy_per_step[-1])
    return int(different[-1]) + 2 if len(different) else 1
