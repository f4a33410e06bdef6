"""Assumed-role clients with hand-written fakes of STS and the client factory."""

import asyncio
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError, ParamValidationError

from worker.adapters.credentials import READ_VALIDITY_S, REFRESH_MARGIN_S, RoleClients
from worker.errors import PermanentError, RetryableError, RoleError
from worker.roles import image_read_credentials


class FakeSts:
    def __init__(self, lifetime_s: float = 3600, clock: Callable[[], float] | None = None) -> None:
        self.calls: list[str] = []
        self.lifetime_s = lifetime_s
        self.clock = clock or time.time

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
                "Expiration": datetime.fromtimestamp(self.clock() + self.lifetime_s, UTC),
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
        with pytest.raises(
            RoleError, match="cannot assume role arn:aws:iam::123456789012:role/denied"
        ):
            await roles.client("s3", "arn:aws:iam::123456789012:role/denied")
        await roles.close()
        assert all(client.closed for client in made)

    with caplog.at_level(logging.DEBUG):
        sts = FakeSts()
        asyncio.run(scenario(sts))
    assert sts.calls.count("arn:aws:iam::1:role/writer") == 1  # one STS call for both services
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


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def test_read_credentials_share_the_role_cache_and_refresh_before_expiry() -> None:
    made: list[FakeClient] = []

    def create_client(service: str, **kwargs: Any) -> FakeClient:
        made.append(FakeClient(service, kwargs))
        return made[-1]

    async def scenario(sts: FakeSts, clock: FakeClock) -> None:
        roles = RoleClients(create_client, sts, "us-east-1", clock)  # type: ignore[arg-type]
        keys = await roles.read_credentials("arn:aws:iam::1:role/reader")
        assert (keys.access_key_id, keys.secret_access_key) == ("AKID1", "secret-1")
        assert keys.session_token == "token-1"
        assert "secret" not in repr(keys)
        assert "AKID" not in repr(keys)
        client = await roles.client("s3", "arn:aws:iam::1:role/reader")
        assert client.kwargs["aws_session_token"] == "token-1"  # the same STS answer
        clock.now += 3600 - READ_VALIDITY_S - 1  # still long enough for a region's reads
        assert await roles.read_credentials("arn:aws:iam::1:role/reader") is keys
        clock.now += 2  # too little left for reads: new keys; clients keep theirs
        fresh = await roles.read_credentials("arn:aws:iam::1:role/reader")
        assert fresh.session_token == "token-2"
        assert await roles.client("s3", "arn:aws:iam::1:role/reader") is client
        clock.now += 3600 - READ_VALIDITY_S - REFRESH_MARGIN_S  # the first client's margin
        renewed = await roles.client("s3", "arn:aws:iam::1:role/reader")
        assert renewed is not client
        assert client.closed
        assert renewed.kwargs["aws_session_token"] == "token-2"
        await roles.close()

    clock = FakeClock()
    sts = FakeSts(clock=clock)
    asyncio.run(scenario(sts, clock))
    assert sts.calls == ["arn:aws:iam::1:role/reader"] * 2


class UnreachableSts:
    async def assume_role(self, **kwargs: Any) -> dict[str, Any]:
        raise EndpointConnectionError(endpoint_url="https://sts.example")


class MalformedSts:
    async def assume_role(self, **kwargs: Any) -> dict[str, Any]:
        raise ParamValidationError(report="Invalid length for parameter RoleArn\nvalue: 3")


def test_image_read_credentials_name_the_field_and_keep_retryable_apart() -> None:
    def roles(sts: object) -> RoleClients:
        return RoleClients(lambda *a, **k: None, sts, "us-east-1")  # type: ignore[arg-type]

    async def scenario() -> None:
        assert await image_read_credentials(roles(FakeSts()), None) is None
        with pytest.raises(
            RoleError, match=r"^cannot assume imageReadRole arn:aws:iam::123456789012:role/denied: "
        ):
            await image_read_credentials(roles(FakeSts()), "arn:aws:iam::123456789012:role/denied")
        with pytest.raises(
            RoleError, match=r"^cannot assume role bad: Parameter validation failed"
        ):
            await roles(MalformedSts()).read_credentials("bad")
        with pytest.raises(RetryableError, match="STS unavailable") as caught:
            await image_read_credentials(
                roles(UnreachableSts()), "arn:aws:iam::123456789012:role/r"
            )
        assert not isinstance(caught.value, PermanentError)
        with pytest.raises(RoleError, match="cannot assume imageReadRole arn:x: not an IAM role"):
            await image_read_credentials(roles(FakeSts()), "arn:x")
        with pytest.raises(RoleError, match=r"cannot assume imageReadRole .*: this worker cannot"):
            await image_read_credentials(None, "arn:aws:iam::123456789012:role/r")

    asyncio.run(scenario())
