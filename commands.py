"""The command lines of the per-model scripts: flags are parsed before TensorFlow is imported.

So `--help` and a bad flag answer at once; the work (training.py, evaluation.py) is imported only
when there is work to do, through cli.import_tensorflow, which keeps TensorFlow's start-up notices
off the terminal.

    python LeNet/training_k1_lenet_n_mnist.py --data data/n_mnist_demo.npz     # train
    python LeNet/inference_k1_lenet_n_mnist.py --data data/n_mnist_demo.npz    # ANN test accuracy
    python LeNet/inference_k1_slenet_n_mnist.py --data data/n_mnist_demo.npz   # SNN logs
    python FashionMNIST/LeNet/training_k1_lenet_fashion_mnist.py                # data/fashion_mnist.npz

Each entry point takes the script's dataset ("n_mnist", the default, or "fashion_mnist"): the defaults of
--data, --epochs and --time-steps, and the folders, are that dataset's (architectures.DATASETS).
"""
from pathlib import Path

import data_sources
import paths
from architectures import BATCH_SIZE, ENGINES, LEARNING_RATE, MAX_TIME_STEPS, SEED, TIE_RULES, check_dataset
from cli import (TF_NOTICES_HELP, ArgumentParser, import_tensorflow, non_negative_int, number_type, positive_float,
                 positive_int, run_main, shown)
from log_format import LOG_BATCH_SIZE


time_steps_type = number_type(int, lambda value: 1 <= value <= MAX_TIME_STEPS, f"an integer from 1 to {MAX_TIME_STEPS:,}")


def common_flags(parser, model, precision, dataset):
    default_data = data_sources.default_data(dataset)
    what = "frame dataset" if dataset == "n_mnist" else f"{check_dataset(dataset).title} dataset file"
    parser.add_argument("--data", type=Path, default=default_data, help=f"{what} (default: {shown(default_data)})")
    parser.add_argument("--model-dir", type=Path, default=None,
                        help=f"folder of {paths.parameters_file(dataset)} "
                             f"(default: {shown(paths.model_dir(model, precision, dataset=dataset))}/)")


def training_args(model, precision, argv=None, dataset="n_mnist"):
    inputs = "N-MNIST frames (ALGORITHM.md §2)" if dataset == "n_mnist" else f"{check_dataset(dataset).title} (ALGORITHM.md §8)"
    parser = ArgumentParser(description=f"Train {model} at precision {precision} on {inputs}.", epilog=TF_NOTICES_HELP)
    common_flags(parser, model, precision, dataset)
    parser.add_argument("--epochs", type=positive_int, default=check_dataset(dataset).epochs[model],
                        help="total epochs (default: %(default)s)")
    parser.add_argument("--batch-size", type=positive_int, default=BATCH_SIZE, help="default: %(default)s")
    parser.add_argument("--lr", type=positive_float, default=LEARNING_RATE, help="Adam learning rate (default: %(default)s)")
    parser.add_argument("--seed", type=non_negative_int, default=SEED, help="default: %(default)s")
    parser.add_argument("--resume", action="store_true", help="continue an interrupted run from its last finished epoch")
    parser.add_argument("--train-limit", type=positive_int, default=None, metavar="N", help="use the first N training samples")
    parser.add_argument("--test-limit", type=positive_int, default=None, metavar="N",
                        help="accepted for symmetry with the inference scripts; training reads no test data")
    return parser.parse_args(argv)


def evaluation_args(model, precision, spiking, argv=None, dataset="n_mnist"):
    kind = "spiking network converted from" if spiking else "ANN"
    parser = ArgumentParser(description=f"Evaluate the {kind} {model} at precision {precision} on the "
                                        f"{check_dataset(dataset).title} test set.", epilog=TF_NOTICES_HELP)
    common_flags(parser, model, precision, dataset)
    parser.add_argument("--test-limit", type=positive_int, default=None, metavar="N", help="use the first N test samples")
    if spiking:
        parser.add_argument("--log-dir", type=Path, default=None,
                            help=f"where the logs go (default: {shown(paths.log_dir(model, precision, dataset=dataset))}/)")
        parser.add_argument("--time-steps", type=time_steps_type, default=check_dataset(dataset).time_steps[model],
                            help="T (default: %(default)s)")
        parser.add_argument("--batch-size", type=positive_int, default=LOG_BATCH_SIZE,
                            help="samples per log line group (default: %(default)s, the authors' batch)")
        parser.add_argument("--check-lossless", action="store_true",
                            help="compare every neuron's spike count with 2**k x the quantized ANN activation")
        parser.add_argument("--quiet", action="store_true", help="no progress bar")
        parser.add_argument("--engine", choices=ENGINES, default=ENGINES[0],
                            help="fast (snn_engine.py) or reference: the plain float64 simulator of spiking_utils.py, "
                                 "much slower, with identical logs (default: %(default)s)")
        parser.add_argument("--tie-rule", choices=TIE_RULES, default=TIE_RULES[0],
                            help="paper: the authors' spike rule; exact: ours, which settles at 2**k x q_k "
                                 "for every input, rounding ties included (docs/tie_rule.md; default: %(default)s)")
    return parser.parse_args(argv)


def check_inputs(model, precision, args, dataset="n_mnist"):
    """The parameter file and the data exist: checked before TensorFlow is imported, so a typo answers at once."""
    paths.check_parameter_file((args.model_dir or paths.model_dir(model, precision, dataset=dataset))
                               / paths.parameters_file(dataset))
    data_sources.check_data_file(args.data, dataset)


def train(model, precision, argv=None, dataset="n_mnist"):
    """Entry point of the thin training scripts."""

    def run(argv):
        args = training_args(model, precision, argv, dataset)
        data_sources.check_data_file(args.data, dataset)
        import_tensorflow()
        import training

        history = training.train(model, precision, data=args.data, model_dir=args.model_dir, epochs=args.epochs,
                                 batch_size=args.batch_size, learning_rate=args.lr, seed=args.seed,
                                 resume=args.resume, train_limit=args.train_limit, dataset=dataset)
        last = history[-1]
        print(f"epoch {last['epoch']}: loss {last['loss']:.4f}, train accuracy {100 * last['accuracy']:.2f}%")

    return run_main(run, argv)


def evaluate_ann(model, precision, argv=None, dataset="n_mnist"):
    """Entry point of the thin ANN inference scripts."""

    def run(argv):
        args = evaluation_args(model, precision, spiking=False, argv=argv, dataset=dataset)
        check_inputs(model, precision, args, dataset)
        import_tensorflow()
        import evaluation

        evaluation.evaluate_ann(model, precision, args.data, args.model_dir, args.test_limit, dataset=dataset)

    return run_main(run, argv)


def evaluate_snn(model, precision, argv=None, dataset="n_mnist"):
    """Entry point of the thin SNN inference scripts."""

    def run(argv):
        args = evaluation_args(model, precision, spiking=True, argv=argv, dataset=dataset)
        check_inputs(model, precision, args, dataset)
        import_tensorflow()
        import evaluation
        import snn_engine

        snn_engine.configure_threads()
        evaluation.evaluate_snn(model, precision, args.data, args.model_dir, args.log_dir, args.time_steps,
                                args.batch_size, args.test_limit, args.check_lossless, progress=not args.quiet,
                                engine=args.engine, tie_rule=args.tie_rule, dataset=dataset)

    return run_main(run, argv)
