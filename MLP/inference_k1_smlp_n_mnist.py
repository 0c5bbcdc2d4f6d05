"""Simulate the spiking MLP converted from the k1 quantized ANN; writes the four logs and snn_results.json.

    python MLP/inference_k1_smlp_n_mnist.py --data data/n_mnist_demo.npz --check-lossless
"""
import sys, pathlib; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # repository root

import commands

MODEL, PRECISION = "mlp", "k1"

if __name__ == "__main__":
    commands.evaluate_snn(MODEL, PRECISION)
