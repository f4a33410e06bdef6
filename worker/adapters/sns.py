"""Status publishing to SNS (or to the log when no topic is configured)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from worker.adapters.aws_errors import aws_errors
from worker.contract.status import StatusEvent

if TYPE_CHECKING:
    from types_aiobotocore_sns.client import SNSClient

log = logging.getLogger(__name__)


@aws_errors("SNS")
class SnsStatusPublisher:
    """Publishes status events with the API's String message attributes."""

    def __init__(self, client: SNSClient, topic_arn: str) -> None:
        """Publish through ``client`` to ``topic_arn``."""
        self._client = client
        self._topic_arn = topic_arn

    async def publish(self, event: StatusEvent) -> None:
        """Publish one event."""
        log.info("%s", event.sns_message())
        await self._client.publish(
            TopicArn=self._topic_arn,
            Message=event.sns_message(),
            MessageAttributes={
                name: {"DataType": "String", "StringValue": value}
                for name, value in event.sns_attributes().items()
            },
        )


class LogStatusPublisher:
    """Writes status events to the log only (no status topic configured)."""

    async def publish(self, event: StatusEvent) -> None:
        """Log one event."""
        log.info("%s %s", event.sns_message(), event.sns_attributes())
