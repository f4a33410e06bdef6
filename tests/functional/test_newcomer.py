"""A newcomer's first hour: the ``modelrunner`` command as a person types it, on the local stack.

Each test asserts on what the user's terminal shows: the resources and the env file of
``modelrunner local``, flags over the request file, a job that ran before, the worker's retries
while waiting, a FAILED image's reason everywhere, loopback names, and clear errors instead of
hangs.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import boto3
import numpy as np
import pytest

from infra.local_stack import free_port
from tests.functional.helpers import Stack, write_geotiff
from tests.functional.test_cli import modelrunner
from tests.functional.test_end_to_end import TRANSFORM, UTM

pytestmark = pytest.mark.functional

# A new shell: no AWS or ModelRunner variable, the project importable from any folder.
CLEAN_ENV = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "MODELRUNNER_"))}
CLEAN_ENV["PYTHONPATH"] = str(Path(__file__).parents[2])


def run_client(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """``modelrunner ARGS`` in a shell with ``env``, in the folder ``cwd``."""
    return subprocess.run(
        [sys.executable, "-m", "client.cli", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def image(stack: Stack, tmp_path: Path, value: int = 120) -> str:
    pixels = np.full((1, 512, 1024), value, dtype=np.uint8)
    return stack.upload(write_geotiff(tmp_path / f"img-{value}.tif", pixels, TRANSFORM, UTM))


def submit_args(stack: Stack, url: str, *extra: str) -> list[str]:
    return [
        "submit",
        *("--image-url", url, "--endpoint", stack.local.model_url),
        *("--output-bucket", stack.local.resources.bucket, "--output-prefix", "newcomer"),
        *("--tile-size", "512", "--tile-overlap", "0", "--wait", "--timeout", "120"),
        *extra,
    ]


def test_the_command_is_installed_where_the_readme_says() -> None:
    command = Path(sys.executable).parent / "modelrunner"
    assert command.exists()
    shown = subprocess.run([str(command), "--help"], capture_output=True, text=True, check=False)
    assert shown.returncode == 0
    assert "submit" in shown.stdout
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    assert "source .venv/bin/activate" in readme


def test_flags_override_the_file_and_a_job_that_ran_before_is_announced(
    stack: Stack, tmp_path: Path
) -> None:
    url = image(stack, tmp_path)
    request = tmp_path / "request.json"
    request.write_text(json.dumps({"jobId": "from-the-file", "imageUrls": ["s3://x/y.tif"]}))
    first = modelrunner(stack, *submit_args(stack, url, str(request), "--job-id", "newcomer-1"))
    assert first.returncode == 0, first.stderr
    assert "submitted job newcomer-1" in first.stdout
    assert "ran before" not in first.stdout
    again = modelrunner(stack, *submit_args(stack, url, "--job-id", "newcomer-1"))
    assert again.returncode == 0, again.stderr
    assert (
        "job newcomer-1 ran before and ended SUCCESS (run 1): this submission runs it again"
        in again.stdout
    )
    assert f"{url}: SUCCESS, 2 tiles (0 failed), 2 features" in again.stdout
    status = modelrunner(stack, "status", "newcomer-1")
    assert "SUCCESS (run 2)" in status.stdout


def test_a_failed_image_says_why_everywhere(stack: Stack, tmp_path: Path) -> None:
    url = image(stack, tmp_path, value=10)  # the failure model answers HTTP 500 to dark tiles
    waited = modelrunner(
        stack,
        *submit_args(stack, url, "--job-id", "newcomer-failed"),
        *("--custom-attributes", "model_selection=failure"),
    )
    assert waited.returncode == 1
    line = waited.stdout.splitlines()[-1]
    assert line.startswith(f"{url}: FAILED, 2 tiles (2 failed), 0 features; reason: all 2 tiles")
    status = modelrunner(stack, "status", "newcomer-failed")
    assert "FAILED (run 1), 1/1 regions, 2 tiles (2 failed), 0 features" in status.stdout
    assert "reason: all 2 tiles failed" in status.stdout
    results = modelrunner(stack, "results", "newcomer-failed", "--output-dir", str(tmp_path))
    assert results.returncode == 1
    assert "job newcomer-failed ended FAILED: all 2 tiles failed" in results.stderr


def test_an_output_that_keeps_failing_is_shown_while_waiting(stack: Stack, tmp_path: Path) -> None:
    url = image(stack, tmp_path)
    args = submit_args(stack, url, "--job-id", "newcomer-no-bucket")
    args[args.index("--output-bucket") + 1] = "no-such-bucket"
    waited = modelrunner(stack, *args)
    assert waited.returncode == 1
    assert "trying again in 1s (attempt 1 of 2)" in waited.stdout
    assert "no-such-bucket" in waited.stdout
    assert waited.stdout.splitlines()[-1].startswith(f"{url}: FAILED")


def test_localhost_is_loopback_like_127_0_0_1(stack: Stack, tmp_path: Path) -> None:
    url = image(stack, tmp_path)
    args = submit_args(stack, url, "--job-id", "newcomer-localhost")
    args[args.index("--endpoint") + 1] = stack.local.model_url.replace("127.0.0.1", "localhost")
    waited = modelrunner(stack, *args)
    assert waited.returncode == 0, waited.stdout + waited.stderr


def test_no_endpoint_answers_in_seconds_with_what_to_set(tmp_path: Path) -> None:
    started = time.monotonic()
    keys = {"AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s"}
    nowhere = {**CLEAN_ENV, "AWS_ENDPOINT_URL": "http://127.0.0.1:1", "AWS_REGION": "us-east-1"}
    unreachable = run_client("status", "some-job", env=nowhere | keys, cwd=tmp_path)
    assert time.monotonic() - started < 30
    assert unreachable.returncode == 2
    assert "cannot reach http://127.0.0.1:1" in unreachable.stderr
    assert "AWS_ENDPOINT_URL" in unreachable.stderr
    no_files = {
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"),
        "AWS_CONFIG_FILE": "/dev/null",
    }
    no_keys = run_client("status", "some-job", env=nowhere | no_files, cwd=tmp_path)
    assert no_keys.returncode == 2
    assert "no AWS credentials" in no_keys.stderr


def test_local_prints_resources_writes_the_env_file_and_stops_when_asked(tmp_path: Path) -> None:
    port = free_port()
    with subprocess.Popen(
        [sys.executable, "-m", "client.cli", "local", "--port", str(port)],
        env=CLEAN_ENV,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    ) as local:
        try:
            follow_the_local_stack(local, port, tmp_path)
        finally:
            if local.poll() is None:
                local.kill()


def follow_the_local_stack(local: "subprocess.Popen[str]", port: int, tmp_path: Path) -> None:
    """What ``modelrunner local`` shows, writes and does until it is interrupted."""
    lines = []
    assert local.stdout is not None
    for line in local.stdout:
        lines.append(line)
        if "running; Ctrl-C" in line:
            break
    shown = "".join(lines)
    assert f"emulator (AWS endpoint): http://127.0.0.1:{port}" in shown
    for words in ("image queue:", "status topic:", "results bucket:", "results stream:"):
        assert words in shown
    env_file = tmp_path / ".local-stack" / "modelrunner.env"
    assert f"settings for every other command: {env_file.relative_to(tmp_path)}" in shown
    assert f"AWS_ENDPOINT_URL=http://127.0.0.1:{port}" in env_file.read_text()
    s3 = boto3.client(
        "s3",
        endpoint_url=f"http://127.0.0.1:{port}",
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    assert s3.head_object(Bucket="modelrunner-images", Key="samples/i_3001a.ntf")
    # Another command in a shell without any variable finds the stack through the file.
    other = run_client("status", "nothing-yet", env=CLEAN_ENV, cwd=tmp_path)
    assert other.returncode == 1
    assert other.stderr == "modelrunner: no records of job nothing-yet\n"
    local.send_signal(signal.SIGINT)
    rest = local.communicate(timeout=60)[0]
    assert rest.splitlines()[0] == "stopping the local stack ..."
    assert "stopped worker" in rest
    assert rest.rstrip().endswith("local stack stopped")
    assert local.returncode == 0
    assert not env_file.exists()
