"""The lossless check (ALGORITHM.md §3): do the SNN's settled spike counts equal 2**k x the quantized ANN's?

The quantized ANN is recomputed here in float64 from the raw parameters (not Keras' float32), and
every neuron of every layer is compared. The paper's method allows one exception, rounding ties:
q_k rounds 2**k BN(z) + 1e-5, while the neuron settles at floor(2**k BN(z) + 1/2) and gives back an
overshoot only beyond 1e-5 in membrane units. explain_mismatches sorts each differing neuron into
such a tie of its own, or anything else (a simulator fault, or T too short).
"""
from dataclasses import dataclass

import numpy as np

from architectures import BN_EPSILON, QUANTIZER_TIE_NUDGE, architecture
from spiking_utils import EXACT_TIE_MARGIN, NEGATIVE_SPIKE_TOLERANCE, weighted_input


@dataclass
class LosslessCheck:
    """Per sample (N,): how the SNN's settled spike counts compare with 2**k x the quantized ANN's activations."""

    neuron_mismatches: np.ndarray  # neurons whose count differs
    tie_mismatches: np.ndarray  # of those, neurons off by their own 1e-5 rounding tie
    other_mismatches: np.ndarray  # neurons off for any other reason (0 unless T was too short)
    ann_predictions: np.ndarray  # the quantized ANN's predictions


def check(result, network, frames, block_size=256):
    """The LosslessCheck of a simulation run with keep_counts, `block_size` samples at a time."""
    checks = []
    for start in range(0, len(frames), block_size):
        block = slice(start, start + block_size)
        snn_counts = [layer_counts[block] for layer_counts in result.final_counts]
        ann_counts, predictions = quantized_ann(network.params, frames[block])
        mismatches = sum((snn != ann).reshape(len(snn), -1).sum(axis=1) for snn, ann in zip(snn_counts, ann_counts))
        checks.append((mismatches, *explain_mismatches(network, frames[block], snn_counts), predictions))
    return LosslessCheck(*(np.concatenate(column) for column in zip(*checks)))


def layers_of(params):
    """The hidden layers of the network a §6 parameter dict describes (no `dataset`: N-MNIST's)."""
    return architecture(params["model"], params.get("dataset", "n_mnist"))


def quantized_layer(params, index, activation):
    """Hidden layer `index` (from 1) of the quantized ANN of §2, in float64, from the raw parameters.

    Returns (2**k * relu(BN(z)), 2**k * q_k(relu(BN(z)))): the scaled activation before and after
    rounding; the second is the spike count a lossless SNN neuron must reach.
    """
    layer, k = layers_of(params)[index - 1], params["k"]
    z = weighted_input(layer.kind, params[f"{layer.name}_kernel"], layer.stride, activation).numpy()
    gamma, beta, mean, var = (params[f"bn{index}_{field}"] for field in ("gamma", "beta", "mean", "var"))
    scaled = np.maximum(gamma * (z - mean) / np.sqrt(var + BN_EPSILON) + beta, 0.0) * 2.0**k
    return scaled, np.round(scaled + QUANTIZER_TIE_NUDGE)


def quantized_ann(params, frames):
    """The quantized ANN in float64: (per layer 2**k * q_k activations, predictions). frames: (B, *input shape)."""
    activation, counts = frames.astype(np.float64), []
    for index in range(1, len(layers_of(params)) + 1):
        counts.append(quantized_layer(params, index, activation)[1])
        activation = counts[-1] / 2.0 ** params["k"]
    logits = activation.reshape(len(activation), -1) @ params["out_kernel"]
    return counts, np.argmax(logits, axis=1)


