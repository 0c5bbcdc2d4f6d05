"""Train: LeNet, precision k0, on N-MNIST frames.

    python LeNet/training_k0_lenet_n_mnist.py --data data/n_mnist_demo.npz
"""
import sys, pathlib; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # repository root

import commands

MODEL, PRECISION = "lenet", "k0"

if __name__ == "__main__":
    commands.train(MODEL, PRECISION)
