"""Train: MLP, precision full, on Fashion-MNIST (ALGORITHM.md §8).

    python FashionMNIST/MLP/training_full_mlp_fashion_mnist.py
"""
import sys, pathlib; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2]))  # repository root

import commands

MODEL, PRECISION, DATASET = "mlp", "full", "fashion_mnist"

if __name__ == "__main__":
    commands.train(MODEL, PRECISION, dataset=DATASET)
