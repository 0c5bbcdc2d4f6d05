"""The authors' N-MNIST results (ALGORITHM.md §7) and Fashion-MNIST results (§8), quoted beside ours in RESULTS.md.

From the authors' README and their own SNN logs: full N-MNIST, 150 epochs, T = 40, 10,000 test
samples. Accuracies are fractions; "steps" is the first step, from 1, from which the SNN accuracy
stays at its final value; spikes and SOPs are per sample at the last step. None where the paper
gives no number: no SNN at full precision, no ANN accuracy at k = 0 and k = 2.
"""
FIELDS = ("ann", "snn", "steps", "positive", "negative", "sops")

ROWS = [
    # model   precision  ANN     SNN     steps  positive   negative  SOPs
    ("mlp",   "full",    0.9643, None,   None,  None,      None,     None),
    ("mlp",   "k0",      None,   0.9639, 4,     380.9,     17.1,     68_648),
    ("mlp",   "k1",      0.9658, 0.9658, 9,     767.8,     76.0,     125_411),
    ("mlp",   "k2",      None,   0.9674, 14,    1_573.6,   211.2,    246_081),
    ("lenet", "full",    0.9793, None,   None,  None,      None,     None),
    ("lenet", "k0",      None,   0.9780, 8,     14_540.9,  2_778.3,  2_022_864),
    ("lenet", "k1",      0.9786, 0.9786, 14,    28_797.4,  7_120.8,  3_926_794),
    ("lenet", "k2",      None,   0.9751, 13,    25_864.6,  6_309.3,  3_611_154),
]

# {(model, precision): {field: value}}, in §7's order
PAPER_RESULTS = {(model, precision): dict(zip(FIELDS, values)) for model, precision, *values in ROWS}

# Fashion-MNIST (§8, the authors' README): 10,000 test images; LeNet 100 epochs, T = 20; MLP 150 epochs, T = 40.
# The authors give no spike or SOP counts for it, and results at full precision and k = 1 only.
FASHION_ROWS = [
    # model   precision  ANN     SNN     steps  positive  negative  SOPs
    ("mlp",   "full",    0.8983, None,   None,  None,     None,     None),
    ("mlp",   "k1",      0.8879, 0.8879, 11,    None,     None,     None),
    ("lenet", "full",    0.9001, None,   None,  None,     None,     None),
    ("lenet", "k1",      0.8999, 0.8999, 17,    None,     None,     None),
]
FASHION_PAPER_RESULTS = {(model, precision): dict(zip(FIELDS, values)) for model, precision, *values in FASHION_ROWS}

# {dataset: {(model, precision): {field: value}}}; the section of ALGORITHM.md each comes from
PAPER_RESULTS_BY_DATASET = {"n_mnist": PAPER_RESULTS, "fashion_mnist": FASHION_PAPER_RESULTS}
PAPER_SECTIONS = {"n_mnist": "§7", "fashion_mnist": "§8"}
