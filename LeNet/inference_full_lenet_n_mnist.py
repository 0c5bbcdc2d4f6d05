"""Evaluate the ANN: LeNet, precision full, on N-MNIST frames.

    python LeNet/inference_full_lenet_n_mnist.py --data data/n_mnist_demo.npz
"""
import sys, pathlib; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # repository root

import commands

MODEL, PRECISION = "lenet", "full"

if __name__ == "__main__":
    commands.evaluate_ann(MODEL, PRECISION)
