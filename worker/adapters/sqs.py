"""SQS adapter: receive, delete, release, extend visibility, dead-letter explicitly.

A message the worker sends again itself (to wait for capacity, or for another worker's
finalisation) is a new SQS message with a new id; it carries the id of the submission it
continues in the ``modelrunner_submission_id`` message attribute, so it still counts as that
submission (see :mod:`worker.adapters.dynamodb`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from worker.adapters.aws_errors import aws_errors
from worker.ports import QueueMessage

if TYPE_CHECKING:
    from types_aiobotocore_sqs.client import SQSClient

log = logging.getLogger(__name__)

MAX_REASON_CHARS = 1000
SUBMISSION_ATTRIBUTE = "modelrunner_submission_id"


def _sent_at_s(value: str | None) -> float | None:
    try:
        return int(value) / 1000 if value else None
    except ValueError:
        return None


def _submission_id(attributes: Mapping[str, Any] | None) -> str:
    attribute = (attributes or {}).get(SUBMISSION_ATTRIBUTE) or {}
    return str(attribute.get("StringValue", ""))


@aws_errors("SQS")
class SqsQueue:
    """A work queue with its dead-letter queue."""

    def __init__(self, client: SQSClient, queue_url: str, dlq_url: str) -> None:
        """Use ``client`` for the queue at ``queue_url`` and its DLQ at ``dlq_url``."""
        self._client = client
        self.queue_url = queue_url
        self.dlq_url = dlq_url

    async def receive(
        self, max_messages: int, wait_s: int, visibility_s: int
    ) -> list[QueueMessage]:
        """Long-poll for up to ``max_messages`` messages, hidden for ``visibility_s``."""
        reply = await self._client.receive_message(
            QueueUrl=self.queue_url,
            MaxNumberOfMessages=max_messages,
            WaitTimeSeconds=wait_s,
            VisibilityTimeout=visibility_s,
            MessageSystemAttributeNames=["ApproximateReceiveCount", "SentTimestamp"],
            MessageAttributeNames=[SUBMISSION_ATTRIBUTE],
        )
        return [
            QueueMessage(
                message_id=m["MessageId"],
                receipt_handle=m["ReceiptHandle"],
                body=m.get("Body", ""),
                receive_count=int(m.get("Attributes", {}).get("ApproximateReceiveCount", "1")),
                sent_at_s=_sent_at_s(m.get("Attributes", {}).get("SentTimestamp")),
                submission_id=_submission_id(m.get("MessageAttributes")),
            )
            for m in reply.get("Messages", [])
        ]

    async def delete(self, message: QueueMessage) -> None:
        """Acknowledge a message."""
        await self._client.delete_message(
            QueueUrl=self.queue_url, ReceiptHandle=message.receipt_handle
        )

    async def set_visibility(self, message: QueueMessage, timeout_s: int) -> None:
        """Hide a message for ``timeout_s`` more seconds (0 releases it now)."""
        await self._client.change_message_visibility(
            QueueUrl=self.queue_url,
            ReceiptHandle=message.receipt_handle,
            VisibilityTimeout=timeout_s,
        )

    async def send(self, body: str, delay_s: int = 0, submission_id: str = "") -> None:
        """Send one message, visible after ``delay_s`` seconds, as part of ``submission_id``
        (if given)."""
        extra: dict[str, Any] = {}
        if submission_id:
            extra["MessageAttributes"] = {
                SUBMISSION_ATTRIBUTE: {"DataType": "String", "StringValue": submission_id}
            }
        await self._client.send_message(
            QueueUrl=self.queue_url, MessageBody=body, DelaySeconds=delay_s, **extra
        )

    async def dead_letter(self, message: QueueMessage, reason: str) -> None:
        """Copy the raw body to the DLQ with the reason as an attribute, then delete it."""
        await self.dead_letter_body(message.body, reason, message.message_id)
        await self.delete(message)

    async def dead_letter_body(self, body: str, reason: str, source_id: str = "") -> None:
        """Put ``body`` in the DLQ with the reason as an attribute."""
        attributes: dict[str, Any] = {
            "reason": {"DataType": "String", "StringValue": reason[:MAX_REASON_CHARS]}
        }
        if source_id:
            attributes["source_message_id"] = {"DataType": "String", "StringValue": source_id}
        await self._client.send_message(
            QueueUrl=self.dlq_url,
            MessageBody=body or "(empty message body)",
            MessageAttributes=attributes,
        )
        log.warning("message %s dead-lettered: %s", source_id or "(new)", reason[:200])
