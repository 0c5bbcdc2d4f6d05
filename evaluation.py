"""Evaluate a trained model: the quantized ANN (Keras) or its spiking conversion (spiking_utils, run by snn_engine).

Both read `model_<dataset>.npz` (§6), so any parameter file in that format can be evaluated.

    python LeNet/inference_k1_lenet_n_mnist.py --data data/n_mnist_demo.npz     # ANN
    python LeNet/inference_k1_slenet_n_mnist.py --data data/n_mnist_demo.npz    # SNN, T = 40
"""
import json
import tempfile
from pathlib import Path

import keras
import numpy as np

import lossless
import models
import paths
import snn_engine
import spiking_utils
import data_sources
from architectures import (ENGINES, MAX_TIME_STEPS, TIE_RULES, ann_ops_per_sample, architecture, check_dataset,
                           precision_to_k)
from cli import UserError, shown, write_text_atomic
from log_format import LOG_BATCH_SIZE, LOG_FILES, log_columns, steps_to_final, write_logs
from paths import ANN_RESULTS_FILE, SNN_RESULTS_FILE

ANN_BATCH_SIZE = 500  # samples per forward pass; any value gives the same results


def load_test_split(data, test_limit, dataset="n_mnist"):
    """(x_test, y_test) of `data`, the first `test_limit`; a note when the split holds fewer samples."""
    _, _, x_test, y_test = data_sources.load_inputs(data, dataset, train_limit=0, test_limit=test_limit)
    if test_limit is not None and test_limit > len(y_test):
        print(f"note: {shown(data)} holds {len(y_test):,} test samples, fewer than --test-limit {test_limit:,}: "
              "using them all")
    return x_test, y_test


def evaluate_ann(model, precision, data=None, model_dir=None, test_limit=None, dataset="n_mnist"):
    """Test accuracy of the ANN in model_dir/model_<dataset>.npz; writes ann_results.json beside it.

    Also records the largest activation of each hidden layer: times 2**k it is the largest spike
    count a neuron of the converted SNN needs, which bounds the time steps it needs.
    """
    k = precision_to_k(precision)
    data = data or data_sources.default_data(dataset)
    model_dir = Path(model_dir or paths.model_dir(model, precision, dataset=dataset))
    params = models.load_parameters(model_dir / paths.parameters_file(dataset), model=model, k=k, dataset=dataset)
    x_test, y_test = load_test_split(data, test_limit, dataset)
    keras_model = models.build_model(model, k, dataset)
    models.assign_parameters(keras_model, params, model, dataset)
    layers = architecture(model, dataset)
    n_hidden = len(layers)
    probe = keras.Model(keras_model.input,
                        [keras_model.get_layer(f"act{i}").output for i in range(1, n_hidden + 1)] + [keras_model.output])
    predictions, largest = [], np.zeros(n_hidden)
    for start in range(0, len(x_test), ANN_BATCH_SIZE):
        *activations, logits = probe(x_test[start : start + ANN_BATCH_SIZE], training=False)
        logits = keras.ops.convert_to_numpy(logits)
        largest = np.maximum(largest, [float(keras.ops.max(a)) for a in activations])
        if not (np.isfinite(logits).all() and np.isfinite(largest).all()):  # argmax of NaNs would still "predict"
            raise UserError(f"{model_dir / paths.parameters_file(dataset)}: the parameters give non-finite outputs "
                            f"(NaN or infinity) on {shown(data)}: a diverged training?")
        predictions.append(np.argmax(logits, axis=1))
    predictions = np.concatenate(predictions)
    results = {"model": model, "precision": precision, "k": k, "accuracy": float(np.mean(predictions == y_test)),
               "n_test": len(y_test),
               "max_activation_per_layer": {layer.name: value for layer, value in zip(layers, largest.tolist())}}
    print(f"test accuracy: {100 * results['accuracy']:.2f}%")
    if k >= 0:  # the quantized ANN as the lossless check computes it, in float64
        float64_predictions = np.concatenate([lossless.quantized_ann(params, x_test[start : start + ANN_BATCH_SIZE])[1]
                                              for start in range(0, len(x_test), ANN_BATCH_SIZE)])
        results["float64_accuracy"] = float(np.mean(float64_predictions == y_test))
        results["float64_disagreements"] = int((float64_predictions != predictions).sum())
        print(f"  in float64 (what the SNN's lossless check compares with): {100 * results['float64_accuracy']:.2f}%; "
              f"{results['float64_disagreements']} of {len(y_test)} predictions differ from Keras' float32 ones "
              "(float32 rounding next to a quantization step)")
    for name, value in results["max_activation_per_layer"].items():
        bound = f" (at most {value * 2**k:.0f} spikes per neuron in the SNN)" if k >= 0 else ""
        print(f"  largest activation after {name}: {value:.4g}{bound}")
    write_text_atomic(model_dir / ANN_RESULTS_FILE, json.dumps(results, indent=1, allow_nan=False) + "\n")
    return results


def check_writable(folder, names=(*LOG_FILES, SNN_RESULTS_FILE)):
    """Fail before a long simulation, not after it, when the log folder or its files cannot be written."""
    try:
        Path(folder).mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as error:
        raise UserError(f"{folder}: log directory is not writable ({error.strerror or error})") from None
    for name in names:
        if (Path(folder) / name).is_dir():
            raise UserError(f"{Path(folder) / name}: is a folder; cannot write the log there")


