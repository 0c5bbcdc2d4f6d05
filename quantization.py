"""The quantized activation of the paper (ALGORITHM.md §2): ReLU, then rounding to multiples of 2**-k.

    q_k(a) = round(relu(a) * 2**k + 1e-5) / 2**k      (no upper clip)

The backward pass is straight-through: the gradient is ReLU's, as if no rounding happened.
"""
import keras
from keras import ops

from architectures import QUANTIZER_TIE_NUDGE as TIE_NUDGE


@keras.saving.register_keras_serializable(package="nmnist")
class QuantizedReLU(keras.layers.Layer):
    """ReLU followed by rounding to the grid {0, 2**-k, 2 * 2**-k, ...}; straight-through gradient."""

    def __init__(self, k, **kwargs):
        super().__init__(**kwargs)
        if isinstance(k, bool) or int(k) != k or k < 0:
            raise ValueError(f"k must be a non-negative integer, got {k!r}")
        self.k = int(k)

    def call(self, inputs):
        activation = ops.relu(inputs)
        scale = float(2**self.k)
        quantized = ops.round(activation * scale + TIE_NUDGE) / scale
        # Forward: `quantized` exactly (by Sterbenz's lemma `quantized - activation` is exact, so the
        # sum restores `quantized` bit for bit). Backward: the gradient of `activation`, i.e. ReLU's.
        return activation + ops.stop_gradient(quantized - activation)

    def get_config(self):
        return {**super().get_config(), "k": self.k}
