"""Evaluate the ANN: MLP, precision k1, on N-MNIST frames.

    python MLP/inference_k1_mlp_n_mnist.py --data data/n_mnist_demo.npz
"""
import sys, pathlib; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # repository root

import commands

MODEL, PRECISION = "mlp", "k1"

if __name__ == "__main__":
    commands.evaluate_ann(MODEL, PRECISION)
