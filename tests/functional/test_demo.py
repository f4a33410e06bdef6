"""``make run``'s job: its own stack, the sample NITF, success and a summary."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.functional


def test_demo_runs_the_sample_job(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "client.demo"],
        cwd=tmp_path,
        env={"PYTHONPATH": str(Path(__file__).parents[2]), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS: s3://modelrunner-images/images/i_3001a.ntf" in done.stdout
    assert "tiles 9 (failed 0), features 9" in done.stdout
    assert '"sourceDT": "1996-12-17T10:26:30Z"' in done.stdout
    assert "local stack stopped" in done.stdout
    (geojson,) = (tmp_path / "results").glob("*.geojson")
    (picture,) = (tmp_path / "results").glob("*.png")
    assert f"kept here: results/{geojson.name} and results/{picture.name}" in done.stdout
    assert len(json.loads(geojson.read_text())["features"]) == 9
    assert picture.read_bytes().startswith(b"\x89PNG")
    assert "Warning" not in done.stdout + done.stderr
