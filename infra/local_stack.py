"""The embedded local stack: moto in server mode, the synthetic model server and workers, all as
real processes on 127.0.0.1. ``python -m infra.local_stack`` (``make run``) runs one job end to
end on it and stops everything it started.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any

import boto3

from infra.bootstrap import Resources, provision

SAMPLE_IMAGE = Path(__file__).parent / "sample" / "i_3001a.ntf"
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 30.0


def free_port() -> int:
    """A TCP port free on the loopback interface."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_until_up(url: str, timeout_s: float = START_TIMEOUT_S) -> None:
    """Poll ``url`` until it answers (any HTTP status) or fail after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except urllib.error.HTTPError:
            return
        except OSError as err:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{url} did not come up in {timeout_s:.0f}s") from err
            time.sleep(0.1)


def aws_environment(endpoint_url: str, region: str = "us-east-1") -> dict[str, str]:
    """Variables that point boto3, aiobotocore and GDAL's /vsis3 at an emulator."""
    host = endpoint_url.removeprefix("http://").removeprefix("https://").rstrip("/")
    return {
        "AWS_ENDPOINT_URL": endpoint_url,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": region,
        "AWS_REGION": region,
        "AWS_S3_ENDPOINT": host,
        "AWS_HTTPS": "NO",
        "AWS_VIRTUAL_HOSTING": "FALSE",
        "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",
    }


