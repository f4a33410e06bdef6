"""Per-pixel model output to ModelRunner features."""

import json

import numpy as np
import pytest
import shapely
from scipy import ndimage
from shapely.geometry import shape

from models.bioimageio import objects
from models.bioimageio.objects import (
    feature_collection,
    label_components,
    objects_to_features,
    probability_to_features,
)
from postprocessing.detections import parse_model_output


def probability_map() -> np.ndarray:
    prob = np.zeros((40, 60), dtype=np.float32)
    prob[2:12, 3:13] = 0.9  # a 10 x 10 square
    prob[20:35, 20:40] = 0.7  # a 15 x 20 block with a 5 x 5 hole
    prob[25:30, 27:32] = 0.0
    prob[5, 50] = 0.95  # one pixel: below the minimum area
    prob[30:32, 50:52] = 0.6  # 2 x 2 ...
    prob[32, 52] = 0.6  # ... and a diagonal neighbour: the same 8-connected object
    return prob


def test_components_are_eight_connected() -> None:
    labels = label_components(probability_map(), threshold=0.5)
    assert labels.max() == 4
    assert labels[30, 50] == labels[32, 52] != 0


def test_features_have_outlines_boxes_and_mean_scores() -> None:
    prob = probability_map()
    prob[2:12, 3:8] = 0.8  # the square's mean becomes 0.85
    labels = label_components(prob, threshold=0.5)
    features = objects_to_features(
        labels, "urn:cell", probability=prob, min_area=2, model_metadata={"modelId": "m"}
    )
    by_box = {tuple(f["properties"]["imageBBox"]): f["properties"] for f in features}
    assert set(by_box) == {(3, 2, 13, 12), (20, 20, 40, 35), (50, 30, 53, 33)}
    square = by_box[(3, 2, 13, 12)]
    assert square["featureClasses"] == [{"iri": "urn:cell", "score": pytest.approx(0.85)}]
    assert square["modelMetadata"] == {"modelId": "m"}
    # Outlines cover exactly the object's pixels, holes included.
    block = shape(by_box[(20, 20, 40, 35)]["imageGeometry"])
    assert isinstance(block, shapely.Polygon)
    assert block.area == 15 * 20 - 25
    assert len(block.interiors) == 1
    assert shape(by_box[(50, 30, 53, 33)]["imageGeometry"]).area == 5


def test_box_mode_and_label_images() -> None:
    labels = np.zeros((10, 10), dtype=np.int32)
    labels[1:4, 1:5] = 7
    labels[6:9, 6:9] = 3
    features = objects_to_features(labels, "urn:x", mode="bbox")
    assert sorted(f["properties"]["imageBBox"] for f in features) == [[1, 1, 5, 4], [6, 6, 9, 9]]
    assert all(f["properties"]["featureClasses"][0]["score"] == 1.0 for f in features)
    for feature in features:
        minx, miny, maxx, maxy = feature["properties"]["imageBBox"]
        outline = shape(feature["properties"]["imageGeometry"])
        assert outline.equals(shapely.box(minx, miny, maxx, maxy))


def test_the_reply_is_what_the_worker_parses() -> None:
    prob = probability_map()
    labels = label_components(prob, threshold=0.5)
    reply = json.dumps(feature_collection(objects_to_features(labels, "urn:cell", prob)))
    table = parse_model_output(reply.encode(), col_off=1000, row_off=2000, tile_size=(60, 40))
    assert len(table) == 4
    assert table.boxes.min(axis=0).tolist()[:2] == [1003, 2002]
    assert set(table.labels) == {"urn:cell"}


def test_nothing_found_and_bad_shapes() -> None:
    assert objects_to_features(np.zeros((5, 5), np.int32), "urn:x") == []
    with pytest.raises(ValueError, match="2D"):
        label_components(np.zeros((2, 5, 5)), 0.5)


def random_labels(seed: int, count: int, size: int = 64) -> np.ndarray:
    """Blobs of random shape, some with holes, some touching the edge, labelled 8-connected."""
    rng = np.random.default_rng(seed)
    prob = np.zeros((size, size), dtype=np.float32)
    for _ in range(count):
        row, col = rng.integers(0, size, 2)
        radius = rng.integers(1, 8)
        yy, xx = np.ogrid[:size, :size]
        blob = (yy - row) ** 2 + (xx - col) ** 2 <= radius**2
        prob[blob & (rng.random((size, size)) < 0.8)] = rng.uniform(0.5, 1.0)
    return label_components(prob, threshold=0.5)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("mosaic", [True, False])
