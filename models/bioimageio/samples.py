"""Tiny bioimage.io model packages, written offline: to try the adapter and the model runner
without a model hub, and for the tests and benchmarks. Writing them needs ``onnx`` (imported
when a package is written; it is in the ``dev`` extra).

``sigmoid`` (the tests' model): ONNX computing ``sigmoid(x / 255 - 0.5)`` per pixel through
the package's ``scale_linear`` preprocessing; bright pixels (> 127.5) come out above 0.5.

``conv``: a small convolutional network (2.7 KB of weights) with the compute profile of a real
segmentation network: 3x3 convolution to 8 channels, ReLU, 3x3 convolution 8 -> 8, ReLU, 1x1
convolution to one channel, sigmoid. Its fixed weights threshold the local 5 x 5 brightness
near 0.5, so it also segments bright objects; its output declares a halo of 2 pixels (the
receptive field) for blockwise prediction.

Both take spatial sizes ``16 + 16n``, like real segmentation networks. Their test outputs come
from a numpy implementation of the same arithmetic, not from the ONNX graph.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import numpy.typing as npt
import yaml
from scipy import ndimage

if TYPE_CHECKING:
    import onnx

Network = Literal["sigmoid", "conv"]

CONV_CHANNELS = 8
_CONV_THRESHOLDS = np.linspace(0.30, 0.65, CONV_CHANNELS, dtype=np.float32)
_CONV_GAIN = 20.0


def _sigmoid(values: npt.NDArray[Any]) -> npt.NDArray[np.float32]:
    return np.asarray(1 / (1 + np.exp(-values)), dtype=np.float32)


def _conv_weights() -> dict[str, npt.NDArray[np.float32]]:
    # Layer 1: channel c is relu(mean3x3(x) - t_c) for thresholds t_c around 0.5.
    w1 = np.full((CONV_CHANNELS, 1, 3, 3), 1 / 9, dtype=np.float32)
    b1 = -_CONV_THRESHOLDS
    # Layer 2: each channel averages every layer-1 channel over 3 x 3.
    w2 = np.full((CONV_CHANNELS, CONV_CHANNELS, 3, 3), 1 / (9 * CONV_CHANNELS), dtype=np.float32)
    b2 = np.zeros(CONV_CHANNELS, dtype=np.float32)
    # Layer 3: 0.5 where the layer-2 value is what a uniform brightness of 0.5 gives.
    at_half = float(np.maximum(0.5 - _CONV_THRESHOLDS, 0).mean())
    w3 = np.full((1, CONV_CHANNELS, 1, 1), _CONV_GAIN / CONV_CHANNELS, dtype=np.float32)
    b3 = np.array([-_CONV_GAIN * at_half], dtype=np.float32)
    return {"w1": w1, "b1": b1, "w2": w2, "b2": b2, "w3": w3, "b3": b3}


def conv_reference(scaled: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """The ``conv`` network in numpy, for a ``(batch, 1, rows, cols)`` input in [0, 1]."""
    weights = _conv_weights()

    def conv(x: npt.NDArray[Any], w: npt.NDArray[Any], b: npt.NDArray[Any]) -> Any:
        out = np.empty((x.shape[0], w.shape[0], *x.shape[2:]), dtype=np.float64)
        for n in range(x.shape[0]):
            for o in range(w.shape[0]):
                out[n, o] = b[o] + sum(
                    ndimage.correlate(x[n, i].astype(np.float64), w[o, i], mode="constant")
                    for i in range(w.shape[1])
                )
        return out

    hidden = np.maximum(conv(scaled, weights["w1"], weights["b1"]), 0)
    hidden = np.maximum(conv(hidden, weights["w2"], weights["b2"]), 0)
    return _sigmoid(conv(hidden, weights["w3"], weights["b3"]))


def _conv_graph() -> onnx.GraphProto:
    from onnx import TensorProto, helper  # noqa: PLC0415 - only to write packages

    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, [None, 1, None, None])
    y = helper.make_tensor_value_info("output", TensorProto.FLOAT, [None, 1, None, None])
    weights = [
        helper.make_tensor(name, TensorProto.FLOAT, list(value.shape), value.ravel().tolist())
        for name, value in _conv_weights().items()
    ]
    same = [1, 1, 1, 1]  # zero padding: the output has the input's size
    return helper.make_graph(
        [
            helper.make_node("Conv", ["input", "w1", "b1"], ["c1"], kernel_shape=[3, 3], pads=same),
            helper.make_node("Relu", ["c1"], ["r1"]),
            helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], kernel_shape=[3, 3], pads=same),
            helper.make_node("Relu", ["c2"], ["r2"]),
            helper.make_node("Conv", ["r2", "w3", "b3"], ["c3"], kernel_shape=[1, 1]),
            helper.make_node("Sigmoid", ["c3"], ["output"]),
        ],
        "conv",
        [x],
        [y],
        weights,
    )


def _sigmoid_graph() -> onnx.GraphProto:
    from onnx import TensorProto, helper  # noqa: PLC0415 - only to write packages

    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, [None, 1, None, None])
    y = helper.make_tensor_value_info("output", TensorProto.FLOAT, [None, 1, None, None])
    half = helper.make_tensor("half", TensorProto.FLOAT, [], [0.5])
    return helper.make_graph(
        [
            helper.make_node("Sub", ["input", "half"], ["shifted"]),
            helper.make_node("Sigmoid", ["shifted"], ["output"]),
        ],
        "sigmoid",
        [x],
        [y],
        [half],
    )


def write_sample_package(directory: Path, network: Network = "sigmoid") -> Path:
    """Write the package into ``directory``; returns its ``rdf.yaml``."""
    import onnx  # noqa: PLC0415 - only to write packages
    from onnx import helper  # noqa: PLC0415

    directory.mkdir(parents=True, exist_ok=True)
    graph = _conv_graph() if network == "conv" else _sigmoid_graph()
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 15)])
    model.ir_version = 8
    onnx.save(model, directory / "weights.onnx")
    sample = np.random.default_rng(0).integers(0, 255, (1, 1, 64, 64)).astype(np.float32)
    np.save(directory / "test_input.npy", sample)
    if network == "conv":
        expected = conv_reference(sample / np.float32(255))
        summary = "A 3-layer convolutional network thresholding the local brightness."
    else:
        expected = _sigmoid(sample / 255 - 0.5)
        summary = "Sigmoid of the scaled pixels."
    np.save(directory / "test_output.npy", expected)
    (directory / "README.md").write_text(f"# Bright objects\n{summary}\n")
    space = [{"type": "space", "id": axis, "size": {"min": 16, "step": 16}} for axis in ("y", "x")]
    rdf = {
        "format_version": "0.5.4",
        "type": "model",
        "name": "bright-objects" if network == "sigmoid" else "bright-objects-conv",
        "description": "Probability that a pixel is bright",
        "authors": [{"name": "ModelRunner tests"}],
        "cite": [{"text": "ModelRunner test model", "url": "https://example.com/modelrunner"}],
        "license": "MIT",
        "documentation": "README.md",
        "tags": ["segmentation", "test"],
        "inputs": [
            {
                "id": "input",
                "axes": [
                    {"type": "batch"},
                    {"type": "channel", "channel_names": ["intensity"]},
                    *space,
                ],
                "test_tensor": {"source": "test_input.npy"},
                "data": {"type": "float32"},
                "preprocessing": [
                    {"id": "scale_linear", "kwargs": {"gain": 1 / 255, "offset": 0.0}}
                ],
            }
        ],
        "outputs": [
            {
                "id": "output",
                "axes": [
                    {"type": "batch"},
                    {"type": "channel", "channel_names": ["probability"]},
                    *[
                        {
                            "type": "space",
                            "id": axis,
                            "size": {"tensor_id": "input", "axis_id": axis},
                            **({"halo": 2} if network == "conv" else {}),
                        }
                        for axis in ("y", "x")
                    ],
                ],
                "test_tensor": {"source": "test_output.npy"},
                "data": {"type": "float32"},
            }
        ],
        "weights": {"onnx": {"source": "weights.onnx", "opset_version": 15}},
    }
    rdf_path = directory / "rdf.yaml"
    rdf_path.write_text(yaml.safe_dump(rdf, sort_keys=False))
    return rdf_path


def _tensor(tensor_id: str, source: str, reference: str | None = None) -> dict[str, Any]:
    """A float32 ``(batch, channel, y, x)`` tensor entry; outputs follow ``reference``'s size."""
    space = [
        {"type": "space", "id": axis, "size": {"min": 16, "step": 16}}
        if reference is None
        else {"type": "space", "id": axis, "size": {"tensor_id": reference, "axis_id": axis}}
        for axis in ("y", "x")
    ]
    return {
        "id": tensor_id,
        "axes": [{"type": "batch"}, {"type": "channel", "channel_names": ["c"]}, *space],
        "test_tensor": {"source": source},
        "data": {"type": "float32"},
    }


