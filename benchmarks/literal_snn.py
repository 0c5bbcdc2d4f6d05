"""A literal float64 implementation of ALGORITHM.md §3-§4, written independently of spiking_utils.

It follows the text step by step, as the authors' simulator did: batches of 50, every layer and
every neuron at every one of the T steps, one patch matrix per layer per step. It is the oracle of
the fidelity tests and the baseline of benchmarks/bench_snn.py; it is deliberately not optimized.
"""
import numpy as np

from architectures import ARCHITECTURES

EPSILON = 1e-5


def patch_matrix(x, size, stride):
    """(B, H, W, C) -> (B * H_out * W_out, size * size * C), patches ordered (kh, kw, C)."""
    batch, height, width, channels = x.shape
    out_h, out_w = (height - size) // stride + 1, (width - size) // stride + 1
    patches = np.empty((batch, out_h, out_w, size, size, channels))
    for dy in range(size):
        for dx in range(size):
            patches[:, :, :, dy, dx, :] = x[:, dy : dy + stride * (out_h - 1) + 1 : stride,
                                             dx : dx + stride * (out_w - 1) + 1 : stride, :]
    return patches.reshape(batch * out_h * out_w, -1), (out_h, out_w)


def literal_simulation(params, frames, labels, time_steps=40, batch_size=50):
    """Return the four logs {name: list of ints}, in the §4 line order."""
    model, k = str(params["model"]), int(params["k"])
    layers = []
    for i, spec in enumerate(ARCHITECTURES[model], start=1):
        kernel = np.array(params[f"{spec.name}_kernel"], dtype=np.float64)
        gamma = np.array(params[f"bn{i}_gamma"], dtype=np.float64)
        beta = np.array(params[f"bn{i}_beta"], dtype=np.float64)
        mean = np.array(params[f"bn{i}_mean"], dtype=np.float64)
        var = np.array(params[f"bn{i}_var"], dtype=np.float64)
        negative = gamma < 0  # flip the sign of such channels so that theta > 0
        kernel[..., negative] *= -1
        mean[negative] *= -1
        gamma[negative] *= -1
        sigma = np.sqrt(var + EPSILON)
        theta = sigma / gamma
        b = (2.0 ** (-(k + 1)) - beta) * 2.0**k * sigma / gamma + 2.0**k * mean - theta
        layers.append((spec, kernel, theta, b))
    out_kernel = np.array(params["out_kernel"], dtype=np.float64)
    logs = {"accuracy.txt": [], "spike_num.txt": [], "spike_collect.txt": [], "sop_num.txt": []}
    for start in range(0, len(frames), batch_size):
        x = np.array(frames[start : start + batch_size], dtype=np.float64)
        y = np.array(labels[start : start + batch_size])
        batch = len(x)
        mems, mem_qs, counts = [], [], []
        spike_num = spike_collect = sop_num = 0
        for t in range(time_steps):
            layer_input = x * 2.0**k if t == 0 else np.zeros_like(x)
            for index, (spec, kernel, theta, b) in enumerate(layers):
                if spec.kind == "conv":
                    patches, (out_h, out_w) = patch_matrix(layer_input, spec.kernel_size, spec.stride)
                    current = (patches @ kernel.reshape(-1, kernel.shape[-1])).reshape(batch, out_h, out_w, -1)
                else:
                    patches = layer_input.reshape(batch, -1)
                    current = patches @ kernel
                if index > 0:
                    sop_num += int(np.abs(patches).sum()) * kernel.shape[-1]
                if t == 0:
                    mems.append(np.zeros_like(current))
                    mem_qs.append(np.zeros_like(current) + b)
                    counts.append(np.zeros_like(current))
                mems[index] = mems[index] + current
                d = np.maximum(mems[index], b) - mem_qs[index]
                spike = np.where(d > theta, 1.0, np.where(d < -EPSILON, -1.0, 0.0))
                mem_qs[index] = mem_qs[index] + spike * theta
                counts[index] = counts[index] + spike
                spike_num += int(np.abs(spike).sum())
                spike_collect += int(spike.sum())
                layer_input = spike
            sop_num += int(np.abs(layer_input).sum()) * out_kernel.shape[1]
            logits = counts[-1].reshape(batch, -1) @ out_kernel
            correct = int((np.argmax(logits, axis=1) == y).sum())
            for name, value in zip(logs, (correct, spike_num, spike_collect, sop_num)):
                logs[name].append(value)
    return logs
