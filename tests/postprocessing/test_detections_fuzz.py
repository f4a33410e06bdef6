"""Fuzzing the model-reply parser: any reply gives a table or ModelOutputError, nothing else."""

import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from postprocessing.detections import parse_model_output
from postprocessing.errors import ModelOutputError

scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=10)
)
json_values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=6) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=40,
)
numbers = st.integers(-5, 600) | st.floats(-1e6, 1e6, allow_nan=False)
geometries = st.fixed_dictionaries(
    {
        "type": st.sampled_from(["Polygon", "Point", "LineString", "MultiPolygon", "Nope"]),
        "coordinates": st.recursive(
            st.lists(numbers, min_size=0, max_size=3),
            lambda c: st.lists(c, max_size=6),
            max_leaves=30,
        ),
    }
)
properties = st.fixed_dictionaries(
    {},
    optional={
        "imageGeometry": geometries | json_values,
        "imageBBox": st.lists(numbers, max_size=5) | json_values,
        "bounds_imcoords": st.lists(numbers, max_size=5),
        "geom_imcoords": st.lists(st.lists(numbers, max_size=3), max_size=6),
        "featureClasses": st.lists(
            st.dictionaries(st.sampled_from(["iri", "score"]), json_values), max_size=3
        )
        | json_values,
        "feature_types": json_values,
        "modelMetadata": json_values,
    },
)
replies = st.fixed_dictionaries(
    {
        "type": st.sampled_from(["FeatureCollection", "Feature"]),
        "features": st.lists(
            st.fixed_dictionaries({"type": st.just("Feature"), "properties": properties})
            | json_values,
            max_size=5,
        ),
    }
)


def parses_or_refuses(body: bytes) -> None:
    try:
        table = parse_model_output(body, 10, 20)
    except ModelOutputError:
        return
    assert len(table.boxes) == len(table.labels) == len(table.geometries_wkb)


@settings(max_examples=1000, suppress_health_check=[HealthCheck.too_slow])
@given(reply=replies)
def test_structured_replies(reply: Any) -> None:
    parses_or_refuses(json.dumps(reply).encode())


@settings(max_examples=500, suppress_health_check=[HealthCheck.too_slow])
@given(value=json_values)
def test_any_json(value: Any) -> None:
    parses_or_refuses(json.dumps(value).encode())


@settings(max_examples=500)
@given(data=st.binary(max_size=300))
def test_any_bytes(data: bytes) -> None:
    parses_or_refuses(data)