def summarize_logs(columns, n_test, time_steps, model, k, batch_size, dataset="n_mnist"):
    """snn_results.json from the log columns: per-step accuracy and per-sample counters (§5).

    `model`, `k` and `batch_size` (the log grouping) let the figure scripts check what they read.
    """
    final = {name: int(values[:, -1].sum()) for name, values in columns.items()}
    accuracy = (columns["accuracy.txt"].sum(axis=0) / n_test).tolist()
    return {
        "model": model,
        "k": k,
        "batch_size": batch_size,
        "accuracy_per_step": accuracy,
        "final_accuracy": accuracy[-1],
        "steps_to_final": steps_to_final(accuracy),
        "positive_spikes_per_sample": (final["spike_num.txt"] + final["spike_collect.txt"]) / 2 / n_test,
        "negative_spikes_per_sample": (final["spike_num.txt"] - final["spike_collect.txt"]) / 2 / n_test,
        "sops_per_sample": final["sop_num.txt"] / n_test,
        "ann_ops_per_sample": ann_ops_per_sample(model, dataset),
        "n_test": n_test,
        "time_steps": time_steps,
    }


def simulate(network, frames, time_steps, engine=ENGINES[0], keep_counts=False, progress=True):
    """Run the SNN with `engine`: the fast one, or the plain reference that defines it."""
    if engine == "fast":
        return snn_engine.simulate(network, frames, time_steps, keep_counts=keep_counts, progress=progress)
    if engine == "reference":
        return spiking_utils.simulate_reference(network, frames, time_steps, keep_counts=keep_counts, progress=progress)
    raise ValueError(f"unknown engine {engine!r}; expected one of {', '.join(ENGINES)}")


def evaluate_snn(model, precision, data=None, model_dir=None, log_dir=None,
                 time_steps=None, batch_size=LOG_BATCH_SIZE,
                 test_limit=None, check_lossless=False, progress=True, engine=ENGINES[0], tie_rule=TIE_RULES[0],
                 dataset="n_mnist"):
    """Simulate the converted SNN on the test set; write the four logs and snn_results.json.

    The logs are those of `tie_rule`. The lossless check, if asked for, runs under both rules
    (architectures.TIE_RULES), the other one in a second simulation whose logs are not kept.
    """
    k = precision_to_k(precision)
    data = data or data_sources.default_data(dataset)
    time_steps = check_dataset(dataset).time_steps[model] if time_steps is None else time_steps
    if k < 0:
        raise UserError("the full-precision model has no spiking version (§3)")
    if time_steps < 1 or batch_size < 1:
        raise UserError(f"--time-steps and --batch-size must be at least 1 (got {time_steps} and {batch_size})")
    if time_steps > MAX_TIME_STEPS:
        raise UserError(f"--time-steps must be at most {MAX_TIME_STEPS:,}, got {time_steps:,}")
    model_dir = Path(model_dir or paths.model_dir(model, precision, dataset=dataset))
    log_dir = Path(log_dir or paths.log_dir(model, precision, dataset=dataset))
    params = models.load_parameters(model_dir / paths.parameters_file(dataset), model=model, k=k, quantized_only=True,
                                    dataset=dataset)
    x_test, y_test = load_test_split(data, test_limit, dataset)
    check_writable(log_dir)

    def run(rule):
        network = spiking_utils.convert(params, rule)
        try:
            return network, simulate(network, x_test, time_steps, engine, keep_counts=check_lossless, progress=progress)
        except MemoryError:
            raise UserError(f"not enough memory to simulate {len(x_test):,} samples for {time_steps:,} steps "
                            "(use fewer --time-steps or --test-limit)") from None

    network, result = run(tie_rule)
    columns = log_columns(result, y_test, batch_size)
    results = summarize_logs(columns, len(y_test), time_steps, model, k, batch_size, dataset)
    results["data"] = shown(data)  # what the figures call the dataset
    if dataset != "n_mnist":  # N-MNIST's results stay as they were
        results["dataset"] = dataset
    results["tie_rule"] = tie_rule
    results["samples_still_spiking_at_the_last_step"] = int(result.still_spiking.sum())  # T too short for them
    if check_lossless:
        results["lossless_check"] = {}
        for rule in TIE_RULES:
            rule_network, rule_result = (network, result) if rule == tie_rule else run(rule)
            check = lossless.check(rule_result, rule_network, x_test)
            results["lossless_check"][rule] = lossless.report(rule_result, check, rule_network)
    write_logs(log_dir, columns, extra_files={SNN_RESULTS_FILE: json.dumps(results, indent=1, allow_nan=False) + "\n"})
    print(f"SNN {model} {precision}: final accuracy {100 * results['final_accuracy']:.2f}% "
          f"after {results['steps_to_final']} of {time_steps} steps; logs in {log_dir}")
    if result.float64_decisions:
        decisions = result.float64_decisions
        print(f"float64 re-decisions (fast engine): {decisions['close_calls']:,} close calls, "
              f"{decisions['changed']:,} changed from float32, {decisions['ties']:,} exact ties")
    if results["samples_still_spiking_at_the_last_step"]:
        print(f"note: {results['samples_still_spiking_at_the_last_step']} of {len(y_test)} samples were still spiking "
              f"at step {time_steps}; they have not settled (more --time-steps would let them)")
    if check_lossless:
        for rule, report in results["lossless_check"].items():
            print(f"{rule} tie rule: {lossless.summary(report, len(y_test))}")
    return results
