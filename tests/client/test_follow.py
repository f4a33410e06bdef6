"""Folding status message attributes into a job's progress."""

from client.follow import BAR_WIDTH, JobProgress

JOB = "job-1"
A = "s3://images/a.tif"
B = "s3://images/b.tif"


def event(status: str, url: str, **extra: str) -> dict[str, str]:
    return {"status": status, "job_id": JOB, "image_id": f"{JOB}:{url}", **extra}


def test_tiles_done_add_up_over_regions_and_images() -> None:
    progress = JobProgress(JOB, (A, B))
    progress.update(event("STARTED", A, tile_count="100"))
    progress.update(event("STARTED", B, tile_count="50"))
    progress.update(event("IN_PROGRESS", A, region_id="1", tiles_done="10", tile_count="60"))
    progress.update(event("IN_PROGRESS", A, region_id="2", tiles_done="20", tile_count="40"))
    progress.update(event("IN_PROGRESS", B, region_id="1", tiles_done="15", tile_count="50"))
    assert progress.line().endswith(" 30% 45/150 tiles, 0/2 images ended")
    assert progress.line().startswith("[" + "#" * 9 + "-" * (BAR_WIDTH - 9) + "]")
    assert not progress.finished


def test_late_or_repeated_progress_never_goes_backwards() -> None:
    progress = JobProgress(JOB, (A,))
    progress.update(event("STARTED", A, tile_count="10"))
    progress.update(event("IN_PROGRESS", A, region_id="1", tiles_done="7", tile_count="10"))
    progress.update(event("IN_PROGRESS", A, region_id="1", tiles_done="3", tile_count="10"))
    assert "7/10 tiles" in progress.line()


def test_an_image_ends_with_its_terminal_status_only() -> None:
    progress = JobProgress(JOB, (A, B))
    progress.update(event("STARTED", A, tile_count="4"))
    progress.update(event("SUCCESS", A))
    assert "4/4 tiles, 1/2 images ended" in progress.line()
    assert not progress.finished
    progress.update(event("FAILED", B))  # failed before it started: no tile count
    assert progress.finished
    assert progress.images[B].total == 0


def test_other_jobs_and_unknown_images_are_ignored() -> None:
    progress = JobProgress(JOB, (A,))
    progress.update({"status": "SUCCESS", "job_id": "other", "image_id": f"other:{A}"})
    progress.update(event("SUCCESS", "s3://images/elsewhere.tif"))
    assert not progress.finished
    assert progress.line().endswith("0% 0/? tiles, 0/1 images ended")


def test_a_rejected_request_ends_every_image() -> None:
    progress = JobProgress(JOB, (A, B))
    progress.update(event("SUCCESS", A))
    progress.update({"status": "FAILED", "job_id": JOB}, "StatusMonitor update: FAILED job-1: no")
    assert progress.finished
    assert progress.rejection == "StatusMonitor update: FAILED job-1: no"
    assert progress.images[A].status == "SUCCESS"
    assert progress.images[B].status == "FAILED"


def test_without_started_the_total_is_the_regions_heard_of() -> None:
    progress = JobProgress(JOB, (A,))
    progress.update(event("IN_PROGRESS", A, region_id="2", tiles_done="5", tile_count="8"))
    assert "5/8 tiles" in progress.line()
