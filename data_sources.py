"""Each dataset's data file: its default path, the quick check made before TensorFlow loads, and the loader.

    load_inputs(dataset, path, train_limit, test_limit) -> (x_train, y_train, x_test, y_test)

n_mnist.py reads N-MNIST's frames (ON counts / 32), fashion_mnist.py Fashion-MNIST's images (pixels / 256).
Numpy only, so that the scripts' --help stays instant.
"""
import fashion_mnist
import n_mnist
from architectures import check_dataset

MODULES = {"n_mnist": n_mnist, "fashion_mnist": fashion_mnist}
LOADERS = {"n_mnist": n_mnist.load_frames, "fashion_mnist": fashion_mnist.load_inputs}


def default_data(dataset="n_mnist"):
    """data/n_mnist.npz, data/fashion_mnist.npz."""
    return MODULES[check_dataset(dataset).name].DEFAULT_DATA


def check_data_file(path, dataset="n_mnist"):
    """UserError unless `path` is a data file: made before any long import."""
    MODULES[check_dataset(dataset).name].check_data_file(path)


def load_inputs(path, dataset="n_mnist", train_limit=None, test_limit=None):
    """(x_train, y_train, x_test, y_test): float32 network inputs (N, *input shape) and int64 labels."""
    return LOADERS[check_dataset(dataset).name](path, train_limit=train_limit, test_limit=test_limit)
