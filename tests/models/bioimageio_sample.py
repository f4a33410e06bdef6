"""A tiny bioimage.io model package, written offline for the tests.

The model (ONNX) computes ``sigmoid(x / 255 - 0.5)`` per pixel through the package's
``scale_linear`` preprocessing: bright pixels (> 127.5) come out above 0.5. Its spatial axes
take any ``16 + 16n`` size, like real segmentation networks.
"""

from pathlib import Path

import numpy as np
import onnx
import yaml
from onnx import TensorProto, helper


def write_sample_package(directory: Path) -> Path:
    """Write the package into ``directory``; returns its ``rdf.yaml``."""
    directory.mkdir(parents=True, exist_ok=True)
    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, [None, 1, None, None])
    y = helper.make_tensor_value_info("output", TensorProto.FLOAT, [None, 1, None, None])
    half = helper.make_tensor("half", TensorProto.FLOAT, [], [0.5])
    graph = helper.make_graph(
        [
            helper.make_node("Sub", ["input", "half"], ["shifted"]),
            helper.make_node("Sigmoid", ["shifted"], ["output"]),
        ],
        "sigmoid",
        [x],
        [y],
        [half],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 15)])
    model.ir_version = 8
    onnx.save(model, directory / "weights.onnx")
    sample = np.random.default_rng(0).integers(0, 255, (1, 1, 64, 64)).astype(np.float32)
    np.save(directory / "test_input.npy", sample)
    np.save(directory / "test_output.npy", 1 / (1 + np.exp(-(sample / 255 - 0.5))))
    (directory / "README.md").write_text("# Bright objects\nSigmoid of the scaled pixels.\n")
    space = [{"type": "space", "id": axis, "size": {"min": 16, "step": 16}} for axis in ("y", "x")]
    rdf = {
        "format_version": "0.5.4",
        "type": "model",
        "name": "bright-objects",
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
