"""Assumed-role clients with hand-written fakes of STS and the client factory."""

import asyncio
import logging
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from botocore.exceptions import ClientError

from worker.credentials import RoleClients, RoleError


class FakeSts:
    def __init__(self, lifetime_s: float = 3600) -> None:
        self.calls: list[str] = []
        self.lifetime_s = lifetime_s

    async def assume_role(self, **kwargs: Any) -> dict[str, Any]:
        self.calls.append(kwargs["RoleArn"])
        if "denied" in kwargs["RoleArn"]:
            raise ClientError({"Error": {"Code": "AccessDenied", "Message": "no"}}, "AssumeRole")
        n = len(self.calls)
        return {
            "Credentials": {
                "AccessKeyId": f"AKID{n}",
                "SecretAccessKey": f"secret-{n}",
                "SessionToken": f"token-{n}",
                "Expiration": datetime.now(UTC) + timedelta(seconds=self.lifetime_s),
            }
        }


class FakeClient:
    def __init__(self, service: str, kwargs: dict[str, Any]) -> None:
        self.service, self.kwargs, self.closed = service, kwargs, False

    async def __aenter__(self) -> "FakeClient":
        return self

    async def __aexit__(self, *args: object) -> None:
        self.closed = True


def test_role_clients_cache_refresh_and_errors(caplog: pytest.LogCaptureFixture) -> None:
    made: list[FakeClient] = []

    def create_client(service: str, **kwargs: Any) -> FakeClient:
        made.append(FakeClient(service, kwargs))
        return made[-1]

    async def scenario(sts: FakeSts) -> None:
        roles = RoleClients(create_client, sts, "us-east-1")  # type: ignore[arg-type]
        first = await roles.client("s3", "arn:aws:iam::1:role/writer")
        assert await roles.client("s3", "arn:aws:iam::1:role/writer") is first
        assert first.kwargs["aws_secret_access_key"] == "secret-1"
        assert first.kwargs["aws_session_token"] == "token-1"
        await roles.client("kinesis", "arn:aws:iam::1:role/writer")
        with pytest.raises(RoleError, match="cannot assume role arn:aws:iam::1:role/denied"):
            await roles.client("s3", "arn:aws:iam::1:role/denied")
        await roles.close()
        assert all(client.closed for client in made)

    with caplog.at_level(logging.DEBUG):
        sts = FakeSts()
        asyncio.run(scenario(sts))
    assert sts.calls.count("arn:aws:iam::1:role/writer") == 2  # once per service
    assert "secret-" not in caplog.text
    assert "token-" not in caplog.text

    async def near_expiry() -> None:
        short = FakeSts(lifetime_s=60)  # inside the refresh margin: a new client each time
        roles = RoleClients(create_client, short, "us-east-1")  # type: ignore[arg-type]
        one = await roles.client("s3", "arn:aws:iam::1:role/w")
        two = await roles.client("s3", "arn:aws:iam::1:role/w")
        assert one is not two
        assert one.closed
        await roles.close()

    asyncio.run(near_expiry())
