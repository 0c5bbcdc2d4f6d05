"""The spiking conversion (ALGORITHM.md §3), its simulation (§4), the logs, and the SNN scripts."""
import json
import runpy
import shutil
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import tensorflow as tf

import commands
import evaluation
import models
import spiking_utils
from architectures import ARCHITECTURES, MAX_TIME_STEPS, MODEL_FOLDERS, HiddenLayer, layer_shapes, spiking_neuron_count
from cli import UserError
from conftest import (NOTICE_PATTERNS, REPO, assert_one_line_error, conv2d_valid, random_parameters, run_script, script_paths,
                      weighted_sum, write_parameters)
import lossless
import snn_engine
import snn_float64
from lossless import quantized_ann
from snn_engine import simulate
from log_format import LOG_FILES, log_columns, read_logs, steps_to_final, write_logs
from spiking_utils import SimulationResult, convert, fold_batch_norm, neuron_step, simulate_reference, synapse_counts

KS = (0, 1, 2)


def reference_logs(params, frames, labels, time_steps):
    """The four logs of the definition's plain simulator (spiking_utils.simulate_reference), {name: list of ints}."""
    result = simulate_reference(convert(params), frames, time_steps, progress=False)
    return {name: values.reshape(-1).tolist() for name, values in log_columns(result, labels).items()}
MODELS = ("lenet", "mlp")
SNN_CASES = [(model, f"k{k}") for model in MODELS for k in KS]


# ---------------------------------------------------------------------------------------------
# The neuron (§4 steps 4-6)


def step(mem, count, tie_rule, theta=0.5, bound=-1.0):
    spikes = neuron_step(np.array([[mem]]), np.array([[count]], dtype=np.float64), np.array([theta]), np.array([bound]),
                         tie_rule)
    return float(np.asarray(spikes)[0, 0])


# theta = 0.5, b = -1, so mem_q = b + n theta; (paper, exact) spikes
@pytest.mark.parametrize("mem,count,paper,exact", [
    (1.0, 2, 1, 1),              # d = 1.0 > theta: positive spike
    (0.5, 2, 0, 1),              # d = theta exactly: none under the paper's strict >, one under the exact >=
    (0.25, 2, 0, 0),             # 0 < d < theta
    (0.0, 2, 0, 0),              # d = 0
    (100.0, 2, 1, 1),            # d = 200 thetas: still a single spike
    (-2**-16, 2, -1, -1),        # d = -1.53e-5 < -1e-5: negative spike
    (-1e-5, 2, 0, -1),           # d = -1e-5 exactly: the paper's strict < -1e-5 fires none; exact: d < 0
    (-0.5e-5, 2, 0, -1),         # inside the paper's tolerance
    (-3.0, 0, 0, 0),             # mem below the bound b = -1 with no spike yet: d = 0, the ReLU's zero
    (-50.0, 62, -1, -1),         # d = -1 - 30 = -31: a single negative spike
    (-3.0, 3, -1, -1),           # mem below b after spikes: counts return towards zero
])
def test_neuron_step_hand_cases(mem, count, paper, exact):
    assert step(mem, count, "paper") == paper
    assert step(mem, count, "exact") == exact


def test_neuron_step_broadcasts_threshold_and_bound_per_channel():
    mem = np.array([[[2.0, 2.0, -5.0]], [[0.0, 0.1, 3.0]]])  # (B=2, 1, C=3)
    counts = np.array([[[0.0, 1.0, 4.0]], [[0.0, 1.0, 18.0]]])
    theta, bound = np.array([1.0, 3.0, 0.25]), np.array([0.0, -2.0, -1.0])
    spikes = np.asarray(neuron_step(mem, counts, theta, bound))
    # mem_q = b + n theta = [[0, 1, 0], [0, 1, 3.5]]; d = max(mem, b) - mem_q = [[2, 1, -1], [0, -0.9, -0.5]]
    np.testing.assert_array_equal(spikes, [[[1, 0, -1]], [[0, -1, -1]]])
    assert set(np.unique(spikes)) <= {-1.0, 0.0, 1.0}


@pytest.mark.parametrize("excess,expected_count", [(0.0, 0), (0.3, 0), (1.0, 0), (1.2, 1), (2.5, 2), (3.0, 2),
                                                   (7.9, 7), (-4.0, 0)])
def test_neuron_settles_at_floor_counted_from_the_bound(excess, expected_count):
    """mem_q starts at b; a constant mem = b + excess * theta gives floor(excess) spikes, one per step,
    all positive (an exact integer excess gives one less: d must exceed theta). Below b: nothing."""
    theta, bound = 0.375, -0.625
    mem, count, spikes = bound + excess * theta, 0, []
    for _ in range(12):
        spikes.append(step(mem, count, "paper", theta, bound))
        count += spikes[-1]
    assert spikes == [1.0] * expected_count + [0.0] * (12 - expected_count)


def test_neuron_returns_from_above_with_negative_spikes():
    theta, bound = 0.5, 0.0
    count, spikes = 0, []
    for mem_at_step in [2.6] * 6 + [1.1] * 6 + [-3.0] * 4:  # count 5, then 2, then 0 (mem < b acts as ReLU)
        spikes.append(step(mem_at_step, count, "paper", theta, bound))
        count += spikes[-1]
    assert spikes == [1] * 5 + [0] + [-1] * 3 + [0] * 3 + [-1] * 2 + [0] * 2


# ---------------------------------------------------------------------------------------------
# BN folding (§3)


# per channel: gamma, beta, mean, var (var + 1e-5 = sigma**2); expected theta and b for k = 0, 1, 2
GAMMA = np.array([2.0, -2.0, 0.5])
BETA = np.array([0.25, 0.25, -1.0])
MEAN = np.array([1.0, 1.0, -2.0])
VAR = np.array([4.0, 4.0, 1.0]) - 1e-5  # sigma = 2, 2, 1
THETA = np.array([1.0, 1.0, 2.0])  # sigma / |gamma|
BOUNDS = {0: [0.25, -1.75, -1.0], 1: [1.0, -3.0, -1.0], 2: [2.5, -5.5, -1.0]}  # computed by hand from §3


@pytest.mark.parametrize("k", KS)
def test_fold_batch_norm_hand_numbers(k):
    kernel = np.arange(1.0, 7.0).reshape(2, 3)
    folded, theta, bound = fold_batch_norm(kernel, GAMMA, BETA, MEAN, VAR, k)
    np.testing.assert_allclose(theta, THETA, rtol=1e-9)
    np.testing.assert_allclose(bound, BOUNDS[k], rtol=1e-9, atol=1e-9)
    np.testing.assert_array_equal(folded, kernel * [1, -1, 1])  # the negative-gamma channel is flipped
    assert (theta > 0).all()


@pytest.mark.parametrize("k", KS)
def test_folded_neuron_count_is_the_quantized_activation(k):
    """floor((max(2**k z, b) - b) / theta) == 2**k q_k(relu(BN(z))) on many z, negative gamma included."""
    z = np.linspace(-8, 8, 20001) + 1e-7  # offset: no exact ties
    folded, theta, bound = fold_batch_norm(np.ones((1, 3)), GAMMA, BETA, MEAN, VAR, k)
    seen = folded[0] * z[:, None] * 2**k  # the flipped channel sees -z
    count = np.floor((np.maximum(seen, bound) - bound) / theta)
    bn = GAMMA * (z[:, None] - MEAN) / np.sqrt(VAR + 1e-5) + BETA
    expected = np.round(np.maximum(bn, 0) * 2**k + 1e-5)
    near_tie = np.abs(bn * 2**k - np.floor(bn * 2**k) - 0.5) < 1e-6
    assert (count[~near_tie] == expected[~near_tie]).all()
    assert expected[:, 1].max() >= 4 and expected[:, 1].min() == 0  # the flipped channel really spikes


def crafted_mlp(k=0, layer1=(), layer2=(), bn1=None, bn2=None, out=()):
    """An MLP parameter dict: zero kernels except the given (row, column, weight) entries;
    BN gamma 1, beta `default beta`, mean 0, sigma 1, unless overridden per unit."""
    params = {"model": "mlp", "k": k}
    for name, shape, entries in [("dense1_kernel", (1156, 400), layer1), ("dense2_kernel", (400, 400), layer2),
                                 ("out_kernel", (400, 10), out)]:
        kernel = np.zeros(shape)
        for row, column, weight in entries:
            kernel[row, column] = weight
        params[name] = kernel
    for index, overrides in ((1, bn1 or {}), (2, bn2 or {})):
        fields = {"gamma": np.ones(400), "beta": np.zeros(400), "mean": np.zeros(400), "var": np.full(400, 1 - 1e-5)}
        for (field, unit), value in overrides.items():
            fields[field][unit] = value
        params.update({f"bn{index}_{field}": value for field, value in fields.items()})
    return params


