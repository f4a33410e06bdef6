"""Tensor axes of bioimage.io models: reading them from RDFs and moving tiles in and out."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from models.bioimageio.axes import (
    Axis,
    AxisError,
    axes_from_rdf,
    check_input,
    from_model_layout,
    into_layout,
    to_model_layout,
)

SPACE = {"min": 16, "step": 16}
V05 = {
    "id": "raw",
    "axes": [
        {"type": "space", "id": "x", "size": SPACE},
        {"type": "channel", "id": "c", "channel_names": ["r", "g", "b"]},
        {"type": "batch"},
        {"type": "space", "id": "y", "size": SPACE},
    ],
}


def test_valid_sizes() -> None:
    step = Axis("space", "y", minimum=16, step=16)
    assert [step.valid_size(n) for n in (1, 16, 17, 32, 33)] == [16, 16, 32, 32, 48]
    fixed = Axis("space", "y", minimum=64)
    assert fixed.valid_size(10) == 64
    with pytest.raises(AxisError, match="takes 64 px"):
        fixed.valid_size(65)
    assert Axis("space", "y").valid_size(77) == 77


def test_axes_from_v05_and_v04_rdfs() -> None:
    axes = axes_from_rdf(V05)
    assert [(a.kind, a.id) for a in axes] == [
        ("space", "x"),
        ("channel", "c"),
        ("batch", "batch"),
        ("space", "y"),
    ]
    assert axes[1].channels == 3
    assert (axes[0].minimum, axes[0].step) == (16, 16)
    v04 = axes_from_rdf({"axes": "bcyx", "shape": {"min": [1, 2, 64, 64], "step": [0, 0, 8, 8]}})
    assert [a.kind for a in v04] == ["batch", "channel", "space", "space"]
    assert v04[1].channels == 2
    assert (v04[2].minimum, v04[2].step) == (64, 8)
    fixed = axes_from_rdf({"axes": "byxc", "shape": [1, 256, 256, 1]})
    assert fixed[1].minimum == 256
    with pytest.raises(AxisError, match="no axes"):
        axes_from_rdf({"id": "raw"})
    with pytest.raises(AxisError, match="'q'"):
        axes_from_rdf({"axes": "bqyx"})


@given(rows=st.integers(1, 70), cols=st.integers(1, 70))
def test_tiles_go_in_padded_and_come_back(rows: int, cols: int) -> None:
    axes = axes_from_rdf(V05)
    tile = np.arange(3 * rows * cols, dtype=np.uint16).reshape(3, rows, cols)
    array = to_model_layout(tile, axes)
    height, width = (16 + -(-max(n - 16, 0) // 16) * 16 for n in (rows, cols))
    assert array.shape == (width, 3, 1, height)
    assert array.dtype == np.float32
    back = from_model_layout(array, axes)
    np.testing.assert_array_equal(back[:, :rows, :cols], tile)
    assert not back[:, rows:, :].any()
    assert not back[:, :, cols:].any()
    np.testing.assert_array_equal(into_layout(back, axes), array)


def test_one_channel_models_get_the_band_mean() -> None:
    axes = [Axis("batch", "batch"), Axis("channel", "channel"), Axis("space", "y")]
    axes.append(Axis("space", "x"))
    tile = np.stack([np.full((4, 5), 10), np.full((4, 5), 20)]).astype(np.uint8)
    np.testing.assert_array_equal(to_model_layout(tile, axes), np.full((1, 1, 4, 5), 15.0))
    with pytest.raises(AxisError, match="takes 3 channels, the tile has 2"):
        to_model_layout(tile, axes_from_rdf(V05))


def test_models_without_channel_or_batch_axes() -> None:
    axes = [Axis("space", "y"), Axis("space", "x")]
    tile = np.ones((1, 3, 4), dtype=np.float32)
    assert to_model_layout(tile, axes).shape == (3, 4)
    assert from_model_layout(np.ones((3, 4)), axes).shape == (1, 3, 4)
    with pytest.raises(AxisError, match="declares 2"):
        from_model_layout(np.ones((1, 3, 4)), axes)
    with pytest.raises(AxisError, match="not supported"):
        to_model_layout(tile, [Axis("time", "t"), *axes])


def test_whole_inputs_are_checked_by_name() -> None:
    axes = axes_from_rdf(V05)
    check_input(np.zeros((16, 3, 1, 32)), axes, "raw")
    with pytest.raises(AxisError, match=r"input 'raw' has axes \(x, c, batch, y\)"):
        check_input(np.zeros((16, 16)), axes, "raw")
    with pytest.raises(AxisError, match="takes 3 channel"):
        check_input(np.zeros((16, 1, 1, 16)), axes, "raw")
    with pytest.raises(AxisError, match="'y' is 8 px, the model needs at least 16"):
        check_input(np.zeros((16, 3, 1, 8)), axes, "raw")
    with pytest.raises(AxisError, match="batch 1"):
        check_input(np.zeros((16, 3, 2, 16)), axes, "raw")
