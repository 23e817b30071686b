"""Other frameworks' LRN beside lrnbn's, for `lrnbn bench lrn --peers`: speed and accuracy in one table.

Every layer computes TensorFlow's convention (the note's): depth_radius r, a window of 2r + 1 channels, alpha not
divided by it, bias k. Each is timed on the same tensor (in its own native layout, converted before the clock
starts) and checked against a float64 direct window sum, on the benchmark's input and on inputs of wide magnitude,
where a running sum or a float32 square loses the small neighbours of a large value. A framework that is not
installed is skipped with one line; `pip install -e '.[peers]'` brings onnxruntime, and TensorFlow is used where it
is installed. onnxruntime runs inference only, so its rows time the forward pass alone.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

ALPHA, BETA, BIAS = 1e-4, 0.75, 2.0  # the note's author's layer (TensorFlow's arguments)
# A large value beside small ones, as the issue on exactness found them: a float32 square of 1e4 is 1e8, beside
# which the neighbours' squares vanish in a sum that subtracts it again (ORT returned inf/NaN here).
WIDE = np.array([1e4, 0.3, 0.2, 0.1, 0.05, 0.02], dtype=np.float32).reshape(1, 6, 1, 1)
WIDE_LAYER = (1, 1.0, 0.5, 0.5)  # depth_radius, alpha, beta, bias for it


def reference(x: np.ndarray, radius: int, alpha: float, beta: float, bias: float) -> np.ndarray:
    """TensorFlow's LRN of an NCHW array, in float64 by a direct sum over each window (no running sum)."""
    x = x.astype(np.float64)
    squares = np.pad(x * x, ((0, 0), (radius, radius), (0, 0), (0, 0)))
    sums = sum(squares[:, i : i + x.shape[1]] for i in range(2 * radius + 1))
    return x / (bias + alpha * sums) ** beta


def relative_error(got: np.ndarray, want: np.ndarray) -> float:
    """The largest |got - want| / |want| (inf where got is not finite)."""
    got = got.astype(np.float64)
    if not np.isfinite(got).all():
        return float("inf")
    return float(np.max(np.abs(got - want) / np.maximum(np.abs(want), np.finfo(np.float64).tiny)))


@dataclass
class Peer:
    name: str
    version: str  # of the package whose LRN it is (lrnbn's own for its implementations)
    direction: str  # "forward+backward" or "forward"
    # (x NCHW float32, radius, alpha, beta, bias) -> (the work to time, a function giving its output as NCHW)
    prepare: Callable[..., tuple[Callable[[], object], Callable[[], np.ndarray]]]


def _lrnbn(impl: str) -> Peer:
    import lrnbn
    from lrnbn.lrn import local_response_norm

    def prepare(x, radius, alpha, beta, bias):
        t = torch.from_numpy(x).requires_grad_()
        grad = torch.ones_like(t)

        def forward():
            return local_response_norm(t, 2 * radius + 1, alpha, beta, bias, convention="tensorflow", impl=impl)

        def work():
            t.grad = None
            forward().backward(grad)

        return work, lambda: forward().detach().numpy()

    return Peer(f"lrnbn {impl}", lrnbn.__version__, "forward+backward", prepare)


def _tensorflow() -> Peer:
    import tensorflow as tf

    def prepare(x, radius, alpha, beta, bias):
        nhwc = tf.constant(np.ascontiguousarray(x.transpose(0, 2, 3, 1)))

        def forward():
            return tf.nn.local_response_normalization(nhwc, radius, bias, alpha, beta)

        def work():
            with tf.GradientTape() as tape:
                tape.watch(nhwc)
                y = forward()
            return tape.gradient(y, nhwc).numpy()

        return work, lambda: forward().numpy().transpose(0, 3, 1, 2)

    return Peer("tensorflow", tf.__version__, "forward+backward", prepare)


def _onnxruntime() -> Peer:
    import onnxruntime
    from onnx import TensorProto, helper

    def prepare(x, radius, alpha, beta, bias):
        size = 2 * radius + 1  # ONNX divides alpha by the window: give it TensorFlow's alpha times the window
        node = helper.make_node("LRN", ["x"], ["y"], size=size, alpha=alpha * size, beta=beta, bias=bias)
        shape = list(x.shape)
        graph = helper.make_graph(
            [node],
            "lrn",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)],
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()
        session = onnxruntime.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])

        def forward():
            return session.run(None, {"x": x})[0]

        return forward, forward

    return Peer("onnxruntime", onnxruntime.__version__, "forward", prepare)


FRAMEWORKS = {"tensorflow": _tensorflow, "onnxruntime": _onnxruntime}


def peers() -> tuple[list[Peer], dict[str, str]]:
    """lrnbn's own implementations and every installed framework's LRN; the frameworks skipped and why."""
    from lrnbn.registry import LRN_IMPLS

    found, skipped = [_lrnbn(impl) for impl in LRN_IMPLS.names], {}
    for name, make in FRAMEWORKS.items():
        try:
            found.append(make())
        except ImportError as err:
            skipped[name] = f"not installed ({err.name or err})"
    return found, skipped