def frames_with(pixels):
    """Frames (B, 34, 34, 1) of zeros with frame[b].flat[i] = value for {i: value} in pixels[b]."""
    frames = np.zeros((len(pixels), 34 * 34))
    for row, values in enumerate(pixels):
        for index, value in values.items():
            frames[row, index] = value
    return frames.reshape(-1, 34, 34, 1)


@pytest.mark.parametrize("k", KS)
def test_negative_gamma_channel_counts_the_quantized_activation(k):
    # unit 0 of layer 1: z = pixel 0, gamma = -1, beta = 3, mean = 0.3: BN = 3.3 - z (no rounding ties)
    params = crafted_mlp(k, layer1=[(0, 0, 1.0)], bn1={("gamma", 0): -1.0, ("beta", 0): 3.0, ("mean", 0): 0.3},
                         bn2={("beta", unit): -1.0 for unit in range(400)})
    pixels = [0.0, 0.5, 1.2, 2.9, 3.1, 4.0, 6.0]  # BN = 3.3, 2.8, 2.1, 0.4, 0.2, -0.7, -2.7
    expected = {0: [3, 3, 2, 0, 0, 0, 0],  # round(BN), never below 0
                1: [7, 6, 4, 1, 0, 0, 0],  # round(2 BN): 6.6, 5.6, 4.2, 0.8, 0.4
                2: [13, 11, 8, 2, 1, 0, 0]}[k]  # round(4 BN): 13.2, 11.2, 8.4, 1.6, 0.8
    network = convert(params)
    assert network.layers[0].threshold[0] > 0 and network.layers[0].kernel[0, 0] == -1.0
    result = simulate(network, frames_with([{0: p} for p in pixels]), 40, keep_counts=True, progress=False)
    assert (result.spikes[:, -1] == 0).all()
    np.testing.assert_array_equal(result.final_counts[0][:, 0], expected)
    ann_counts, _ = quantized_ann(params, frames_with([{0: p} for p in pixels]))
    np.testing.assert_array_equal(ann_counts[0][:, 0], expected)
    assert (result.final_counts[0][:, 1:] == 0).all() and (result.final_counts[1] == 0).all()


def test_shadow_potential_starts_at_the_bound():
    """A unit with no input but BN(0) = beta = 2 must spike twice (k = 0): only if mem_q starts at b."""
    params = crafted_mlp(0, bn1={**{("beta", u): -1.0 for u in range(400)}, ("beta", 0): 2.0},
                         bn2={("beta", u): -1.0 for u in range(400)})
    result = simulate(convert(params), np.zeros((1, 34, 34, 1)), 6, keep_counts=True, progress=False)
    np.testing.assert_array_equal(result.spikes[0], [1, 1, 0, 0, 0, 0])
    assert result.final_counts[0][0, 0] == 2 and result.final_counts[0].sum() == 2
    assert quantized_ann(params, np.zeros((1, 34, 34, 1)))[0][0][0, 0] == 2


def test_convert_rejects_full_precision(make_params):
    with pytest.raises(UserError, match="full-precision"):
        convert(make_params("mlp", -1))


# ---------------------------------------------------------------------------------------------
# Convolution and synapse counts


def naive_convolution(x, kernel, stride):
    size, (batch, height, width, _) = kernel.shape[0], x.shape
    out_h, out_w = (height - size) // stride + 1, (width - size) // stride + 1
    out = np.zeros((batch, out_h, out_w, kernel.shape[3]))
    for i in range(out_h):
        for j in range(out_w):
            patch = x[:, i * stride:i * stride + size, j * stride:j * stride + size, :]
            out[:, i, j, :] = np.einsum("bhwc,hwco->bo", patch, kernel)
    return out


@pytest.mark.parametrize("shape,size,stride", [((9, 9, 2), 5, 1), ((8, 8, 3), 2, 2), ((9, 9, 2), 2, 2),
                                               ((10, 10, 2), 4, 1), ((11, 11, 1), 3, 2)])
