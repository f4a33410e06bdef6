"""Message holds and the fleet registry (:mod:`worker.poison`) in the job table.

Two kinds of item beside the image records, keyed so they never meet one (``image_id`` of an
image record is ``<jobId>:<imageUrl>``), and without the attributes of the table's sparse
indexes, so no index holds them:

* ``hold#<message key>``: ``holds``, a list of ``{w: worker, s: since, e: ended, x: error}``,
  appended to in one update (``list_append``), so two workers starting at once both land;
  it expires with the job records (``expire_time``).
* ``fleet#workers``: one attribute ``w:<worker>`` per worker, ``{s: started, b: last beat, i:
  beat interval, x: exited}``, each written by its worker alone. About 80 bytes a worker: the
  400 KB item holds a few thousand workers of the last ten minutes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from worker.adapters.aws_errors import aws_errors
from worker.contract.records import n_value as _n
from worker.contract.records import s_value as _s
from worker.poison import FleetEntry, Hold

if TYPE_CHECKING:
    from types_aiobotocore_dynamodb.client import DynamoDBClient
    from types_aiobotocore_dynamodb.type_defs import AttributeValueTypeDef

HOLD_PREFIX = "hold#"
FLEET_KEY = "fleet#workers"
WORKER_PREFIX = "w:"
SECONDS_PER_DAY = 86400


def _hold_of(value: Any) -> Hold:
    fields = value["M"]
    ended = fields.get("e")
    return Hold(
        worker=fields["w"]["S"],
        since=float(fields["s"]["N"]),
        ended=float(ended["N"]) if ended is not None else None,
        error=bool(fields.get("x", {}).get("BOOL", False)),
    )


def _entry_of(value: Any) -> FleetEntry:
    fields = value["M"]
    return FleetEntry(
        started=float(fields["s"]["N"]),
        beat=float(fields["b"]["N"]),
        interval_s=float(fields["i"]["N"]),
        exited=bool(fields.get("x", {}).get("BOOL", False)),
    )


@aws_errors("DynamoDB")
class DynamoHoldStore:
    """Holds and the fleet registry in the job table (hash key ``image_id``)."""

    def __init__(self, client: DynamoDBClient, table: str, ttl_days: int) -> None:
        """Write to ``table`` through ``client``; holds expire after ``ttl_days``."""
        self._client = client
        self._table = table
        self._ttl_s = ttl_days * SECONDS_PER_DAY

    async def begin(self, key: str, worker: str, now: float) -> tuple[list[Hold], int]:
        """Append this worker's hold; the holds before it and the index of the new one."""
        since = round(now, 3)
        new: AttributeValueTypeDef = {"M": {"w": _s(worker), "s": _n(since)}}
        reply = await self._client.update_item(
            TableName=self._table,
            Key={"image_id": _s(HOLD_PREFIX + key)},
            UpdateExpression="SET holds = list_append(if_not_exists(holds, :empty), :new),"
            " expire_time = :t",
            ExpressionAttributeValues={
                ":empty": {"L": []},
                ":new": {"L": [new]},
                ":t": _n(int(now + self._ttl_s)),
            },
            ReturnValues="ALL_NEW",
        )
        holds = [_hold_of(value) for value in reply["Attributes"]["holds"]["L"]]
        index = max(
            i for i, hold in enumerate(holds) if hold.worker == worker and hold.since == since
        )
        return holds[:index] + holds[index + 1 :], index

    async def end(self, key: str, index: int, now: float, error: bool) -> None:
        """End hold ``index``."""
        await self._client.update_item(
            TableName=self._table,
            Key={"image_id": _s(HOLD_PREFIX + key)},
            UpdateExpression=f"SET holds[{index}].e = :e, holds[{index}].x = :x",
            ExpressionAttributeValues={":e": _n(round(now, 3)), ":x": {"BOOL": error}},
        )

    async def fleet(self) -> dict[str, FleetEntry]:
        """Every worker in the registry."""
        reply = await self._client.get_item(
            TableName=self._table, Key={"image_id": _s(FLEET_KEY)}, ConsistentRead=True
        )
        item = reply.get("Item", {})
        return {
            name.removeprefix(WORKER_PREFIX): _entry_of(value)
            for name, value in item.items()
            if name.startswith(WORKER_PREFIX)
        }

    async def beat(self, worker: str, entry: FleetEntry) -> None:
        """Write ``worker``'s entry."""
        value: AttributeValueTypeDef = {
            "M": {
                "s": _n(round(entry.started, 3)),
                "b": _n(round(entry.beat, 3)),
                "i": _n(entry.interval_s),
                "x": {"BOOL": entry.exited},
            }
        }
        await self._client.update_item(
            TableName=self._table,
            Key={"image_id": _s(FLEET_KEY)},
            UpdateExpression="SET #w = :v",
            ExpressionAttributeNames={"#w": WORKER_PREFIX + worker},
            ExpressionAttributeValues={":v": value},
        )

    async def forget(self, workers: list[str]) -> None:
        """Remove ``workers`` from the registry."""
        names = {f"#w{i}": WORKER_PREFIX + worker for i, worker in enumerate(workers)}
        await self._client.update_item(
            TableName=self._table,
            Key={"image_id": _s(FLEET_KEY)},
            UpdateExpression="REMOVE " + ", ".join(names),
            ExpressionAttributeNames=names,
        )
