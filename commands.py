"""The command lines of the per-model scripts: flags are parsed before TensorFlow is imported.

So `--help` and a bad flag answer at once; the work (training.py, evaluation.py) is imported only
when there is work to do, through cli.import_tensorflow, which keeps TensorFlow's start-up notices
off the terminal.

    python LeNet/training_k1_lenet_n_mnist.py --data data/n_mnist_demo.npz     # train
    python LeNet/inference_k1_lenet_n_mnist.py --data data/n_mnist_demo.npz    # ANN test accuracy
    python LeNet/inference_k1_slenet_n_mnist.py --data data/n_mnist_demo.npz   # SNN logs
"""
from pathlib import Path

import paths
from architectures import BATCH_SIZE, ENGINES, EPOCHS, LEARNING_RATE, MAX_TIME_STEPS, SEED, TIE_RULES, TIME_STEPS
from cli import (TF_NOTICES_HELP, ArgumentParser, import_tensorflow, non_negative_int, number_type, positive_float,
                 positive_int, run_main, shown)
from log_format import LOG_BATCH_SIZE
from n_mnist import DEFAULT_DATA, check_data_file


time_steps_type = number_type(int, lambda value: 1 <= value <= MAX_TIME_STEPS, f"an integer from 1 to {MAX_TIME_STEPS:,}")


def common_flags(parser, model, precision):
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help=f"frame dataset (default: {shown(DEFAULT_DATA)})")
    parser.add_argument("--model-dir", type=Path, default=None,
                        help=f"folder of {paths.PARAMETERS_FILE} (default: {shown(paths.model_dir(model, precision))}/)")


def training_args(model, precision, argv=None):
    parser = ArgumentParser(description=f"Train {model} at precision {precision} on N-MNIST frames (ALGORITHM.md §2).",
                            epilog=TF_NOTICES_HELP)
    common_flags(parser, model, precision)
    parser.add_argument("--epochs", type=positive_int, default=EPOCHS, help="total epochs (default: %(default)s)")
    parser.add_argument("--batch-size", type=positive_int, default=BATCH_SIZE, help="default: %(default)s")
    parser.add_argument("--lr", type=positive_float, default=LEARNING_RATE, help="Adam learning rate (default: %(default)s)")
    parser.add_argument("--seed", type=non_negative_int, default=SEED, help="default: %(default)s")
    parser.add_argument("--resume", action="store_true", help="continue an interrupted run from its last finished epoch")
    parser.add_argument("--train-limit", type=positive_int, default=None, metavar="N", help="use the first N training samples")
    parser.add_argument("--test-limit", type=positive_int, default=None, metavar="N",
                        help="accepted for symmetry with the inference scripts; training reads no test data")
    return parser.parse_args(argv)


def evaluation_args(model, precision, spiking, argv=None):
    kind = "spiking network converted from" if spiking else "ANN"
    parser = ArgumentParser(description=f"Evaluate the {kind} {model} at precision {precision} on the N-MNIST test set.",
                            epilog=TF_NOTICES_HELP)
    common_flags(parser, model, precision)
    parser.add_argument("--test-limit", type=positive_int, default=None, metavar="N", help="use the first N test samples")
    if spiking:
        parser.add_argument("--log-dir", type=Path, default=None,
                            help=f"where the logs go (default: {shown(paths.log_dir(model, precision))}/)")
        parser.add_argument("--time-steps", type=time_steps_type, default=TIME_STEPS, help="T (default: %(default)s)")
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


def check_inputs(model, precision, args):
    """The parameter file and the data exist: checked before TensorFlow is imported, so a typo answers at once."""
    paths.check_parameter_file((args.model_dir or paths.model_dir(model, precision)) / paths.PARAMETERS_FILE)
    check_data_file(args.data)


def train(model, precision, argv=None):
    """Entry point of the thin training scripts."""

    def run(argv):
        args = training_args(model, precision, argv)
        check_data_file(args.data)
        import_tensorflow()
        import training

        history = training.train(model, precision, data=args.data, model_dir=args.model_dir, epochs=args.epochs,
                                 batch_size=args.batch_size, learning_rate=args.lr, seed=args.seed,
                                 resume=args.resume, train_limit=args.train_limit)
        last = history[-1]
        print(f"epoch {last['epoch']}: loss {last['loss']:.4f}, train accuracy {100 * last['accuracy']:.2f}%")

    return run_main(run, argv)


def evaluate_ann(model, precision, argv=None):
    """Entry point of the thin ANN inference scripts."""

    def run(argv):
        args = evaluation_args(model, precision, spiking=False, argv=argv)
        check_inputs(model, precision, args)
        import_tensorflow()
        import evaluation

        evaluation.evaluate_ann(model, precision, args.data, args.model_dir, args.test_limit)

    return run_main(run, argv)


def evaluate_snn(model, precision, argv=None):
    """Entry point of the thin SNN inference scripts."""

    def run(argv):
        args = evaluation_args(model, precision, spiking=True, argv=argv)
        check_inputs(model, precision, args)
        import_tensorflow()
        import evaluation
        import snn_engine

        snn_engine.configure_threads()
        evaluation.evaluate_snn(model, precision, args.data, args.model_dir, args.log_dir, args.time_steps,
                                args.batch_size, args.test_limit, args.check_lossless, progress=not args.quiet,
                                engine=args.engine, tie_rule=args.tie_rule)

    return run_main(run, argv)
