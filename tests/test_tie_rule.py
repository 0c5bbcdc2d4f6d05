"""The exact tie rule (docs/tie_rule.md): the settled spike count equals 2**k x q_k(a) for every input.

The paper's rule misses in two windows: a scaled activation within 1e-5 below a half-integer, and
the negative-spike tolerance's window, whose width depends on theta. Constructed inputs put a
neuron in each, for k = 0, 1, 2; both engines must give the paper's rule's miss and the exact
rule's hit. Then a property over random networks and inputs, and the two engines compared.
"""
import numpy as np
import pytest

from conftest import random_parameters
from lossless import quantized_ann
from snn_engine import simulate
from architectures import TIE_RULES
from log_format import log_columns
from spiking_utils import convert, simulate_reference
from test_snn import crafted_mlp, frames_with

KS = (0, 1, 2)
ENGINES = {"fast": simulate, "reference": simulate_reference}


def settled_counts(params, frames, tie_rule, engine, time_steps=60):
    result = ENGINES[engine](convert(params, tie_rule), frames, time_steps, keep_counts=True, progress=False)
    assert not result.still_spiking.any()
    return result.final_counts


def window_1(k):
    """Layer 1, unit 0: x = 2**k BN(z) = 2.5 - 5e-6, 5e-6 below a half-integer. theta = 1, no overshoot."""
    params = crafted_mlp(k, layer1=[(0, 0, 1.0)], out=[(0, 1, 1.0)])
    return params, frames_with([{0: (2.5 - 5e-6) / 2**k}]), (0, 0)


def negative_spike_window(k, gamma, final):
    """Layer 2, unit 0, theta = 1 / gamma: its input rises to x = 1.5, so it fires, then falls to x =
    `final`, so it may have to take a spike back. Layer-1 unit 0 fires 2**k spikes (steps 0 .. 2**k - 1)
    and unit 1 2**(k+1); with weights w0, w1 the membrane peaks at 2**k (w0 + w1) and ends at
    2**k w0 + 2**(k+1) w1. sigma 1, mean 0, beta 0, so mem = x / gamma."""
    peak, end = 1.5 / gamma, final / gamma
    w1 = (end - peak) / 2**k
    w0 = (2 * peak - end) / 2**k
    params = crafted_mlp(k, layer1=[(0, 0, 1.0), (1, 1, 1.0)], layer2=[(0, 0, w0), (1, 0, w1)], out=[(0, 2, 1.0)],
                         bn2={("gamma", 0): gamma})
    return params, frames_with([{0: 1.0, 1: 2.0}]), (1, 0)


WINDOWS = {
    # x = 2.5 - 5e-6: q_k rounds x + 1e-5 up to 3; the paper's neuron, climbing, stops at 2
    "1e-5 below a half-integer": window_1,
    # theta = 0.01: the neuron keeps its spike down to x = 0.5 - 1e-5 / theta = 0.499; q_k gives 0 below 0.49999
    "negative-spike window, small theta": lambda k: negative_spike_window(k, gamma=100.0, final=0.4995),
    # theta = 100: it gives its spike back below x = 0.5 - 1e-7; q_k keeps 1 down to 0.49999
    "negative-spike window, large theta": lambda k: negative_spike_window(k, gamma=0.01, final=0.5 - 5e-6),
}


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("window", WINDOWS)
@pytest.mark.parametrize("k", KS)
def test_the_paper_rule_misses_each_window_and_the_exact_rule_hits_it(k, window, engine):
    params, frames, (layer, unit) = WINDOWS[window](k)
    ann_counts, _ = quantized_ann(params, frames)
    expected = ann_counts[layer][0, unit]
    paper = settled_counts(params, frames, "paper", engine)
    exact = settled_counts(params, frames, "exact", engine)
    assert abs(paper[layer][0, unit] - expected) == 1  # one count away: the window
    assert exact[layer][0, unit] == expected
    for exact_layer, ann_layer in zip(exact, ann_counts):  # and every other neuron too
        np.testing.assert_array_equal(exact_layer, ann_layer)


@pytest.mark.parametrize("model", ["lenet", "mlp"])
@pytest.mark.parametrize("k", KS)
def test_under_the_exact_rule_every_settled_count_is_the_quantized_activation(model, k, frames):
    """Random networks (both gamma signs) on the test frames, which are ON counts / 32 (the grid of real
    N-MNIST inputs), and on continuous random inputs: not one neuron differs from 2**k q_k."""
    rng = np.random.default_rng(10 + k)
    grid = frames[2][:30]
    continuous = rng.uniform(0.0, 0.6, (10, 34, 34, 1)) * (rng.random((10, 34, 34, 1)) < 0.3)
    for seed, inputs in ((k, grid), (k + 50, continuous)):
        params = random_parameters(model, k, seed=seed, frames=frames[2])
        counts = settled_counts(params, inputs, "exact", "fast", time_steps=200)
        ann_counts, _ = quantized_ann(params, inputs)
        for layer, (snn_layer, ann_layer) in enumerate(zip(counts, ann_counts), start=1):
            assert (snn_layer != ann_layer).sum() == 0, f"layer {layer}"
        assert max(int(layer.max()) for layer in counts) >= 2  # it spikes


@pytest.mark.parametrize("tie_rule", TIE_RULES)
@pytest.mark.parametrize("model", ["lenet", "mlp"])
def test_both_engines_agree_under_both_rules(model, tie_rule, frames):
    x, y = frames[2][:40], frames[3][:40]
    params = random_parameters(model, 1, seed=77, frames=frames[2])
    fast = simulate(convert(params, tie_rule), x, 40, pool_size=13, progress=False)
    reference = simulate_reference(convert(params, tie_rule), x, 40, progress=False)
    for name, values in log_columns(fast, y).items():
        np.testing.assert_array_equal(values, log_columns(reference, y)[name], err_msg=name)
