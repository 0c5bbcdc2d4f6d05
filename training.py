"""Train a (quantized-activation) LeNet or MLP on N-MNIST frames or Fashion-MNIST images (ALGORITHM.md §2, §8).

Adam 1e-4, batch 200, the dataset's epochs, data reshuffled every epoch: build, compile, fit. After every
epoch checkpointing.py writes a resumable checkpoint, `model_<dataset>.npz` (§6) and
`training_log.csv`, so an interrupted run carries on with --resume.

    python LeNet/training_k1_lenet_n_mnist.py --data data/n_mnist_demo.npz
    python LeNet/training_k1_lenet_n_mnist.py --data data/n_mnist_demo.npz --resume
"""
import gc
import math
import sys
from pathlib import Path

import keras
import numpy as np

import checkpointing
import models
import paths
import data_sources
from architectures import EPOCHS, BATCH_SIZE, LEARNING_RATE, SEED, check_dataset, precision_to_k  # noqa: F401 (training.EPOCHS: N-MNIST's, read by the benchmarks)
from cli import UserError
from paths import ANN_RESULTS_FILE


def epoch_order(n_samples, seed, epoch):
    """The sample order of one epoch; it depends only on (seed, epoch), so resumed runs match."""
    return np.random.default_rng([seed, epoch]).permutation(n_samples)


def shuffled_batches(x, y, batch_size, seed, first_epoch, epochs):
    """Yield the training batches of epochs first_epoch .. epochs-1, reshuffled every epoch.

    x: (N, *input shape), y: (N,). A plain generator: Keras consumes it in order, epoch after epoch,
    so a run resumed at epoch e sees exactly the batches an uninterrupted run would have seen.
    """
    for epoch in range(first_epoch, epochs):
        order = epoch_order(len(x), seed, epoch)
        for start in range(0, len(x), batch_size):
            rows = order[start : start + batch_size]
            yield x[rows], y[rows]


def train(model, precision, data=None, model_dir=None, epochs=None, batch_size=BATCH_SIZE,
          learning_rate=LEARNING_RATE, seed=SEED, resume=False, train_limit=None, verbose="auto", callbacks=(),
          dataset="n_mnist"):
    """Train `model` at `precision` on `dataset` and return the training history rows (one dict per epoch).

    `data` and `epochs` default to the dataset's (data_sources.default_data, architectures.DATASETS);
    `callbacks`: extra Keras callbacks (reproduce.py's progress line).
    """
    k = precision_to_k(precision)
    epochs = check_dataset(dataset).epochs[model] if epochs is None else epochs
    data = data or data_sources.default_data(dataset)
    model_dir = Path(model_dir or paths.model_dir(model, precision, dataset=dataset))
    x_train, y_train, _, _ = data_sources.load_inputs(data, dataset, train_limit=train_limit, test_limit=0)
    keras.utils.set_random_seed(seed)
    settings = checkpointing.run_settings(batch_size, learning_rate, seed, x_train, y_train)
    checkpointing.make_model_dir(model_dir)

    if resume:
        keras_model, history = checkpointing.resume_run(model_dir, model, precision, k, epochs, settings, dataset)
        if len(history) == epochs:
            checkpointing.write_outputs(model_dir, keras_model, model, k, history, dataset)
            return history
    else:
        checkpointing.clear_earlier_run(model_dir, dataset)
        keras_model = models.build_model(model, k, dataset)
        keras_model.compile(
            optimizer=keras.optimizers.Adam(learning_rate),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            metrics=["accuracy"],
        )
        history = []
    # The evaluation of earlier parameters does not describe the ones this run writes.
    checkpointing.remove_files([model_dir / ANN_RESULTS_FILE])

    first_epoch = len(history)
    batches = shuffled_batches(x_train, y_train, batch_size, seed, first_epoch, epochs)
    checkpoint = checkpointing.EpochCheckpoint(model_dir, model, k, history, settings, probe_x=x_train[:batch_size],
                                             dataset=dataset)
    if verbose == "auto":
        verbose = 1 if sys.stdout.isatty() else 2
    keras_model.fit(batches, epochs=epochs, initial_epoch=first_epoch, verbose=verbose, shuffle=False,
                    steps_per_epoch=math.ceil(len(x_train) / batch_size),
                    callbacks=[keras.callbacks.TerminateOnNaN(), checkpoint, *callbacks])

    if checkpoint.bad_loss_epoch is not None:
        del batches
        gc.collect()  # free fit's unfinished dataset iterator now: at exit, TensorFlow complains about it
        bad = checkpoint.bad_loss_epoch
        kept = f"kept the checkpoint of epoch {bad - 1}" if bad > 1 else "no epoch finished, nothing was written"
        raise UserError(f"{model_dir}: the loss or the weights became NaN or infinite in epoch {bad}; {kept} "
                        "(try a smaller --lr)")
    print(f"wrote {model_dir / paths.parameters_file(dataset)}")
    return checkpoint.history_rows
