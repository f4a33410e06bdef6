"""The CloudFormation template, read with its short tags, and lookups its tests share."""

from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import yaml

TEMPLATE = Path(__file__).parents[2] / "infra" / "cloudformation" / "modelrunner.yaml"


class CfnLoader(yaml.SafeLoader):
    """SafeLoader that reads CloudFormation short tags (``!Ref``, ``!GetAtt``, ``!Sub``...)."""


def _short_tag(loader: CfnLoader, suffix: str, node: yaml.Node) -> dict[str, Any]:
    """``!Ref x`` -> ``{"Ref": x}``, ``!GetAtt A.B`` -> ``{"Fn::GetAtt": ["A", "B"]}``, ..."""
    value: Any
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)  # type: ignore[arg-type]
    if suffix in {"Ref", "Condition"}:
        return {suffix: value}
    if suffix == "GetAtt" and isinstance(value, str):
        value = value.split(".", 1)
    return {f"Fn::{suffix}": value}


CfnLoader.add_multi_constructor("!", _short_tag)


@cache
def template() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.load(TEMPLATE.read_text(), Loader=CfnLoader)
    return loaded


def resources(kind: str) -> dict[str, dict[str, Any]]:
    return {k: v for k, v in template()["Resources"].items() if v["Type"] == kind}


def props(logical_id: str) -> dict[str, Any]:
    properties: dict[str, Any] = template()["Resources"][logical_id]["Properties"]
    return properties


def branches(value: Any) -> Iterator[Any]:
    """The values a possibly conditional (``Fn::If``) value can take, without ``AWS::NoValue``."""
    if isinstance(value, dict) and "Fn::If" in value:
        for branch in value["Fn::If"][1:]:
            yield from branches(branch)
    elif value != {"Ref": "AWS::NoValue"}:
        yield value


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def references(value: Any) -> set[str]:
    """Logical ids and parameters named by Ref, GetAtt and Sub in ``value`` (no pseudo ones)."""
    if isinstance(value, list):
        return set().union(*(references(v) for v in value))
    if not isinstance(value, dict):
        return set()
    found: set[str] = set()
    for key, inner in value.items():
        if key == "Ref":
            found |= set() if inner.startswith("AWS::") else {inner}
        elif key == "Fn::GetAtt":
            found.add(inner[0])
        elif key == "Fn::Sub":
            text = inner if isinstance(inner, str) else inner[0]
            names = {part.split("}")[0].split(".")[0] for part in text.split("${")[1:]}
            local = set(inner[1]) if isinstance(inner, list) else set()
            found |= {n for n in names - local if not n.startswith("AWS::")}
            if isinstance(inner, list):
                found |= references(inner[1:])
        else:
            found |= references(inner)
    return found


def task_role_statements() -> list[dict[str, Any]]:
    statements = []
    for policy in props("TaskRole")["Policies"]:
        for document in branches(policy):
            for statement in document["PolicyDocument"]["Statement"]:
                statements += list(branches(statement))
    return statements
