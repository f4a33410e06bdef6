"""Errors of the worker; the loop routes messages on what kind of error ended their work."""

import re


class WorkerError(Exception):
    """Root of every error raised by :mod:`worker`."""


class PermanentError(WorkerError):
    """Retrying cannot help: the message gets a FAILED status and goes to the dead-letter queue."""


class RetryableError(WorkerError):
    """A transient condition: the message is released and tried again later."""


class InvalidRequestError(PermanentError, ValueError):
    """The ImageRequest is malformed; the message names the field and the reason."""


class ImageUnavailableError(PermanentError):
    """The image cannot be opened or read."""


class EndpointError(WorkerError):
    """A model endpoint call failed."""


class EndpointRetryableError(EndpointError, RetryableError):
    """Throttling, 5xx, timeouts and connection errors from a model endpoint."""

    def __init__(
        self,
        message: str,
        retry_after_s: float | None = None,
        *,
        throttled: bool = False,
        unreachable: bool = False,
    ) -> None:
        """``retry_after_s``: how long the endpoint asked to wait (its Retry-After), if it did;
        ``throttled``: the endpoint said it is overloaded (429, 503, ThrottlingException);
        ``unreachable``: no reply at all (connection error or timeout)."""
        super().__init__(message)
        self.retry_after_s = retry_after_s
        self.throttled = throttled
        self.unreachable = unreachable


class EndpointPermanentError(EndpointError, PermanentError):
    """A model endpoint rejected the tile (4xx) or replied with something that is not GeoJSON."""


class SinkError(RetryableError):
    """An output (S3, Kinesis) could not be written after retries."""


class FinalisingElsewhere(WorkerError):
    """Another worker holds the image's finalisation lease: look again once it has expired.

    The message must not be dropped: if the lease holder died, this message is what brings the
    image to its end.
    """

    def __init__(self, job_id: str, image_url: str, retry_after_s: float) -> None:
        """The image, and when its lease will have expired if it is not renewed."""
        super().__init__(f"job {job_id} image {image_url}: another worker is finalising it")
        self.retry_after_s = retry_after_s


class RoleError(PermanentError):
    """A role cannot be assumed (denied, malformed ARN)."""

    def __init__(self, role_arn: str, reason: str, field: str = "role") -> None:
        """The role, what STS (or the ARN check) said, and the request field naming it."""
        super().__init__(f"cannot assume {field} {role_arn}: {reason}")
        self.role_arn = role_arn
        self.reason = reason


# arn:<partition>:iam::<account>:role/<path/name>, as IAM spells role ARNs.
ROLE_ARN = re.compile(r"arn:aws[a-z-]*:iam::\d{12}:role/[\w+=,.@/-]{1,512}")