def test_synaptic_input_of_a_convolution_is_a_valid_cross_correlation(shape, size, stride):
    rng = np.random.default_rng(size * 10 + stride)
    x, kernel = rng.normal(size=(3, *shape)), rng.normal(size=(size, size, shape[2], 4))
    out_h, out_w = (shape[0] - size) // stride + 1, (shape[1] - size) // stride + 1
    layer = spiking_utils.SpikingLayer("conv", kernel, stride, np.ones(4), np.zeros(4), shape, (out_h, out_w, 4),
                                       np.zeros(shape, dtype=np.int64))
    expected = naive_convolution(x, kernel, stride)
    np.testing.assert_allclose(np.asarray(spiking_utils.synaptic_input(layer, x)), expected, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(conv2d_valid(x, kernel, stride), expected, rtol=1e-12, atol=1e-12)  # the tests' own


def test_synaptic_input_of_a_dense_layer_flattens_row_major():
    rng = np.random.default_rng(3)
    x, kernel = rng.normal(size=(2, 3, 4, 5)), rng.normal(size=(60, 7))
    layer = spiking_utils.SpikingLayer("dense", kernel, 1, np.ones(7), np.zeros(7), (3, 4, 5), (7,), np.zeros(60))
    expected = np.array([[sum(x[b, i, j, c] * kernel[(i * 4 + j) * 5 + c, o] for i in range(3) for j in range(4)
                              for c in range(5)) for o in range(7)] for b in range(2)])
    np.testing.assert_allclose(np.asarray(spiking_utils.synaptic_input(layer, x)), expected, rtol=1e-12)


def brute_force_synapses(layer, shape_in):
    counts = np.zeros(shape_in, dtype=np.int64)
    out_h = (shape_in[0] - layer.kernel_size) // layer.stride + 1
    out_w = (shape_in[1] - layer.kernel_size) // layer.stride + 1
    for i in range(out_h):
        for j in range(out_w):
            for dy in range(layer.kernel_size):
                for dx in range(layer.kernel_size):
                    counts[i * layer.stride + dy, j * layer.stride + dx, :] += layer.units
    return counts


@pytest.mark.parametrize("index", range(4))
def test_synapse_counts_of_lenet_layers(index):
    layer, (shape_in, _) = ARCHITECTURES["lenet"][index], layer_shapes("lenet")[index]
    np.testing.assert_array_equal(synapse_counts(layer, shape_in), brute_force_synapses(layer, shape_in))


@pytest.mark.parametrize("layer,shape_in", [(HiddenLayer("c", "conv", 5, kernel_size=3, stride=2), (8, 8, 2)),
                                            (HiddenLayer("c", "conv", 3, kernel_size=2, stride=2), (15, 15, 4)),
                                            (HiddenLayer("c", "conv", 7, kernel_size=4, stride=3), (13, 10, 1))])
def test_synapse_counts_with_uncovered_borders(layer, shape_in):
    np.testing.assert_array_equal(synapse_counts(layer, shape_in), brute_force_synapses(layer, shape_in))


def test_synapse_counts_dense_and_lenet_totals():
    dense = ARCHITECTURES["mlp"][1]
    np.testing.assert_array_equal(synapse_counts(dense, (400,)), np.full(400, 400))
    # every synapse of conv2..conv4 counted once: sum = output positions x kernel taps x C_in x C_out
    for index in (1, 2, 3):
        layer, (shape_in, shape_out) = ARCHITECTURES["lenet"][index], layer_shapes("lenet")[index]
        taps = layer.kernel_size**2 * shape_in[2]
        assert synapse_counts(layer, shape_in).sum() == shape_out[0] * shape_out[1] * taps * layer.units


# ---------------------------------------------------------------------------------------------
# The counters, counted by hand


def hand_network():
    """k = 0, theta = 1, b = -0.5 everywhere. Layer 1: unit 0 <- 3.2 (3 spikes), unit 1 <- 5.2 (5 spikes).
    Layer 2: unit 0 = 1 x unit 0 (3 spikes), unit 1 = 2 x unit 0 (6 spikes), unit 2 = 2 x unit 0 - unit 1
    (+ + + - -: count 1). Out: class 3 <- unit 0, class 5 <- unit 1, class 7 <- 2 x unit 2."""
    params = crafted_mlp(0, layer1=[(0, 0, 1.0), (1, 1, 1.0)],
                         layer2=[(0, 0, 1.0), (0, 1, 2.0), (0, 2, 2.0), (1, 2, -1.0)],
                         out=[(0, 3, 1.0), (1, 5, 1.0), (2, 7, 2.0)])
    frames = frames_with([{0: 3.2, 1: 5.2}, {}])  # sample 1: an empty frame, never spikes
    return params, frames, np.array([5, 0])


def test_counters_by_hand():
    params, frames, labels = hand_network()
    result = simulate(convert(params), frames, 8, keep_counts=True, progress=False)
    np.testing.assert_array_equal(result.spikes, [[5, 5, 5, 3, 3, 1, 0, 0], [0] * 8])
    np.testing.assert_array_equal(result.net_spikes, [[5, 5, 5, 1, 1, 1, 0, 0], [0] * 8])
    # 400 synapses per layer-1 spike (dense2 fan-out) + 10 per layer-2 spike (output layer); layer 1 not counted
    np.testing.assert_array_equal(result.sops, [[830, 830, 830, 420, 420, 10, 0, 0], [0] * 8])
    # counts (3, 6, 1) reached as (1,1,1), (2,2,2), (3,3,3), (3,4,2), (3,5,1), (3,6,1): logits of 3, 5, 7
    np.testing.assert_array_equal(result.predictions, [[7, 7, 7, 5, 5, 5, 5, 5], [0] * 8])  # step 3: tie 5/7 -> 5
    np.testing.assert_array_equal(result.final_counts[0][0, :3], [3, 5, 0])
    np.testing.assert_array_equal(result.final_counts[1][0, :4], [3, 6, 1, 0])
    assert result.final_counts[0].sum() == 8 and result.final_counts[1].sum() == 10
    assert (result.final_counts[0][1] == 0).all() and (result.final_counts[1][1] == 0).all()

    expected_logs = {"accuracy.txt": [1, 1, 1, 2, 2, 2, 2, 2],
                     "spike_num.txt": [5, 10, 15, 18, 21, 22, 22, 22],
                     "spike_collect.txt": [5, 10, 15, 16, 17, 18, 18, 18],
                     "sop_num.txt": [830, 1660, 2490, 2910, 3330, 3340, 3340, 3340]}
    assert {name: values.reshape(-1).tolist() for name, values in log_columns(result, labels).items()} == expected_logs
    assert reference_logs(params, frames, labels, 8) == expected_logs
    ann_counts, ann_predictions = quantized_ann(params, frames)
    assert ann_counts[0][0, :2].tolist() == [3, 5] and ann_counts[1][0, :3].tolist() == [3, 6, 1]
    assert ann_predictions.tolist() == [5, 0]


def test_exact_ties_are_the_documented_exception():
    """theta = 1 and b = -0.5 exactly (sigma = sqrt(1 - 1e-5 + 1e-5) = 1): 2**k BN(z) = n + 0.5 exactly gives
    n spikes (d must exceed theta) where the ANN's nudge gives n + 1. Layer 1 (pixel 0 in 0.5, 1.5, 2.5)
    and layer 2 (0.5 x a layer-1 count of 5 = 2.5) alike; the reference simulator agrees."""
    params = crafted_mlp(0, layer1=[(0, 0, 1.0), (1, 1, 1.0)], layer2=[(1, 0, 0.5)], out=[(0, 1, 1.0)])
    frames = frames_with([{0: 0.5, 1: 5.2}, {0: 1.5, 1: 5.2}, {0: 2.5, 1: 5.2}])
    network = convert(params)
    assert network.layers[0].threshold[0] == 1.0 and network.layers[0].bound[0] == -0.5
    result = simulate(network, frames, 12, keep_counts=True, progress=False)
    np.testing.assert_array_equal(result.final_counts[0][:, :2], [[0, 5], [1, 5], [2, 5]])
    np.testing.assert_array_equal(result.final_counts[1][:, 0], [2, 2, 2])  # mem 2.5: + at steps 1 and 3 only
    ann_counts, _ = quantized_ann(params, frames)
    np.testing.assert_array_equal(ann_counts[0][:, 0], [1, 2, 3])
    np.testing.assert_array_equal(ann_counts[1][:, 0], [3, 3, 3])
    labels = np.array([1, 0, 1])
    ours = {name: values.reshape(-1).tolist() for name, values in log_columns(result, labels).items()}
    assert ours == reference_logs(params, frames, labels, 12)


@pytest.mark.parametrize("potential,count,spike,outlook", [
    (0.5, 0, 0, 0), (1.5, 0, 1, 0),  # quiet after this step
    (1.0005, 0, 1, snn_engine.CLOSE_CALL), (0.9995, 0, 0, snn_engine.CLOSE_CALL),  # within the window of 1
    (2.5, 0, 1, snn_engine.PENDING),  # still above 1 after its +1 spike: fires again without input
    (0.5, 1, -1, 0), (0.5, 2, -1, snn_engine.PENDING),  # excess -0.5 and -1.5
    (-3.0, 0, 0, 0),  # excess 0: no negative spike is possible without a net spike, so no close call
    (-3.0, 1, -1, 0), (1e-5, 1, -1, 0),  # back to no net spike: at rest whatever the potential
    (-3.0, 2, -1, snn_engine.PENDING),  # excess -2: a second -1 spike follows
])
def test_neuron_update_spikes_and_outlook(potential, count, spike, outlook):
    """The float32 update of the runner: its spike, and whether the neuron is a close call (decided
    again in float64) or may fire at the next step without input (the sample is not yet at rest)."""
    fast = snn_float64.FastLayer(kernel=None, start=tf.zeros(1), tolerance=tf.fill((1,), 1e-5), window=1e-3,
                                   kernel_by_unit=None)
    update = snn_engine.make_neuron_update(fast, (1,))
    new_potential, new_count, spikes, outlooks = update(
        tf.constant([[0.0]]), tf.constant([[potential]]), tf.constant([[count]], tf.int8), tf.constant([False]))
    assert float(new_potential[0, 0]) == np.float32(potential)
    assert float(spikes[0, 0]) == spike and int(new_count[0, 0]) == count + spike
    assert int(outlooks[0, 0]) == outlook


def test_a_neuron_both_close_and_pending_keeps_its_sample_running():
    """Huge parameters widen the float32 decision window past 1 threshold unit, so a neuron can be a
    close call and still due to fire at the next step; the sample must then not retire early."""
    params = crafted_mlp(0, layer2=[(0, 0, 2e4)], out=[(0, 3, 1.0)],
                         bn1={("beta", 0): 10.0, **{("beta", unit): -1.0 for unit in range(1, 400)}},
                         bn2={("mean", 0): 199_997.8, **{("beta", unit): -1.0 for unit in range(1, 400)}})
    frames, labels = np.zeros((3, 34, 34, 1)), np.array([3, 0, 1])
    network = convert(params)
    window = float(snn_float64.fast_layer(network.layers[1]).window)
    assert window > 1.0  # the case the test is about
    result = simulate(network, frames, 20, keep_counts=True, progress=False)
    ours = {name: values.reshape(-1).tolist() for name, values in log_columns(result, labels).items()}
    assert ours == reference_logs(params, frames, labels, 20)
    assert result.final_counts[1][0, 0] == 2  # 1e4 x 2e4 / 1 spikes in, from 199,997.8: round(2.2) = 2


@pytest.mark.parametrize("shape,density", [((4, 15, 15, 12), 0.001), ((3, 6, 6, 64), 0.3), ((5, 400), 0.0),
                                           ((2, 7), 1.0)])
def test_sparse_where_equals_tf_where(shape, density):
    """The close-call finder returns exactly tf.where's indices, in its order, also when none or all are set."""
    mask = np.random.default_rng(3).random(shape) < density
    block = snn_engine.largest_divisor(int(np.prod(shape[1:])))
    found = snn_engine.sparse_where(tf.constant(mask), block).numpy()
    np.testing.assert_array_equal(found, tf.where(mask).numpy())
    assert found.shape == (mask.sum(), len(shape))


def test_decisions_that_float32_would_flip_are_taken_in_float64():
    """Layer 2 unit 0 <- (0.5 + 1e-9) x layer-1 unit 1 (5 spikes at steps 0..4): in float64 d exceeds theta
    by 1e-9 at steps 0, 2 and 4 (3 spikes, = round(2.5 + 5e-9 + 1e-5)); float32 rounds the weight to 0.5,
    d to theta, and would fire at steps 1 and 3 only. The runner must agree with the reference simulator."""
    params = crafted_mlp(0, layer1=[(1, 1, 1.0)], layer2=[(1, 0, 0.5 + 1e-9)], out=[(0, 1, 1.0)])
    frames, labels = frames_with([{1: 5.2}]), np.array([1])
    result = simulate(convert(params), frames, 8, keep_counts=True, progress=False)
    assert result.final_counts[1][0, 0] == 3 == quantized_ann(params, frames)[0][1][0, 0]
    np.testing.assert_array_equal(result.net_spikes[0, :6], [2, 1, 2, 1, 2, 0])  # layer 1 + layer 2 per step
    assert result.float64_decisions["changed"] == 3 and result.float64_decisions["ties"] == 0
    ours = {name: values.reshape(-1).tolist() for name, values in log_columns(result, labels).items()}
    assert ours == reference_logs(params, frames, labels, 8)


# ---------------------------------------------------------------------------------------------
# Lossless conversion (§3)


def check_lossless(params, x, max_steps=200):
    """Simulate to convergence; compare the spike counts with 2**k x the quantized activations.

    Layer by layer, each layer's counts are compared with the quantized ANN fed with the SNN's own
    counts of the layer before, so every mismatch can be traced to its own rounding tie: it must lie
    within the 1e-5 nudge (and the -1e-5 negative-spike tolerance, 1e-5 / theta in count units).
    """
    k, network = params["k"], convert(params)
    result = simulate(network, x, max_steps, keep_counts=True, progress=False)
    assert (result.spikes[:, -1] == 0).all(), "did not converge"
    activation, own_mismatches, neurons = x.astype(np.float64), 0, 0
    for index, (spec, layer) in enumerate(zip(ARCHITECTURES[params["model"]], network.layers), start=1):
        kernel = params[f"{spec.name}_kernel"]
        z = weighted_sum(spec, kernel, activation)
        g, b, m, v = (params[f"bn{index}_{f}"] for f in ("gamma", "beta", "mean", "var"))
        scaled = 2**k * (g * (z - m) / np.sqrt(v + 1e-5) + b)
        expected = np.round(np.maximum(scaled, 0) + 1e-5)
        counts = result.final_counts[index - 1]
        assert counts.min() >= 0
        wrong = counts != expected
        tie_distance = np.abs(scaled - np.floor(scaled) - 0.5)
        tolerance = 1e-5 * (1 + 1 / layer.threshold) + 1e-9 + np.zeros_like(scaled)
        assert (tie_distance[wrong] <= tolerance[wrong]).all(), (index, scaled[wrong][:5], counts[wrong][:5])
        assert (np.abs(counts - expected)[wrong] == 1).all()
        own_mismatches += int(wrong.sum())
        neurons += counts.size
        activation = counts / 2**k
    ann_counts, ann_predictions = quantized_ann(params, x)
    total = sum(int((c != a).sum()) for c, a in zip(result.final_counts, ann_counts))
    first_layer = result.final_counts[0] != ann_counts[0]
    per_sample = sum((c != a).reshape(len(x), -1).sum(axis=1) for c, a in zip(result.final_counts, ann_counts))
    return {"result": result, "ann_predictions": ann_predictions, "own_mismatches": own_mismatches,
            "total_mismatches": total, "neurons": neurons, "first_layer_mismatches": int(first_layer.sum()),
            "mismatches_per_sample": per_sample,
            "max_count": max(int(c.max()) for c in result.final_counts)}


def assert_lossless(check, n_samples):
    """Only near-ties may differ (checked in check_lossless), and they are rare; a prediction may
    differ only in a sample holding such a tie."""
    assert check["own_mismatches"] <= 1e-4 * check["neurons"]
    assert check["total_mismatches"] <= 1e-3 * check["neurons"]
    differs = check["result"].predictions[:, -1] != check["ann_predictions"]
    assert not (differs & (check["mismatches_per_sample"] == 0)).any()
    assert differs.sum() <= max(1, 0.03 * n_samples)
    assert check["max_count"] >= 2  # the network really spikes


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("k", KS)
def test_lossless_with_random_parameters(model, k, frames):
    x = frames[2][:40 if model == "lenet" else 100]
    params = random_parameters(model, k, seed=100 + k, frames=frames[2])
    assert any((params[f"bn{i}_gamma"] < 0).any() for i in range(1, len(ARCHITECTURES[model]) + 1))
    check = check_lossless(params, x)
    assert_lossless(check, len(x))
    assert check["max_count"] >= 2**k * 2


@pytest.mark.parametrize("model,precision", SNN_CASES)
def test_lossless_with_briefly_trained_model(model, precision, frames, script_runs):
    run = script_runs[model, precision]
    assert run["train"]["code"] == 0, run["stderr"][-3000:]
    params = models.load_parameters(run["model_dir"] / models.PARAMETERS_FILE, model=model,
                                    k=int(precision[1]), quantized_only=True)
    x = frames[2][:40 if model == "lenet" else 100]
    assert_lossless(check_lossless(params, x), len(x))


@pytest.mark.parametrize("k", KS)
def test_explain_mismatches_blames_a_wrong_count_and_excuses_only_ties(k, frames):
    x = frames[2][:20]
    params = random_parameters("mlp", k, seed=300 + k, frames=frames[2])
    network = convert(params)
    counts = simulate(network, x, 60, keep_counts=True, progress=False).final_counts
    ties, others = lossless.explain_mismatches(network, x, counts)
    assert others.sum() == 0
    # a count off by one where 2**k BN(z) is far from a rounding tie must be reported as a fault
    scaled, _ = lossless.quantized_layer(params, 1, x.astype(np.float64))
    distance_to_tie = np.abs(scaled - np.floor(scaled) - 0.5)
    sample, unit = np.unravel_index(np.argmax(distance_to_tie * (scaled > 1)), scaled.shape)
    broken = [counts[0].copy(), counts[1]]
    broken[0][sample, unit] += 1
    ties_after, others_after = lossless.explain_mismatches(network, x, broken)
    assert others_after[sample] >= 1 and others_after.sum() >= 1
    assert (ties_after == ties).all()


@pytest.mark.parametrize("model,precision", [("lenet", "k2"), ("mlp", "k1")])
def test_both_engines_write_identical_files(model, precision, script_runs, frame_data, tmp_path):
    """--engine reference (the definition) and the default fast engine: the same four logs and the
    same snn_results.json, byte for byte, on a briefly trained model. Two cases: the logs' equality for
    every model and k is test_logs_equal_reference_simulation's (and bench_engines.py's on the demo)."""
    written = {}
    for engine in ("reference", "fast"):
        commands.evaluate_snn(model, precision, [
            "--data", str(frame_data), "--model-dir", str(script_runs[model, precision]["model_dir"]),
            "--log-dir", str(tmp_path / engine), "--test-limit", "30", "--time-steps", "25", "--check-lossless",
            "--quiet", "--engine", engine])
        written[engine] = {path.name: path.read_bytes() for path in (tmp_path / engine).iterdir()}
    assert sorted(written["fast"]) == sorted([*LOG_FILES, "snn_results.json"])
    assert written["fast"] == written["reference"]
    assert json.loads(written["fast"]["spike_num.txt"].split()[-1]) > 0  # it spiked


# ---------------------------------------------------------------------------------------------
# Fidelity: the fast engine == the definition's plain simulator, line by line


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("k", KS)
def test_logs_equal_reference_simulation(model, k, frames):
    x, y = frames[2][:60], frames[3][:60]
    params = random_parameters(model, k, seed=200 + k, frames=frames[2])
    result = simulate(convert(params), x, time_steps=40, pool_size=37, progress=False)
    ours = {name: values.reshape(-1).tolist() for name, values in log_columns(result, y).items()}
    reference = reference_logs(params, x, y, 40)
    assert ours.keys() == reference.keys()
    for name in reference:
        assert len(ours[name]) == len(reference[name]) == 2 * 40
        assert ours[name] == reference[name], name
    # the runner retired converged samples early and refilled their rows (60 samples through 37 rows),
    # and still matched the reference run
    silent_from = np.array([np.flatnonzero(row)[-1] + 1 if row.any() else 0 for row in result.spikes])
    assert silent_from.min() < 40 and len(np.unique(silent_from)) > 1
    assert ours["spike_num.txt"][-1] > 0 and ours["sop_num.txt"][-1] > 0


@pytest.mark.parametrize("model", MODELS)
def test_pool_size_changes_nothing(model, frames):
    """All samples together in one pool == two workers with pools of one row each == two workers whose
    rows are refilled mid-run."""
    x = frames[2][:12]
    params = random_parameters(model, 1, seed=7, frames=frames[2])
    network = convert(params)
    together = simulate(network, x, 30, pool_size=12, workers=1, progress=False, keep_counts=True)
    for pool_size in (1, 5):
        other = simulate(network, x, 30, pool_size=pool_size, workers=2, progress=False, keep_counts=True)
        for name in ("spikes", "net_spikes", "sops", "predictions"):
            np.testing.assert_array_equal(getattr(together, name), getattr(other, name))
        for ours, theirs in zip(together.final_counts, other.final_counts):
            np.testing.assert_array_equal(ours, theirs)
    assert together.spikes.shape == (12, 30)


def test_a_failing_worker_stops_the_simulation(frames, monkeypatch):
    """An error in one worker's step reaches the caller, and the other worker stops instead of
    simulating the remaining samples on its own."""
    network = convert(random_parameters("lenet", 1, seed=7, frames=frames[2]))
    real_make_step = snn_engine.make_network_step
    calls = []

    def make_failing_step(*args):
        step, fast = real_make_step(*args)

        def failing_step(*step_args):
            calls.append(1)
            if len(calls) == 4:  # the idle warm-up call, then a few real steps
                raise RuntimeError("step failed")
            return step(*step_args)
        return failing_step, fast

    monkeypatch.setattr(snn_engine, "make_network_step", make_failing_step)
    with pytest.raises(RuntimeError, match="step failed"):
        simulate(network, np.repeat(frames[2][:4], 25, axis=0), 30, pool_size=2, workers=2, progress=False)
    assert len(calls) < 10  # 100 samples in pools of 2 rows would take more than a hundred steps


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("k", KS)
def test_first_layer_closed_form_equals_the_recurrence(model, k, frames):
    """Layer 1's counts (float32 ratio, float64 where close to a whole number) == T float64 neuron steps."""
    x = frames[2][:16].astype(np.float64) * 2.0**k
    layer = convert(random_parameters(model, k, seed=500 + k, frames=frames[2])).layers[0]
    mem = np.asarray(spiking_utils.synaptic_input(layer, x))
    expected = np.zeros(mem.shape)
    for t in range(1, 41):
        expected += np.asarray(neuron_step(mem, expected, layer.threshold, layer.bound))
        if t in (3, 40):  # capped at T = 3 for many neurons; complete at T = 40
            np.testing.assert_array_equal(snn_float64.first_layer_spike_counts(layer, x, t), expected)
    assert expected.max() > 3 and (expected == 0).any()


@pytest.mark.parametrize("uniform", [True, False])
def test_first_layer_counters_count_the_units_still_firing(uniform):
    """Layer 1 fires +1 at steps 0 .. n-1: at step t its spikes are the units with n > t, each
    causing its own number of synaptic operations."""
    time_steps = 6
    counts = np.array([[0, 1, 3, 6], [2, 2, 0, 5]], dtype=np.int8)
    synapses = np.array([4, 4, 4, 4]) if uniform else np.array([1, 10, 100, 1000])
    table = snn_engine.first_layer_counters(counts, synapses, time_steps)
    assert table.shape == (2, time_steps, 3)
    for sample in range(2):
        for t in range(time_steps):
            firing = counts[sample] > t
            assert table[sample, t].tolist() == [firing.sum(), firing.sum(), synapses[firing].sum()]


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("t", [0, 2, 7])
def test_first_layer_drive_is_layer_2s_input(model, t, frames):
    """The fused comparison and matrix product (space to depth for LeNet's 2 x 2, stride 2) equals
    W (*) (layer-1 spikes at t) / theta up to float32 rounding."""
    network = convert(random_parameters(model, 1, seed=7, frames=frames[2]))
    layer, fast = network.layers[1], snn_float64.fast_layer(network.layers[1])
    counts = np.random.default_rng(t).integers(0, 9, (5, *layer.input_shape)).astype(np.int8)
    expected = weighted_sum(ARCHITECTURES[model][1], layer.kernel / layer.threshold, counts > t)
    drive = snn_engine.make_first_layer_drive(layer, fast)
    current = drive(counts, np.full(5, t, np.int32)).numpy()
    assert current.shape == (5, *layer.output_shape) and current.dtype == np.float32
    np.testing.assert_allclose(current, expected, rtol=0, atol=1e-5 * np.abs(expected).max())
    assert np.abs(expected).max() > 0.1


# ---------------------------------------------------------------------------------------------
# Logs (§4 layout)


def random_result(n_samples, time_steps, seed=0):
    rng = np.random.default_rng(seed)
    spikes = rng.integers(0, 50, (n_samples, time_steps))
    return SimulationResult(spikes=spikes, net_spikes=spikes - 2 * rng.integers(0, 10, (n_samples, time_steps)),
                            sops=rng.integers(0, 5000, (n_samples, time_steps)),
                            predictions=rng.integers(0, 10, (n_samples, time_steps)))


@pytest.mark.parametrize("n_samples,batch_size", [(120, 50), (100, 50), (7, 3), (1, 50)])
def test_write_logs_layout(n_samples, batch_size, tmp_path):
    time_steps = 6
    result, labels = random_result(n_samples, time_steps), np.random.default_rng(1).integers(0, 10, n_samples)
    columns = write_logs(tmp_path / "logs", log_columns(result, labels, batch_size))
    n_batches = -(-n_samples // batch_size)
    assert sorted(p.name for p in (tmp_path / "logs").iterdir()) == sorted(LOG_FILES)
    files = {name: (tmp_path / "logs" / name).read_text() for name in LOG_FILES}
    for name, text in files.items():
        assert text.endswith("\n")
        lines = text.splitlines()
        assert len(lines) == n_batches * time_steps
        assert all(line.lstrip("-").isdigit() for line in lines), name  # plain integers
        assert [int(line) for line in lines] == columns[name].reshape(-1).tolist()
    # by hand: line (batch b, step t) sums, over the samples of batch b, the counter up to step t
    for b in range(n_batches):
        rows = slice(b * batch_size, (b + 1) * batch_size)
        for t in range(time_steps):
            line = b * time_steps + t
            assert int(files["accuracy.txt"].splitlines()[line]) == int((result.predictions[rows, t] == labels[rows]).sum())
            assert int(files["spike_num.txt"].splitlines()[line]) == int(result.spikes[rows, :t + 1].sum())
            assert int(files["spike_collect.txt"].splitlines()[line]) == int(result.net_spikes[rows, :t + 1].sum())
            assert int(files["sop_num.txt"].splitlines()[line]) == int(result.sops[rows, :t + 1].sum())


def test_write_logs_unwritable_directory(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    with pytest.raises(UserError, match="cannot write logs"):
        write_logs(blocker / "logs", log_columns(random_result(5, 3), np.zeros(5, dtype=int)))
    assert blocker.read_text() == "not a directory"


def fail_on_write(monkeypatch, nth, failure):
    """Make the nth Path.write_text call raise `failure` (the earlier ones write as usual)."""
    real_write = Path.write_text
    calls = []

    def failing_write(self, *args, **kwargs):
        calls.append(self.name)
        if len(calls) == nth:
            raise failure
        return real_write(self, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", failing_write)
    return calls  # the names written to, the failing one included


@pytest.mark.parametrize("failure", [OSError(28, "No space left on device"), KeyboardInterrupt()])
def test_write_logs_leaves_nothing_behind_on_failure(failure, tmp_path, monkeypatch):
    log_dir = tmp_path / "logs"
    log_dir.mkdir()
    (log_dir / "accuracy.txt").write_text("old\n")  # an earlier run's log must stay as it was
    calls = fail_on_write(monkeypatch, 3, failure)
    with pytest.raises(UserError if isinstance(failure, OSError) else KeyboardInterrupt):
        write_logs(log_dir, log_columns(random_result(10, 4), np.zeros(10, dtype=int)))
    monkeypatch.undo()
    assert len(calls) == 3
    assert sorted(p.name for p in log_dir.iterdir()) == ["accuracy.txt"]
    assert (log_dir / "accuracy.txt").read_text() == "old\n"


def test_lossless_report_by_hand():
    """3 samples, T = 4: sample 0 matches the ANN from step 2, sample 2 from step 4; sample 1 is still
    spiking at the last step, so its neuron that differs is unsettled, not wrong."""
    result = spiking_utils.SimulationResult(
        spikes=np.array([[3, 1, 0, 0], [5, 4, 2, 1], [2, 2, 1, 0]]), net_spikes=np.zeros((3, 4), int),
        sops=np.zeros((3, 4), int), predictions=np.array([[1, 7, 7, 7], [2, 2, 2, 2], [0, 0, 0, 4]]))
    check = lossless.LosslessCheck(neuron_mismatches=np.array([3, 1, 0]), tie_mismatches=np.array([1, 0, 0]),
                                   other_mismatches=np.array([0, 1, 0]), ann_predictions=np.array([7, 2, 4]))
    network = SimpleNamespace(layers=[SimpleNamespace(neurons=20), SimpleNamespace(neurons=20)])
    report = lossless.report(result, check, network)
    assert report == {
        "mismatching_neurons": 4, "mismatching_neuron_share": 4 / 120,
        "samples_with_mismatching_neurons": 2, "samples_with_mismatching_neurons_share": 2 / 3,
        "rounding_tie_neurons": 1, "downstream_of_ties_neurons": 2,
        "samples_still_spiking_at_the_last_step": 1, "unsettled_neurons": 1, "other_mismatching_neurons": 0,
        "mismatching_predictions": 0, "mismatching_prediction_share": 0.0,
        "first_step_all_predictions_match": 4,
    }
    result.predictions[2, -1] = 0  # sample 2 never agrees: no step from which all match
    report = lossless.report(result, check, network)
    assert report["first_step_all_predictions_match"] is None and report["mismatching_predictions"] == 1
    line = lossless.summary(report, 3)
    assert "in 2 samples, 66.67%" in line and "1 in the 1 samples still spiking" in line
    assert line.endswith("the predictions never all match")


def test_steps_to_final_and_summary():
    assert steps_to_final([0.5, 0.5]) == 1
    assert steps_to_final([0.1, 0.9, 0.8, 0.9]) == 4
    assert steps_to_final([0.1, 0.9, 0.9, 0.9]) == 2
    columns = {"accuracy.txt": np.array([[1, 2, 3], [0, 1, 1]]), "spike_num.txt": np.array([[4, 8, 10], [2, 2, 6]]),
               "spike_collect.txt": np.array([[4, 6, 6], [2, 2, 2]]), "sop_num.txt": np.array([[0, 10, 30], [0, 0, 20]])}
    summary = evaluation.summarize_logs(columns, 4, 3, "mlp", 1, 2)
    assert (summary["model"], summary["k"], summary["batch_size"]) == ("mlp", 1, 2)
    assert summary["accuracy_per_step"] == [0.25, 0.75, 1.0] and summary["final_accuracy"] == 1.0
    assert summary["steps_to_final"] == 3
    assert summary["positive_spikes_per_sample"] == (16 + 8) / 2 / 4 and summary["negative_spikes_per_sample"] == 1.0
    assert summary["sops_per_sample"] == 50 / 4 and summary["ann_ops_per_sample"] == 492_000


# ---------------------------------------------------------------------------------------------
# evaluate_snn end to end


SNN_RESULT_KEYS = {"accuracy_per_step", "final_accuracy", "steps_to_final", "positive_spikes_per_sample",
                   "negative_spikes_per_sample", "sops_per_sample", "ann_ops_per_sample", "n_test", "time_steps"}


def read_log_files(log_dir):
    return {name: [int(line) for line in (Path(log_dir) / name).read_text().splitlines()] for name in LOG_FILES}


@pytest.mark.parametrize("model", MODELS)
def test_evaluate_snn_end_to_end(model, frame_data, frames, script_runs, tmp_path, capsys):
    model_dir = tmp_path / "model"
    shutil.copytree(script_runs[model, "k1"]["model_dir"], model_dir)
    log_dir, n_test, time_steps = tmp_path / "logs", (50 if model == "lenet" else 100), 60
    commands.evaluate_snn(model, "k1", ["--data", str(frame_data), "--model-dir", str(model_dir), "--log-dir", str(log_dir),
                                      "--time-steps", str(time_steps), "--test-limit", str(n_test), "--check-lossless",
                                      "--quiet"])
    out = capsys.readouterr().out
    saved = json.loads((log_dir / "snn_results.json").read_text())
    assert SNN_RESULT_KEYS <= set(saved)
    assert len(saved["accuracy_per_step"]) == time_steps and saved["final_accuracy"] == saved["accuracy_per_step"][-1]
    assert (saved["n_test"], saved["time_steps"]) == (n_test, time_steps)
    assert 1 <= saved["steps_to_final"] <= time_steps
    logs = read_log_files(log_dir)
    n_batches = -(-n_test // 50)
    assert all(len(values) == n_batches * time_steps for values in logs.values())
    final = {name: sum(values[b * time_steps + time_steps - 1] for b in range(n_batches)) for name, values in logs.items()}
    assert saved["final_accuracy"] == final["accuracy.txt"] / n_test
    assert saved["sops_per_sample"] == final["sop_num.txt"] / n_test
    assert saved["positive_spikes_per_sample"] + saved["negative_spikes_per_sample"] == pytest.approx(final["spike_num.txt"] / n_test)
    assert saved["positive_spikes_per_sample"] > 0 and saved["negative_spikes_per_sample"] >= 0

    assert saved["tie_rule"] == "paper" and sorted(saved["lossless_check"]) == ["exact", "paper"]
    for rule, report in saved["lossless_check"].items():
        assert f"{rule} tie rule: lossless check: {report['mismatching_neurons']} neurons" in out
        assert f"{report['other_mismatching_neurons']} otherwise" in out
        assert report["other_mismatching_neurons"] == 0  # every difference is a rounding tie or downstream of one
        assert report["rounding_tie_neurons"] + report["downstream_of_ties_neurons"] == report["mismatching_neurons"]
        assert f"{report['mismatching_predictions']} of {n_test} predictions differ" in out
        assert report["mismatching_predictions"] <= 1  # only a rounding tie could flip one
        assert report["mismatching_neurons"] <= 1e-4 * n_test * spiking_neuron_count(model)
    assert saved["lossless_check"]["exact"]["mismatching_neurons"] == 0  # the exact rule has no windows
    # lossless: the SNN's final accuracy is the quantized ANN's (Keras, float32) accuracy on the same
    # samples, up to one sample whose float32 activations land on the other side of a rounding tie
    ann = evaluation.evaluate_ann(model, "k1", frame_data, model_dir, test_limit=n_test)
    assert abs(saved["final_accuracy"] - ann["accuracy"]) <= 1 / n_test + 1e-12
    # the float64 quantized ANN, which the lossless check compares with, differs from Keras' float32 one
    # only in the samples counted as disagreeing
    assert abs(ann["float64_accuracy"] - ann["accuracy"]) <= ann["float64_disagreements"] / n_test + 1e-12
    assert saved["lossless_check"]["exact"]["mismatching_predictions"] == 0


def test_evaluate_snn_interrupted_while_writing_leaves_no_logs(frame_data, tmp_path, make_params, monkeypatch):
    write_parameters(tmp_path / "model" / models.PARAMETERS_FILE, make_params("mlp", 0, seed=3))
    fail_on_write(monkeypatch, 2, KeyboardInterrupt())
    with pytest.raises(KeyboardInterrupt):
        evaluation.evaluate_snn("mlp", "k0", frame_data, tmp_path / "model", tmp_path / "logs", time_steps=5,
                                test_limit=10, progress=False)
    monkeypatch.undo()
    assert list((tmp_path / "logs").iterdir()) == []  # no log, no snn_results.json, no temporary file


# ---------------------------------------------------------------------------------------------
# The 6 SNN scripts: bad input (one line on stderr, exit 2) and real runs


@pytest.fixture(scope="module")
def parameter_files(tmp_path_factory):
    """{(model, k): model dir holding a random §6 file}; k = -1 is full precision."""
    root = tmp_path_factory.mktemp("parameter_files")
    files = {}
    for model in MODELS:
        for k in (-1, 0, 1, 2):
            model_dir = root / f"{model}_{k}"
            write_parameters(model_dir / models.PARAMETERS_FILE, random_parameters(model, k, seed=k + 5))
            files[model, k] = model_dir
    return files


def broken_file(source_dir, target_dir, **changes):
    with np.load(source_dir / models.PARAMETERS_FILE, allow_pickle=False) as archive:
        arrays = {name: archive[name] for name in archive.files}
    for name, value in changes.items():
        if value is None:
            del arrays[name]
        else:
            arrays[name] = value
    target_dir.mkdir(parents=True)
    np.savez(target_dir / models.PARAMETERS_FILE, **arrays)
    return target_dir


BAD_INPUT_CASES = ["missing file", "other model", "full precision", "other k", "missing array", "wrong shape",
                   "non-positive variance", "zero gamma", "time steps 0", "time steps not a number", "batch size 0",
                   "test limit 0", "unwritable log dir", "time steps beyond int32", "a log file that is a folder"]


def bad_input(case, model, k, parameter_files, tmp_path):
    """(extra argv, model dir, log dir, expected fragment of the error line)."""
    own, log_dir, extra = parameter_files[model, k], tmp_path / "logs", []
    first = ARCHITECTURES[model][0].name
    if case == "missing file":
        own, fragment = tmp_path / "empty", "parameter file not found"
    elif case == "other model":
        other = "mlp" if model == "lenet" else "lenet"
        own, fragment = parameter_files[other, k], f"holds a {other} model, expected {model}"
    elif case == "full precision":
        own, fragment = parameter_files[model, -1], f"holds precision full, expected k{k}"
    elif case == "other k":
        own, fragment = parameter_files[model, (k + 1) % 3], f"expected k{k}"
    elif case == "missing array":
        own, fragment = broken_file(own, tmp_path / "m", bn1_var=None), "missing array 'bn1_var'"
    elif case == "wrong shape":
        own, fragment = broken_file(own, tmp_path / "m", **{f"{first}_kernel": np.zeros((3, 3), np.float32)}), \
            f"array '{first}_kernel' has shape (3, 3)"
    elif case == "non-positive variance":
        var = np.load(own / models.PARAMETERS_FILE, allow_pickle=False)["bn2_var"].copy()
        var[3] = 0.0
        own, fragment = broken_file(own, tmp_path / "m", bn2_var=var), "bn2_var holds a non-positive variance"
    elif case == "zero gamma":
        gamma = np.load(own / models.PARAMETERS_FILE, allow_pickle=False)["bn1_gamma"].copy()
        gamma[0] = 0.0
        own, fragment = broken_file(own, tmp_path / "m", bn1_gamma=gamma), "bn1_gamma holds a zero"
    elif case == "time steps 0":
        extra, fragment = ["--time-steps", "0"], "--time-steps: expected an integer from 1"
    elif case == "time steps not a number":
        extra, fragment = ["--time-steps", "abc"], "--time-steps: expected an integer from 1 to 2,147,483,647, got 'abc'"
    elif case == "batch size 0":
        extra, fragment = ["--batch-size", "0"], "--batch-size: expected a positive integer"
    elif case == "test limit 0":
        extra, fragment = ["--test-limit", "0"], "--test-limit: expected a positive integer"
    elif case == "unwritable log dir":
        (tmp_path / "a_file").write_text("x")
        log_dir, fragment = tmp_path / "a_file" / "logs", "log directory is not writable"
    elif case == "time steps beyond int32":
        extra, fragment = ["--time-steps", str(2**31)], "--time-steps: expected an integer from 1 to 2,147,483,647"
    elif case == "a log file that is a folder":
        (log_dir / "spike_num.txt").mkdir(parents=True)
        fragment = "spike_num.txt: is a folder; cannot write the log there"
    return extra, own, log_dir, fragment


@pytest.mark.parametrize("model,precision", SNN_CASES)
@pytest.mark.parametrize("case", BAD_INPUT_CASES)
def test_snn_script_bad_input(case, model, precision, parameter_files, frame_data, tmp_path, capsys, monkeypatch):
    """The thin script itself, run as __main__ in this interpreter (its errors happen before any work)."""
    k = int(precision[1])
    extra, model_dir, log_dir, fragment = bad_input(case, model, k, parameter_files, tmp_path)
    script = script_paths(model, precision)["snn"]
    argv = [script, "--data", str(frame_data), "--model-dir", str(model_dir), "--log-dir", str(log_dir),
            "--time-steps", "3", "--test-limit", "5", "--quiet", *extra]
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(SystemExit) as exit:
        runpy.run_path(str(REPO / script), run_name="__main__")
    assert exit.value.code == 2
    captured = capsys.readouterr()
    assert captured.err.count("\n") == 1 and captured.err.startswith("error: "), captured.err
    assert fragment in captured.err, captured.err
    if case not in ("time steps 0", "time steps not a number", "batch size 0", "test limit 0", "time steps beyond int32"):
        assert str(model_dir if "log" not in case else log_dir) in captured.err
    written = list(log_dir.iterdir()) if log_dir.is_dir() else []
    assert written == ([log_dir / "spike_num.txt"] if case == "a log file that is a folder" else [])  # nothing written


def test_snn_script_bad_input_in_a_fresh_process(parameter_files, frame_data, tmp_path):
    completed = run_script("LeNet/inference_k2_slenet_n_mnist.py", "--data", frame_data, "--model-dir",
                           parameter_files["mlp", 2], "--log-dir", tmp_path / "logs", "--time-steps", "3", "--quiet")
    assert completed.returncode == 2
    assert_one_line_error(completed, "holds a mlp model, expected lenet", str(parameter_files["mlp", 2]))
    assert not (tmp_path / "logs").exists() or not list((tmp_path / "logs").iterdir())


@pytest.mark.parametrize("model,precision", SNN_CASES)
def test_snn_thin_scripts(model, precision, script_runs):
    run = script_runs[model, precision]
    assert run["snn"]["code"] == 0, run["stdout"][-3000:] + run["stderr"][-3000:]
    assert "Traceback" not in run["snn"]["stderr"]
    assert run["snn"]["stderr"].strip() == ""  # --quiet: no progress bar, and none of TensorFlow's notices
    assert not any(pattern in run["stderr"] for pattern in NOTICE_PATTERNS), run["stderr"]  # train and ANN too
    assert f"SNN {model} {precision}: final accuracy" in run["snn"]["stdout"]
    logs = read_log_files(run["log_dir"])
    assert all(len(values) == 10 for values in logs.values())  # 20 samples: one batch x 10 steps
    for name in ("spike_num.txt", "spike_collect.txt", "sop_num.txt"):
        assert logs[name] == sorted(logs[name]) or name == "spike_collect.txt"  # cumulative
    assert all(0 <= value <= 20 for value in logs["accuracy.txt"])
    results = json.loads((run["log_dir"] / "snn_results.json").read_text())
    assert SNN_RESULT_KEYS <= set(results)
    assert (results["n_test"], results["time_steps"], len(results["accuracy_per_step"])) == (20, 10, 10)
    assert results["final_accuracy"] == logs["accuracy.txt"][-1] / 20
    assert results["ann_ops_per_sample"] == {"lenet": 7_535_808, "mlp": 492_000}[model]
    assert results["data"].endswith("tiny_n_mnist.npz")  # named for the figures' titles
    assert sorted(p.name for p in run["log_dir"].iterdir()) == sorted([*LOG_FILES, "snn_results.json"])
    assert MODEL_FOLDERS[model] in script_paths(model, precision)["snn"]


def test_too_few_time_steps_are_reported_even_without_the_lossless_check(frame_data, frames, tmp_path, capsys):
    write_parameters(tmp_path / models.PARAMETERS_FILE, random_parameters("mlp", 2, seed=4, frames=frames[2]))
    short = evaluation.evaluate_snn("mlp", "k2", frame_data, tmp_path, tmp_path / "short", time_steps=1,
                                    test_limit=20, progress=False)
    assert short["samples_still_spiking_at_the_last_step"] > 0
    assert f"{short['samples_still_spiking_at_the_last_step']} of 20 samples were still spiking at step 1" in \
        capsys.readouterr().out
    settled = evaluation.evaluate_snn("mlp", "k2", frame_data, tmp_path, tmp_path / "long", time_steps=200,
                                      test_limit=20, progress=False)
    assert settled["samples_still_spiking_at_the_last_step"] == 0 and "still spiking" not in capsys.readouterr().out
    written = json.loads((tmp_path / "short" / "snn_results.json").read_text())
    assert written["samples_still_spiking_at_the_last_step"] == short["samples_still_spiking_at_the_last_step"]


def test_snn_results_json_is_renamed_after_the_four_logs(tmp_path, monkeypatch):
    import os

    renamed = []
    real_replace = os.replace
    monkeypatch.setattr(os, "replace", lambda source, target: (renamed.append(Path(target).name),
                                                               real_replace(source, target)))
    write_logs(tmp_path, log_columns(random_result(5, 3), np.zeros(5, dtype=int)), extra_files={"snn_results.json": "{}\n"})
    assert sorted(renamed[:4]) == sorted(LOG_FILES) and renamed[4:] == ["snn_results.json"]


# ---------------------------------------------------------------------------------------------
# Found by mutation testing: behaviour no other test pinned down


def test_a_deficit_inside_the_negative_spike_tolerance_fires_nothing():
    """theta = 0.01: the -1e-5 tolerance is 1e-3 threshold units, far wider than float32's window.
    Layer 2 unit 0 gets +1.9995 theta at step 0 (spikes) and -0.5 theta more at step 1, which leaves
    d = -5e-6: no negative spike (§4 step 5), so it keeps its count of 1 while q_k rounds 0.4995 to 0,
    a 1e-5 / theta rounding tie that the lossless check must excuse."""
    params = crafted_mlp(0, layer1=[(0, 0, 1.0), (1, 1, 1.0)], layer2=[(0, 0, 0.019995), (1, 0, -0.005)],
                         out=[(0, 2, 1.0)], bn2={("gamma", 0): 100.0, ("mean", 0): 0.005})
    frames, labels = frames_with([{0: 1.2, 1: 2.2}]), np.array([2])
    network = convert(params)
    result = simulate(network, frames, 6, keep_counts=True, progress=False)
    check = lossless.check(result, network, frames)
    assert result.final_counts[1][0, 0] == 1
    ours = {name: values.reshape(-1).tolist() for name, values in log_columns(result, labels).items()}
    assert ours == reference_logs(params, frames, labels, 6)
    assert (check.neuron_mismatches[0], check.tie_mismatches[0], check.other_mismatches[0]) == (1, 1, 0)


def test_near_ties_re_decided_in_float64_are_counted_as_ties():
    """Weight 0.5 + 1e-12: d exceeds theta by 1e-12 to 5e-12 at steps 0, 2, 4, which float32 cannot see."""
    params = crafted_mlp(0, layer1=[(1, 1, 1.0)], layer2=[(1, 0, 0.5 + 1e-12)], out=[(0, 1, 1.0)])
    result = simulate(convert(params), frames_with([{1: 5.2}]), 8, keep_counts=True, progress=False)
    assert result.final_counts[1][0, 0] == 3
    assert result.float64_decisions["changed"] == 3 and result.float64_decisions["ties"] == 3
    # and at the negative threshold (S36): after its +1 spike at step 0, d = -1e-5 + 1e-12 at step 1
    params = crafted_mlp(0, layer1=[(0, 0, 1.0), (1, 1, 1.0)], layer2=[(0, 0, 1 - 1e-5 + 1e-12), (1, 0, -0.25)],
                         out=[(0, 1, 1.0)])
    result = simulate(convert(params), frames_with([{0: 1.2, 1: 2.2}]), 6, keep_counts=True, progress=False)
    assert result.final_counts[1][0, 0] == 1
    assert result.float64_decisions["ties"] == 1


def test_float64_decision_counts_do_not_depend_on_the_pool():
    """Sample 0 ends (silent) at step 1 with layer-2 unit 0 exactly at its threshold (a close call at every
    step); sample 1 keeps its pool running for 20 steps. Its idle row must not be counted again."""
    params = crafted_mlp(0, layer1=[(0, 0, 1.0), (1, 1, 1.0)], layer2=[(0, 0, 0.5), (1, 1, 0.5)],
                         out=[(1, 1, 1.0)])
    frames = frames_with([{0: 1.2}, {1: 20.2}])
    network = convert(params)
    together = simulate(network, frames, 30, pool_size=2, workers=1, progress=False).float64_decisions
    alone = [simulate(network, frames[i:i + 1], 30, pool_size=1, workers=1, progress=False).float64_decisions
             for i in range(2)]
    assert together == {kind: alone[0][kind] + alone[1][kind] for kind in together}
    assert alone[0]["close_calls"] >= 1


def test_the_batch_size_flag_groups_the_log_lines(frame_data, tmp_path, make_params):
    write_parameters(tmp_path / "model" / models.PARAMETERS_FILE, make_params("mlp", 0, seed=3))
    results = evaluation.evaluate_snn("mlp", "k0", frame_data, tmp_path / "model", tmp_path / "logs", time_steps=4,
                                      batch_size=7, test_limit=20, progress=False)
    assert results["batch_size"] == 7
    assert len((tmp_path / "logs" / "accuracy.txt").read_text().splitlines()) == 3 * 4  # batches of 7, 7, 6
    log = read_logs(tmp_path / "logs")
    assert (log.n_batches, log.n_test) == (3, 20) and log.final_accuracy == results["final_accuracy"]


@pytest.mark.parametrize("case", ["unwritable folder", "snn_results.json is a folder"])
def test_a_log_dir_that_cannot_take_the_logs_is_refused_before_the_simulation(case, frame_data, tmp_path, make_params,
                                                                               monkeypatch):
    write_parameters(tmp_path / "model" / models.PARAMETERS_FILE, make_params("mlp", 0, seed=3))
    if case == "unwritable folder":
        (tmp_path / "a_file").write_text("x")
        log_dir, fragment = tmp_path / "a_file" / "logs", "log directory is not writable"
    else:
        log_dir, fragment = tmp_path / "logs", "snn_results.json: is a folder; cannot write the log there"
        (log_dir / evaluation.SNN_RESULTS_FILE).mkdir(parents=True)
    monkeypatch.setattr(snn_engine, "simulate",
                        lambda *args, **kwargs: pytest.fail("simulated before the log folder was checked"))
    with pytest.raises(UserError, match=fragment):
        evaluation.evaluate_snn("mlp", "k0", frame_data, tmp_path / "model", log_dir, time_steps=5, test_limit=10,
                                progress=False)


# the four logs and snn_results.json are renamed together: an interruption while writing any
# one of the five files leaves every file of the earlier run as it was
@pytest.mark.parametrize("nth", range(1, 6))
def test_evaluate_snn_interrupted_at_any_file_keeps_the_earlier_run(nth, frame_data, tmp_path, make_params,
                                                                      monkeypatch):
    write_parameters(tmp_path / "model" / models.PARAMETERS_FILE, make_params("mlp", 0, seed=3))
    log_dir = tmp_path / "logs"
    log_dir.mkdir()
    old = {name: f"old {name}\n" for name in (*LOG_FILES, evaluation.SNN_RESULTS_FILE)}
    for name, text in old.items():
        (log_dir / name).write_text(text)
    calls = fail_on_write(monkeypatch, nth, KeyboardInterrupt())
    with pytest.raises(KeyboardInterrupt):
        evaluation.evaluate_snn("mlp", "k0", frame_data, tmp_path / "model", log_dir, time_steps=5,
                                test_limit=10, progress=False)
    monkeypatch.undo()
    assert len(calls) == nth
    assert {path.name: path.read_text() for path in log_dir.iterdir()} == old


# the final accuracy is the last step's, even when an earlier step was better
def test_the_final_accuracy_is_the_last_steps_not_the_best():
    columns = {"accuracy.txt": np.array([[1, 3, 2]]), "spike_num.txt": np.array([[2, 4, 4]]),
               "spike_collect.txt": np.array([[2, 2, 2]]), "sop_num.txt": np.array([[0, 5, 9]])}
    summary = evaluation.summarize_logs(columns, 4, 3, "mlp", 1, 50)
    assert summary["final_accuracy"] == 0.5 and summary["accuracy_per_step"] == [0.25, 0.75, 0.5]
    assert summary["steps_to_final"] == 3


# --time-steps 2**31 - 1 (MAX_TIME_STEPS) itself is allowed; only beyond is refused
def test_the_largest_time_steps_value_is_accepted(frame_data, tmp_path, make_params, monkeypatch):
    write_parameters(tmp_path / "model" / models.PARAMETERS_FILE, make_params("mlp", 0, seed=3))

    class Simulated(Exception):
        pass

    def simulate(network, x, time_steps, **kwargs):
        assert time_steps == MAX_TIME_STEPS
        raise Simulated

    monkeypatch.setattr(snn_engine, "simulate", simulate)
    with pytest.raises(Simulated):
        evaluation.evaluate_snn("mlp", "k0", frame_data, tmp_path / "model", tmp_path / "logs",
                                time_steps=MAX_TIME_STEPS, test_limit=5, progress=False)


# the printed line gives the final accuracy in percent and the step from which it holds
def test_the_printed_final_accuracy_and_steps(frame_data, frames, tmp_path, capsys):
    write_parameters(tmp_path / models.PARAMETERS_FILE, random_parameters("mlp", 2, seed=4, frames=frames[2]))
    log_dir, time_steps = tmp_path / "logs", 200
    evaluation.evaluate_snn("mlp", "k2", frame_data, tmp_path, log_dir, time_steps=time_steps, test_limit=20,
                            progress=False)
    accuracy = [int(line) / 20 for line in (log_dir / "accuracy.txt").read_text().splitlines()]  # one batch
    final = accuracy[-1]
    steps = next(t + 1 for t in range(time_steps) if all(a == final for a in accuracy[t:]))
    assert steps < time_steps  # so that the step count is not the number of steps by chance
    assert (f"SNN mlp k2: final accuracy {100 * final:.2f}% after {steps} of {time_steps} steps; "
            f"logs in {log_dir}") in capsys.readouterr().out


# the lossless line puts every count and share in its place
def test_the_lossless_line_reports_each_count_and_share():
    report = {"mismatching_neurons": 12, "mismatching_neuron_share": 12 / 8000, "samples_with_mismatching_neurons": 3,
              "samples_with_mismatching_neurons_share": 3 / 40, "rounding_tie_neurons": 2,
              "downstream_of_ties_neurons": 4, "samples_still_spiking_at_the_last_step": 2, "unsettled_neurons": 5,
              "other_mismatching_neurons": 1, "mismatching_predictions": 1, "mismatching_prediction_share": 1 / 40,
              "first_step_all_predictions_match": None}
    assert lossless.summary(report, 40) == (
        "lossless check: 12 neurons (0.1500%, in 3 samples, 7.50%) differ from 2^k x the quantized ANN: "
        "2 at rounding ties of their own (§3), 4 downstream of those, 5 in the 2 samples still spiking "
        "at the last step (not settled: more --time-steps), 1 otherwise; 1 of 40 predictions differ (2.50%); "
        "the predictions never all match")
    report.update(samples_still_spiking_at_the_last_step=0, unsettled_neurons=0, mismatching_predictions=0,
                  mismatching_prediction_share=0.0, first_step_all_predictions_match=17)
    assert lossless.summary(report, 40).endswith(
        "4 downstream of those, 1 otherwise; 0 of 40 predictions differ (0.00%); all predictions match from step 17")