def explain_mismatches(network, frames, snn_counts):
    """Per sample: (neurons off only at a 1e-5 rounding tie, neurons off for any other reason).

    Each layer is recomputed from the SNN's own counts of the layer before, so a neuron is blamed
    only for its own rounding. With x = 2**k BN(z), the SNN settles at floor(x + 1/2) while q_k
    rounds x + 1e-5; and a neuron that overshot comes back only if its deficit exceeds 1e-5 in
    membrane units, i.e. 1e-5 / theta counts. So x within max(1e-5, 1e-5/theta) of a half-integer
    may legitimately differ by one: the ties §3 names as the only exception. Under the exact tie
    rule the neuron rounds x + 1e-5 as q_k does, so only x + 1e-5 within float64 rounding of a
    half-integer may differ. Anything else would be a fault of the simulator.
    """
    params = network.params
    activation = frames.astype(np.float64)
    ties = others = 0
    for index, (layer, counts) in enumerate(zip(network.layers, snn_counts), start=1):
        scaled, levels = quantized_layer(params, index, activation)
        if network.tie_rule == "paper":
            window = 2 * np.maximum(QUANTIZER_TIE_NUDGE, NEGATIVE_SPIKE_TOLERANCE / layer.threshold)  # per channel
        else:
            scaled, window = scaled + QUANTIZER_TIE_NUDGE, EXACT_TIE_MARGIN
        differs = (counts != levels).reshape(len(frames), -1)
        near_tie = (np.abs(scaled - np.floor(scaled) - 0.5) <= window).reshape(len(frames), -1)
        ties = ties + (differs & near_tie).sum(axis=1)
        others = others + (differs & ~near_tie).sum(axis=1)
        activation = counts / 2.0 ** params["k"]
    return ties, others


def report(result, check, network):
    """Numbers of the lossless check (§3): mismatching neurons and samples, first all-matching step.

    Neurons that differ are sorted into: all those of samples still spiking at the last step (T
    too short for them: not settled, so not judged), and in the other samples, their own 1e-5
    rounding tie, downstream of such ties, or any other reason, which would be a simulator fault.
    """
    n_samples, time_steps = result.predictions.shape
    neurons = n_samples * sum(layer.neurons for layer in network.layers)
    all_match = (result.predictions == check.ann_predictions[:, None]).all(axis=0)  # (T,)
    first_step = None
    if all_match[-1]:
        not_matching = np.flatnonzero(~all_match)
        first_step = int(not_matching[-1]) + 2 if len(not_matching) else 1  # counted from 1
    different_predictions = result.predictions[:, -1] != check.ann_predictions
    still_spiking = result.still_spiking
    settled = ~still_spiking
    unsettled = int(check.neuron_mismatches[still_spiking].sum())  # no verdict on them: T was too short
    other = int(check.other_mismatches[settled].sum())
    ties = int(check.tie_mismatches[settled].sum())
    return {
        "mismatching_neurons": int(check.neuron_mismatches.sum()),
        "mismatching_neuron_share": float(check.neuron_mismatches.sum() / neurons),
        "samples_with_mismatching_neurons": int((check.neuron_mismatches > 0).sum()),
        "samples_with_mismatching_neurons_share": float((check.neuron_mismatches > 0).mean()),
        "rounding_tie_neurons": ties,
        "downstream_of_ties_neurons": int(check.neuron_mismatches[settled].sum()) - ties - other,
        "samples_still_spiking_at_the_last_step": int(still_spiking.sum()),
        "unsettled_neurons": unsettled,
        "other_mismatching_neurons": other,
        "mismatching_predictions": int(different_predictions.sum()),
        "mismatching_prediction_share": float(different_predictions.mean()),
        "first_step_all_predictions_match": first_step,
    }


def summary(report, n_test):
    """The lossless check in one line, e.g. `lossless check: 1339 neurons (0.0149%, in 52 samples, 14.48%) ...`."""
    unsettled = (f"{report['unsettled_neurons']} in the {report['samples_still_spiking_at_the_last_step']} samples "
                 "still spiking at the last step (not settled: more --time-steps), "
                 if report["samples_still_spiking_at_the_last_step"] else "")
    return (f"lossless check: {report['mismatching_neurons']} neurons "
            f"({100 * report['mismatching_neuron_share']:.4f}%, in {report['samples_with_mismatching_neurons']} samples, "
            f"{100 * report['samples_with_mismatching_neurons_share']:.2f}%) differ from 2^k x the quantized ANN: "
            f"{report['rounding_tie_neurons']} at rounding ties of their own (§3), "
            f"{report['downstream_of_ties_neurons']} downstream of those, {unsettled}"
            f"{report['other_mismatching_neurons']} otherwise; "
            f"{report['mismatching_predictions']} of {n_test} predictions differ "
            f"({100 * report['mismatching_prediction_share']:.2f}%); "
            + (f"all predictions match from step {report['first_step_all_predictions_match']}"
               if report["first_step_all_predictions_match"] else "the predictions never all match"))