def test_outlines_are_the_objects_pixels(
    seed: int, mosaic: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Traced in a mosaic of their boxes or over the whole tile, an outline covers exactly its
    object's pixels (holes and all); for a split label, the largest part."""
    monkeypatch.setattr(objects, "MOSAIC_SHARE", 1e9 if mosaic else 0)
    labels = random_labels(seed, count=3 + 4 * seed)
    if seed % 2:
        labels[labels == 2] = 1  # a label image whose label 1 has two parts
    features = objects_to_features(labels, "urn:x", min_area=2)
    areas = np.bincount(labels.ravel())
    assert len(features) == np.count_nonzero(areas[1:] >= 2)
    label_of = {
        (cols.start, rows.start, cols.stop, rows.stop): label
        for label, found in enumerate(ndimage.find_objects(labels), start=1)
        if found is not None
        for rows, cols in [found]
    }
    rows, cols = np.mgrid[: labels.shape[0], : labels.shape[1]]
    for feature in features:
        label = label_of[tuple(feature["properties"]["imageBBox"])]
        parts, count = ndimage.label(labels == label, structure=np.ones((3, 3), bool))
        largest = parts == np.bincount(parts.ravel(), minlength=count + 1)[1:].argmax() + 1
        outline = shape(feature["properties"]["imageGeometry"])
        inside = shapely.contains_xy(outline, cols + 0.5, rows + 0.5)
        assert np.array_equal(inside, largest)
        assert outline.area == largest.sum()


def test_both_tracing_paths_give_the_same_features(monkeypatch: pytest.MonkeyPatch) -> None:
    labels = random_labels(seed=7, count=12)
    prob = np.where(labels > 0, 0.75, 0.0).astype(np.float32)
    monkeypatch.setattr(objects, "MOSAIC_SHARE", 1e9)
    in_a_mosaic = objects_to_features(labels, "urn:x", probability=prob)
    monkeypatch.setattr(objects, "MOSAIC_SHARE", 0)
    whole_tile = objects_to_features(labels, "urn:x", probability=prob)
    assert json.dumps(in_a_mosaic) == json.dumps(whole_tile)


def random_map(seed: int, height: int, width: int, count: int) -> np.ndarray:
    """Blobs of random shape and size (holes, diagonal contacts, some cut by the edges), with
    values that are multiples of 1/256 so every sum of them is exact."""
    rng = np.random.default_rng(seed)
    prob = np.zeros((height, width), dtype=np.float32)
    yy, xx = np.ogrid[:height, :width]
    for _ in range(count):
        row, col = rng.integers(0, height), rng.integers(0, width)
        radius = rng.integers(1, 14)
        blob = (yy - row) ** 2 + (xx - col) ** 2 <= radius**2
        prob[blob & (rng.random((height, width)) < 0.85)] = rng.integers(128, 256) / 256
    return prob


# (rows, cols, blobs): sparse maps whose pieces pack into a mosaic, and dense ones whose
# mosaic is the tile itself.
MAPS = [
    (61, 45, 2),
    (130, 97, 8),
    (97, 130, 5),
    (256, 203, 12),
    (256, 256, 25),
    (300, 61, 10),
    (8, 200, 4),
    (64, 64, 20),
    (40, 40, 30),
]


@pytest.mark.parametrize(("seed", "shape"), list(enumerate(MAPS)))
@pytest.mark.parametrize("mode", ["polygon", "bbox"])
def test_probability_maps_give_the_same_features_as_labelling_the_whole_tile(
    seed: int, shape: tuple[int, int, int], mode: objects.GeometryMode
) -> None:
    """The mosaic of occupied pieces changes nothing: the same objects, boxes, outlines, scores
    and order as labelling and tracing the whole tile, for tiles of any size."""
    height, width, count = shape
    prob = random_map(seed, height, width, count)
    min_area = 1 + seed % 3
    expected = objects_to_features(
        label_components(prob, 0.5), "urn:x", probability=prob, min_area=min_area, mode=mode
    )
    found = probability_to_features(prob, 0.5, "urn:x", min_area=min_area, mode=mode)
    assert len(found) > 0
    assert json.dumps(found) == json.dumps(expected)


def test_a_piece_inside_another_pieces_window_stays_apart() -> None:
    """A blob in a ring's hole, far enough from the ring to be a piece of its own, lies in
    the ring's window: each piece keeps only its own pixels."""
    yy, xx = np.mgrid[:160, :160]  # the ring and the blob take a corner of the tile
    distance = np.hypot(yy - 40, xx - 40)
    prob = np.where((distance >= 30) & (distance < 36), 0.75, 0.0).astype(np.float32)
    prob[36:44, 36:44] = 0.875  # 8 x 8 in the middle, 14 pixels from the ring
    mosaic = objects._occupied_mosaic(prob, 0.5)
    assert mosaic is not None
    assert len(mosaic.shifts) == 2  # two pieces
    features = probability_to_features(prob, 0.5, "urn:x", model_metadata={"modelId": "m"})
    rows, cols = np.nonzero(prob == 0.75)
    ring_box = [cols.min(), rows.min(), cols.max() + 1, rows.max() + 1]
    assert [f["properties"]["imageBBox"] for f in features] == [ring_box, [36, 36, 44, 44]]
    ring, blob = (shape(f["properties"]["imageGeometry"]) for f in features)
    assert isinstance(ring, shapely.Polygon)
    assert ring.area == np.count_nonzero(prob == 0.75)
    assert len(ring.interiors) == 1
    assert blob.equals(shapely.box(36, 36, 44, 44))
    assert [f["properties"]["featureClasses"][0]["score"] for f in features] == [0.75, 0.875]
    assert features[0]["properties"]["modelMetadata"] == {"modelId": "m"}


def test_probability_maps_with_nothing_or_everything() -> None:
    assert probability_to_features(np.zeros((30, 20), np.float32), 0.5, "urn:x") == []
    assert probability_to_features(np.full((30, 20), np.nan, np.float32), 0.5, "urn:x") == []
    small = np.zeros((30, 20), np.float32)
    small[3, 4] = 1.0
    assert probability_to_features(small, 0.5, "urn:x", min_area=2) == []
    everything = np.ones((30, 20), np.float32)
    mosaic = objects._occupied_mosaic(everything, 0.5)
    assert mosaic is not None
    assert mosaic.mask.shape == (30, 20)  # never larger than the tile
    (whole,) = probability_to_features(everything, 0.5, "urn:x")
    assert whole["properties"]["imageBBox"] == [0, 0, 20, 30]
    assert shape(whole["properties"]["imageGeometry"]).equals(shapely.box(0, 0, 20, 30))
    with pytest.raises(ValueError, match="2D"):
        probability_to_features(np.zeros((2, 5, 5)), 0.5, "urn:x")
