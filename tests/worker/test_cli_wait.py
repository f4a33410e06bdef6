"""``modelrunner submit --wait`` without a status topic: which job records count as ended."""

import pytest

from client.follow import Submission, ended_for

SENT = Submission("m-2", sent_at_s=1000.0)


@pytest.mark.parametrize(
    ("record", "ended"),
    [
        ({"status": "SUCCESS", "submission_id": "m-1", "end_time": "990.5"}, False),  # last run
        ({"status": "IN_PROGRESS", "submission_id": "m-2"}, False),  # this run, going on
        ({"status": "PARTIAL", "submission_id": "m-2", "end_time": "1010"}, True),  # this run
        ({"status": "FAILED", "submission_id": "m-1", "end_time": "1005"}, True),  # joined it
        ({"status": "SUCCESS", "end_time": "990"}, False),  # written before submission ids
    ],
)
def test_only_a_run_ended_for_the_submission_counts(record: dict[str, str], ended: bool) -> None:
    assert ended_for(record, SENT) is ended


def test_without_a_submission_any_terminal_status_counts() -> None:
    assert ended_for({"status": "SUCCESS"}, None)
    assert not ended_for({"status": "IN_PROGRESS"}, None)
