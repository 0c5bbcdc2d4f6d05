"""Train: MLP, precision full, on N-MNIST frames.

    python MLP/training_full_mlp_n_mnist.py --data data/n_mnist_demo.npz
"""
import sys, pathlib; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # repository root

import commands

MODEL, PRECISION = "mlp", "full"

if __name__ == "__main__":
    commands.train(MODEL, PRECISION)
