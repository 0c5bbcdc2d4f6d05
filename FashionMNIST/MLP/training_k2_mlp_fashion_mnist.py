"""Train: MLP, precision k2, on Fashion-MNIST (ALGORITHM.md §8).

    python FashionMNIST/MLP/training_k2_mlp_fashion_mnist.py
"""
import sys, pathlib; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2]))  # repository root

import commands

MODEL, PRECISION, DATASET = "mlp", "k2", "fashion_mnist"

if __name__ == "__main__":
    commands.train(MODEL, PRECISION, dataset=DATASET)
