"""ANN test accuracy: LeNet, precision k0, on the Fashion-MNIST test set; writes ann_results.json.

    python FashionMNIST/LeNet/inference_k0_lenet_fashion_mnist.py
"""
import sys, pathlib; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2]))  # repository root

import commands

MODEL, PRECISION, DATASET = "lenet", "k0", "fashion_mnist"

if __name__ == "__main__":
    commands.evaluate_ann(MODEL, PRECISION, dataset=DATASET)