class LocalStack:
    """Starts and stops the emulator, the model server and workers."""

    def __init__(
        self,
        log_dir: Path,
        moto_env: dict[str, str] | None = None,
        before_provision: Callable[[str], dict[str, str]] | None = None,
        moto_port: int | None = None,
        report: Callable[[str], None] | None = None,
    ) -> None:
        """Write each process's output to a file in ``log_dir``.

        ``moto_env`` is added to the emulator's environment (``INITIAL_NO_AUTH_ACTION_COUNT``
        turns IAM enforcement on after that many requests). ``before_provision`` runs with the
        emulator's URL once it is up, before the resources are made; the variables it returns
        (the keys to act with, say) override this stack's AWS environment. ``moto_port`` keeps
        the emulator on a known port (a free one by default); ``report`` hears what is being
        stopped.
        """
        self.log_dir = log_dir
        self._moto_env = moto_env or {}
        self._before_provision = before_provision
        self.moto_port = moto_port or free_port()
        self._report = report
        self.model_port = free_port()
        self.endpoint_url = f"http://127.0.0.1:{self.moto_port}"
        self.model_url = f"http://127.0.0.1:{self.model_port}/invocations"
        self.router_port = free_port()
        self.aws_env = {
            **aws_environment(self.endpoint_url),
            # SageMaker runtime calls go to the local router, which forwards to the models.
            "AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME": f"http://127.0.0.1:{self.router_port}",
        }
        self._processes: list[subprocess.Popen[bytes]] = []
        self._names: dict[int, str] = {}
        self._resources: Resources | None = None
        self.hypha_token = ""
        self.hypha_process: subprocess.Popen[bytes] | None = None

    @property
    def resources(self) -> Resources:
        """The provisioned resources."""
        if self._resources is None:
            raise RuntimeError("the local stack is not started")
        return self._resources

    def _spawn(self, name: str, args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        with (self.log_dir / f"{name}.log").open("ab") as log_file:
            process = subprocess.Popen(
                [sys.executable, *args],
                env={**os.environ, **env},
                stdout=log_file,
                stderr=subprocess.STDOUT,
            )
        self._processes.append(process)
        self._names[process.pid] = name
        return process

    def start(self) -> Resources:
        """Start moto and the model server, wait for them, provision the resources."""
        if importlib.util.find_spec("moto") is None:
            raise RuntimeError("the local stack needs moto: pip install 'modelrunner[local]'")
        self._spawn(
            "moto",
            ["-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.moto_port)],
            self._moto_env,
        )
        self._spawn("models", ["-m", "models", "--port", str(self.model_port)], {})
        self._spawn(
            "sagemaker-router",
            [
                *("-m", "infra.sagemaker_router", "--port", str(self.router_port)),
                *("--model-url", self.model_url),
                *("--control-plane", self.endpoint_url),
            ],
            dict(self.aws_env),  # credentials for asking the emulator which endpoints exist
        )
        wait_until_up(f"{self.endpoint_url}/moto-api/")
        wait_until_up(f"http://127.0.0.1:{self.model_port}/ping")
        wait_until_up(f"http://127.0.0.1:{self.router_port}/")
        if self._before_provision is not None:
            self.aws_env.update(self._before_provision(self.endpoint_url))
        os.environ.update(self.aws_env)
        self._resources = provision(self.endpoint_url)
        return self._resources

    def start_hypha(self) -> str:
        """Start a local Hypha server (``hypha[s3]``, offline, MCP on); its URL.

        Its root token is ``self.hypha_token``. Prints the ``export`` line that points the
        bioimage.io tools at it. Not started by :meth:`start`: only bioimage.io work needs it.
        """
        port = free_port()
        self.hypha_token = secrets.token_urlsafe(32)
        database = self.log_dir / f"hypha-{port}.sqlite"
        self.hypha_process = self._spawn(
            "hypha",
            [
                *("-m", "hypha.server", "--host", "127.0.0.1", "--port", str(port)),
                # --from-env reads HYPHA_ROOT_TOKEN: the token stays off the command line.
                *("--enable-mcp", "--from-env"),
                *("--database-uri", f"sqlite+aiosqlite:///{database}"),
            ],
            {"HYPHA_ROOT_TOKEN": self.hypha_token},
        )
        url = f"http://127.0.0.1:{port}"
        wait_until_up(f"{url}/health/readiness")
        print(f"export MODELRUNNER_BIOIMAGEIO_SERVER={url}")  # noqa: T201
        return url

    def worker_environment(self, **overrides: str) -> dict[str, str]:
        """Everything a worker process needs to run against this stack."""
        return {
            **self.aws_env,
            **self.resources.worker_environment(),
            "MODELRUNNER_POLL_WAIT_S": "1",
            "MODELRUNNER_IMAGE_URL_SCHEMES": "s3,file",
            "MODELRUNNER_ENDPOINT_HOSTS": "127.0.0.1",
            "MODELRUNNER_PROGRESS_INTERVAL_S": "1",
            "MODELRUNNER_LOG_FORMAT": "text",
            **overrides,
        }

    def start_worker(self, name: str = "worker", **overrides: str) -> subprocess.Popen[bytes]:
        """Start a worker process (``python -m worker``)."""
        return self._spawn(name, ["-m", "worker"], self.worker_environment(**overrides))

    def wait_for_log(self, name: str, text: str, timeout_s: float = START_TIMEOUT_S) -> None:
        """Wait until process ``name`` has written ``text`` to its log."""
        path = self.log_dir / f"{name}.log"
        deadline = time.monotonic() + timeout_s
        while text not in (path.read_text(errors="replace") if path.exists() else ""):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{name} did not log {text!r} in {timeout_s:.0f}s")
            time.sleep(0.1)

    def client(self, service: str) -> Any:
        """A boto3 client of ``service`` on this stack's emulator."""
        make: Any = boto3.client  # one call for every service name
        return make(service, endpoint_url=self.endpoint_url, region_name="us-east-1")

    def stop(self) -> None:
        """SIGTERM the workers and wait for them (they release their messages), then the rest
        at once; kill what is still running after ``STOP_TIMEOUT_S``."""
        processes, self._processes = self._processes, []
        workers = [p for p in processes if self._names.get(p.pid, "").startswith("worker")]
        for group in (workers, [p for p in processes if p not in workers]):
            for process in group:
                if process.poll() is None:
                    process.send_signal(signal.SIGTERM)
            for process in group:
                try:
                    process.wait(STOP_TIMEOUT_S)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
                if self._report is not None:
                    self._report(f"stopped {self._names.get(process.pid, 'a process')}")

    def __enter__(self) -> LocalStack:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.stop()
