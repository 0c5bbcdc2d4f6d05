"""Train: LeNet, precision k0, on Fashion-MNIST (ALGORITHM.md §8).

    python FashionMNIST/LeNet/training_k0_lenet_fashion_mnist.py
"""
import sys, pathlib; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2]))  # repository root

import commands

MODEL, PRECISION, DATASET = "lenet", "k0", "fashion_mnist"

if __name__ == "__main__":
    commands.train(MODEL, PRECISION, dataset=DATASET)
