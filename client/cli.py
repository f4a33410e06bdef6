"""``modelrunner``: submit image requests, follow them, fetch and preview their results, run the
local stack.

Works against any stack: AWS itself, an emulator through ``AWS_ENDPOINT_URL``, or the local
stack of ``modelrunner local``, whose env file every command reads (flags, then environment, then
that file). Every error is one line on stderr ending in a newline, and a non-zero exit code.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import boto3
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    EndpointConnectionError,
    NoCredentialsError,
    NoRegionError,
)

from client.records import describe, job_views
from client.results import NoResultsError, download_results, write_preview
from client.settings import AWS_CONFIG, ClientSettings, load_env_file
from client.submit import run_submit

AWS_VARIABLES = (
    "AWS_ENDPOINT_URL (an emulator, e.g. the one `modelrunner local` prints), AWS_REGION and"
    " credentials (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY or a profile)"
)


class Terminal:
    """stdout for results, stderr for errors, one line each."""

    def say(self, text: str) -> None:
        """A line of output."""
        sys.stdout.write(f"{text}\n")
        sys.stdout.flush()

    def err(self, text: str) -> None:
        """A line of error output, prefixed with the program's name."""
        sys.stderr.write(f"modelrunner: {text.removeprefix('modelrunner: ').rstrip()}\n")
        sys.stderr.flush()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="modelrunner", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    sub = commands.add_parser("submit", help="submit an ImageRequest")
    sub.add_argument("request", nargs="?", help="ImageRequest JSON file (flags override it)")
    sub.add_argument("--job-id")
    sub.add_argument("--image-url", action="append", help="image URL (repeat for several)")
    sub.add_argument("--endpoint", help="SageMaker endpoint name or HTTP URL")
    sub.add_argument(
        "--endpoint-type", default="HTTP_ENDPOINT", choices=["HTTP_ENDPOINT", "SM_ENDPOINT"]
    )
    sub.add_argument("--custom-attributes", help="CustomAttributes for the model")
    sub.add_argument("--output-bucket")
    sub.add_argument("--output-prefix", default="")
    sub.add_argument("--kinesis-stream")
    sub.add_argument("--tile-size", type=int)
    sub.add_argument("--tile-overlap", type=int)
    sub.add_argument("--tile-format")
    sub.add_argument("--tile-compression")
    sub.add_argument("--wait", action="store_true", help="follow the job to its terminal status")
    sub.add_argument("--timeout", type=float, default=3600.0, help="seconds to wait")
    sub = commands.add_parser("status", help="show the state of a job's images")
    sub.add_argument("job_id")
    sub.add_argument("--json", action="store_true", help="print the records as JSON")
    sub = commands.add_parser("results", help="download a job's GeoJSON results from S3")
    sub.add_argument("job_id")
    sub.add_argument("--output-dir", default=".", help="where to write the files")
    sub = commands.add_parser("preview", help="a PNG of the image with the detections drawn")
    sub.add_argument("job_id")
    sub.add_argument("--output", default=None, help="PNG path (default <jobId>.png)")
    sub.add_argument("--max-size", type=int, default=1024, help="longest side in pixels")
    sub = commands.add_parser("local", help="run the embedded local stack until interrupted")
    sub.add_argument("--port", type=int, help="the emulator's port (a free one by default)")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the process exit code."""
    args = _parser().parse_args(argv)
    console = Terminal()
    if args.command == "local":
        from client.local import run_local  # noqa: PLC0415 - only this command starts a stack

        try:
            return run_local(console.say, args.port)
        except RuntimeError as err:  # the local stack is not installed here
            console.err(str(err))
            return 2
    env_file = load_env_file()
    settings = ClientSettings()
    session = boto3.session.Session(region_name=settings.aws_region)
    try:
        if args.command == "submit":
            return run_submit(args, settings, session, console)
        return _job_command(args, settings, session, console)
    except (ValueError, OSError, TimeoutError, BotoCoreError, ClientError) as err:
        message, code = explain(err, env_file)
        console.err(message)
        return code


def explain(err: Exception, env_file: Path | None) -> tuple[str, int]:
    """The line to show for a failure and the exit code (2: the input or the setup, 1: the
    job or the service)."""
    if isinstance(err, NoResultsError | TimeoutError | ClientError):
        return str(err), 1
    if isinstance(err, ValueError | OSError):
        return str(err), 2
    if isinstance(err, NoCredentialsError | NoRegionError):
        return f"no AWS credentials or region ({err}); set {AWS_VARIABLES}", 2
    if isinstance(err, EndpointConnectionError):
        where = f" (from {env_file}: is `modelrunner local` running?)" if env_file else ""
        endpoint = err.kwargs.get("endpoint_url", "AWS")
        return f"cannot reach {endpoint}{where}; set {AWS_VARIABLES}", 2
    return str(err), 1


def _job_command(
    args: argparse.Namespace,
    settings: ClientSettings,
    session: boto3.session.Session,
    console: Terminal,
) -> int:
    """``status``, ``results`` and ``preview`` of a job."""
    dynamodb = session.client("dynamodb", config=AWS_CONFIG)
    views = job_views(dynamodb, settings.job_table, settings.job_index, args.job_id)
    if not views:
        console.err(f"no records of job {args.job_id}")
        return 1
    if args.command == "status":
        if args.json:
            console.say(json.dumps([v.as_json() for v in views], indent=2))
        else:
            for view in views:
                console.say(describe(view))
        return 0
    s3 = session.client("s3", config=AWS_CONFIG)
    if args.command == "results":
        for line in download_results(s3, views, Path(args.output_dir)):
            console.say(line)
        return 0
    console.say(write_preview(s3, views, args.output or f"{args.job_id}.png", args.max_size))
    return 0


if __name__ == "__main__":
    sys.exit(main())
