"""``modelrunner submit --wait`` without a status topic: which job records count as ended."""

from typing import Any

import pytest

from client.records import Submission, ended_for
from worker.contract.records import JobRecordView, view_of

SENT = Submission("m-2", sent_at_s=1000.0)


def view(
    status: str, submission_id: str | None = None, end_time: str | None = None
) -> JobRecordView:
    item: dict[str, Any] = {
        "image_id": {"S": "j:s3://b/i.tif"},
        "job_id": {"S": "j"},
        "image_url": {"S": "s3://b/i.tif"},
        "status": {"S": status},
        "region_count": {"N": "1"},
        "start_time": {"N": "900"},
        "deadline": {"N": "9000"},
    }
    if status != "IN_PROGRESS":
        item["final_status"] = {"S": status}
    if submission_id is not None:
        item["submission_id"] = {"S": submission_id}
    if end_time is not None:
        item["end_time"] = {"N": end_time}
    return view_of(item)


@pytest.mark.parametrize(
    ("record", "ended"),
    [
        (view("SUCCESS", "m-1", "990.5"), False),  # the last run
        (view("IN_PROGRESS", "m-2"), False),  # this run, going on
        (view("PARTIAL", "m-2", "1010"), True),  # this run
        (view("FAILED", "m-1", "1005"), True),  # the run it joined
        (view("SUCCESS", None, "990"), False),  # written before submission ids
    ],
)
def test_only_a_run_ended_for_the_submission_counts(record: JobRecordView, ended: bool) -> None:
    assert ended_for(record, SENT) is ended


def test_without_a_submission_any_terminal_status_counts() -> None:
    assert ended_for(view("SUCCESS"), None)
    assert not ended_for(view("IN_PROGRESS"), None)
