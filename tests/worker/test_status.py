"""Status messages stay bounded whatever the reason they quote."""

from worker.status import MAX_DESCRIPTION_CHARS, Status, StatusEvent


def test_long_descriptions_are_cut_with_the_count() -> None:
    event = StatusEvent(status=Status.FAILED, job_id="j", description="x" * 10_000)
    message = event.sns_message()
    assert message.startswith("StatusMonitor update: FAILED j: xxx")
    assert message.endswith(f"... ({10_000 - MAX_DESCRIPTION_CHARS} more characters)")
    assert len(message) < MAX_DESCRIPTION_CHARS + 100


def test_short_descriptions_are_kept() -> None:
    event = StatusEvent(status=Status.SUCCESS, job_id="j", description="done")
    assert event.sns_message() == "StatusMonitor update: SUCCESS j: done"
