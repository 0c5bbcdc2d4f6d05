"""Train: MLP, precision k2, on N-MNIST frames.

    python MLP/training_k2_mlp_n_mnist.py --data data/n_mnist_demo.npz
"""
import sys, pathlib; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # repository root

import commands

MODEL, PRECISION = "mlp", "k2"

if __name__ == "__main__":
    commands.train(MODEL, PRECISION)
