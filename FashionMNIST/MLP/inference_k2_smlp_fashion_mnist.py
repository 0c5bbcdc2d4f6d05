"""Simulate the spiking MLP converted from the k2 quantized ANN on Fashion-MNIST; writes the four logs and snn_results.json.

    python FashionMNIST/MLP/inference_k2_smlp_fashion_mnist.py --check-lossless
"""
import sys, pathlib; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2]))  # repository root

import commands

MODEL, PRECISION, DATASET = "mlp", "k2", "fashion_mnist"

if __name__ == "__main__":
    commands.evaluate_snn(MODEL, PRECISION, dataset=DATASET)
