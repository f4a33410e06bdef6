"""``modelrunner local``: the embedded local stack for a person at a terminal.

Starts the emulator, the model server, the SageMaker router and a worker, uploads the sample
image, prints every resource a user needs and writes them to the env file the other commands
read (:mod:`client.settings`), then runs until Ctrl-C and says what it is stopping.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from pathlib import Path

from client.settings import ENV_FILE, write_env_file
from infra.local_stack import SAMPLE_IMAGE, LocalStack

LOG_DIR = Path(".local-stack")
SAMPLE_KEY = f"samples/{SAMPLE_IMAGE.name}"


def describe_stack(stack: LocalStack, env_file: Path) -> list[str]:
    """What a user of the stack needs, a line each."""
    resources = stack.resources
    sample = f"s3://{resources.image_bucket}/{SAMPLE_KEY}"
    return [
        f"emulator (AWS endpoint): {stack.endpoint_url}",
        f"model server:            {stack.model_url}"
        " (or SageMaker endpoints centerpoint, flood, failure, throttle)",
        f"image queue:             {resources.image_queue_url}",
        f"region queue:            {resources.region_queue_url}",
        f"status topic:            {resources.status_topic_arn}",
        f"images bucket:           s3://{resources.image_bucket} (sample: {sample})",
        f"results bucket:          s3://{resources.bucket}",
        f"results stream:          {resources.stream}",
        f"job table:               {resources.job_table}",
        f"settings for every other command: {env_file}"
        " (read automatically here; `source` it for other tools)",
        "try: modelrunner submit --image-url " + sample + " --endpoint centerpoint"
        " --endpoint-type SM_ENDPOINT --output-bucket "
        + resources.bucket
        + " --output-prefix first --tile-size 512 --tile-overlap 128 --wait",
    ]


def run_local(say: Callable[[str], None], port: int | None = None) -> int:
    """Run the stack until SIGINT/SIGTERM."""
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    say(f"starting the local stack (logs in {LOG_DIR}/)")
    with LocalStack(LOG_DIR, moto_port=port, report=say) as stack:
        stack.start_worker(MODELRUNNER_GRACE_PERIOD_S="5")
        stack.wait_for_log("worker", "worker polling")
        s3 = stack.client("s3")
        s3.upload_file(str(SAMPLE_IMAGE), stack.resources.image_bucket, SAMPLE_KEY)
        env_file = write_env_file({**stack.aws_env, **stack.resources.worker_environment()})
        for line in describe_stack(stack, env_file):
            say(line)
        say("running; Ctrl-C stops everything")
        stop.wait()
        say("stopping the local stack ...")
    if ENV_FILE.exists():
        ENV_FILE.unlink()  # its endpoint is gone: no command should try it
    say("local stack stopped")
    return 0
