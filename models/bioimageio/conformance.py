"""The bioimage.io test suite and format validation behind the ``test`` and ``validate`` methods.

bioimageio.core and bioimageio.spec are imported on first use (they are heavy). Additional
requirements are checked against this environment, never installed.
"""

from __future__ import annotations

from importlib import metadata
from typing import Any, cast

from packaging.requirements import InvalidRequirement, Requirement

from models.bioimageio.errors import ApiError
from models.bioimageio.packages import MODEL_ERRORS, WeightsFormat


def missing_requirements(requirements: list[str]) -> list[str]:
    """The requirements this environment does not satisfy.

    Raises:
        ApiError: 400 for a requirement that is not a valid specifier.
    """
    missing = []
    for text in requirements:
        try:
            requirement = Requirement(text)
        except InvalidRequirement as err:
            raise ApiError(400, f"additional_requirements: {text!r}: {err}") from None
        try:
            version = metadata.version(requirement.name)
        except metadata.PackageNotFoundError:
            missing.append(text)
            continue
        if not requirement.specifier.contains(version, prereleases=True):
            missing.append(f"{text} (has {version})")
    return missing


def run_test_suite(source: str, weights_format: WeightsFormat | None) -> dict[str, Any]:
    """The bioimage.io test suite on the package at ``source``: ``status`` (passed or failed),
    ``details`` (one line, what failed) and ``report`` (the whole summary)."""
    from bioimageio.core import test_model  # noqa: PLC0415  (heavy; only this method)

    summary = test_model(source, weight_format=weights_format)
    report: dict[str, Any] = summary.model_dump(mode="json")
    report.pop("source_name", None)  # a path on this server
    failed = [d for d in summary.details if d.status == "failed"]
    details = (
        f"All {len(summary.details)} checks passed."
        if not failed
        else "; ".join(f"{d.name}: {' '.join(e.msg for e in d.errors)}" for d in failed)
    )
    return {"status": str(summary.status), "details": details, "report": report}


def validate_description(
    rdf_dict: dict[str, Any], known_files: dict[str, str | None] | None
) -> dict[str, Any]:
    """Whether ``rdf_dict`` is a valid description (``success``), with the summary (``details``)."""
    from bioimageio.spec import ValidationContext, validate_format  # noqa: PLC0415

    context = ValidationContext(
        perform_io_checks=False, known_files=cast(Any, dict(known_files or {}))
    )
    try:
        summary = validate_format(rdf_dict, context=context)
    except MODEL_ERRORS as err:
        return {"success": False, "details": f"cannot validate: {err}"}
    return {
        "success": summary.status in {"passed", "valid-format"},
        "details": summary.format(),
    }