def write_multi_package(directory: Path, kind: Literal["inputs", "outputs"]) -> Path:
    """A package with two inputs (``a``, ``b`` -> ``sum`` = a + b) or two outputs (``image`` ->
    ``bright`` = sigmoid(x - 0.5), ``dark`` = 1 - bright); its ``rdf.yaml``.

    Its ``config`` holds ``.inf`` and ``.nan``, values JSON cannot carry.
    """
    import onnx  # noqa: PLC0415 - only to write packages
    from onnx import TensorProto, helper  # noqa: PLC0415

    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    samples = {
        name: rng.random((1, 1, 32, 32), dtype=np.float32)
        for name in (("a", "b") if kind == "inputs" else ("image",))
    }
    if kind == "inputs":
        nodes = [helper.make_node("Add", ["a", "b"], ["sum"])]
        results = {"sum": samples["a"] + samples["b"]}
    else:
        one = helper.make_tensor("one", TensorProto.FLOAT, [], [1.0])
        half = helper.make_tensor("half", TensorProto.FLOAT, [], [0.5])
        nodes = [
            helper.make_node("Sub", ["image", "half"], ["shifted"]),
            helper.make_node("Sigmoid", ["shifted"], ["bright"]),
            helper.make_node("Sub", ["one", "bright"], ["dark"]),
        ]
        bright = _sigmoid(samples["image"] - 0.5)
        results = {"bright": bright, "dark": 1 - bright}
    info = {
        name: helper.make_tensor_value_info(name, TensorProto.FLOAT, [None, 1, None, None])
        for name in [*samples, *results]
    }
    initializers = [] if kind == "inputs" else [one, half]
    graph = helper.make_graph(
        nodes,
        f"multi-{kind}",
        [info[n] for n in samples],
        [info[n] for n in results],
        initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 15)])
    model.ir_version = 8
    onnx.save(model, directory / "weights.onnx")
    for name, array in {**samples, **results}.items():
        np.save(directory / f"{name}.npy", array)
    (directory / "README.md").write_text(f"# Multi {kind}\n")
    first = next(iter(samples))
    rdf = {
        "format_version": "0.5.4",
        "type": "model",
        "name": f"multi-{kind}",
        "description": f"A model with two {kind}",
        "authors": [{"name": "ModelRunner tests"}],
        "cite": [{"text": "ModelRunner test model", "url": "https://example.com/modelrunner"}],
        "license": "MIT",
        "documentation": "README.md",
        "tags": ["test", f"multi-{kind}"],
        "inputs": [_tensor(n, f"{n}.npy") for n in samples],
        "outputs": [_tensor(n, f"{n}.npy", first) for n in results],
        "weights": {"onnx": {"source": "weights.onnx", "opset_version": 15}},
        "config": {"limits": {"upper": float("inf"), "unset": float("nan")}},
    }
    rdf_path = directory / "rdf.yaml"
    rdf_path.write_text(yaml.safe_dump(rdf, sort_keys=False))
    return rdf_path
