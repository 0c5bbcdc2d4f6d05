"""Evaluate the ANN: LeNet, precision k2, on N-MNIST frames.

    python LeNet/inference_k2_lenet_n_mnist.py --data data/n_mnist_demo.npz
"""
import sys, pathlib; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # repository root

import commands

MODEL, PRECISION = "lenet", "k2"

if __name__ == "__main__":
    commands.evaluate_ann(MODEL, PRECISION)
