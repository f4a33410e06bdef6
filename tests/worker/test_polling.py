"""Receiving from both queues (worker/polling.py): an idle worker takes either kind of message
as soon as it arrives, and never has more polls open than it has room for."""

import asyncio

import pytest

from tests.fakes import RecordingQueue
from tests.service import message
from worker.errors import RetryableError
from worker.polling import Poller, Source
from worker.ports import QueueMessage

SCALE = 0.01  # one second of a poll's wait is 10 ms here


class Arrivals(RecordingQueue):
    """Messages put on it arrive during a long poll; counts the polls open at once."""

    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name
        self.arrived: asyncio.Queue[QueueMessage] = asyncio.Queue()
        self.open = 0
        self.most_open = 0
        self.waits: list[int] = []
        self.failure: Exception | None = None

    async def receive(
        self, max_messages: int, wait_s: int, visibility_s: int
    ) -> list[QueueMessage]:
        self.waits.append(wait_s)
        self.open += 1
        self.most_open = max(self.most_open, self.open)
        try:
            if self.failure is not None:
                raise self.failure
            return [await asyncio.wait_for(self.arrived.get(), wait_s * SCALE)]
        except TimeoutError:
            return []
        finally:
            self.open -= 1


def poller(regions: Arrivals, images: Arrivals) -> Poller:
    return Poller(Source(regions, 1, True), Source(images, 5, False), 20, 30)


def test_with_room_for_two_an_image_is_taken_while_the_region_poll_is_open() -> None:
    async def run() -> None:
        regions, images = Arrivals("regions"), Arrivals("images")
        polls = poller(regions, images)
        asyncio.get_running_loop().call_later(0.02, images.arrived.put_nowait, message("{}", "i"))
        started = asyncio.get_running_loop().time()
        (work,) = await polls.next(2, [])
        assert work.message.message_id == "i"
        assert not work.is_region
        assert asyncio.get_running_loop().time() - started < 0.1  # not after a region poll
        assert (regions.waits, images.waits) == ([20], [20])  # both long polls
        assert polls.open_polls == 1  # the region poll stays open: room is left for it
        regions.arrived.put_nowait(message("{}", "r"))
        (work,) = await polls.next(1, [])
        assert work.is_region
        assert regions.waits == [20]  # the same poll brought it

    asyncio.run(run())


def test_with_room_for_one_the_queues_are_polled_in_turn_regions_first() -> None:
    async def run() -> None:
        regions, images = Arrivals("regions"), Arrivals("images")
        polls = poller(regions, images)
        assert await polls.next(1, []) == []  # the region poll (short wait) was empty
        asyncio.get_running_loop().call_later(0.01, images.arrived.put_nowait, message("{}", "i"))
        (work,) = await polls.next(1, [])
        assert work.message.message_id == "i"
        assert (regions.waits, images.waits) == ([1], [5])
        assert regions.most_open + images.most_open == 2  # one at a time
        await polls.next(1, [])
        assert regions.waits == [1, 1]  # after work, regions first again

    asyncio.run(run())


def test_never_more_polls_than_room() -> None:
    async def run() -> None:
        regions, images = Arrivals("regions"), Arrivals("images")
        polls = poller(regions, images)
        for _ in range(3):
            regions.arrived.put_nowait(message("{}", "r"))
        taken = 0
        room = 2
        while taken < 3:
            works = await polls.next(room, [])
            assert polls.open_polls <= room - len(works)
            taken += len(works)
            room = max(1, room - len(works))
        assert regions.most_open == 1
        assert images.most_open == 1

    asyncio.run(run())


def test_what_open_polls_bring_at_the_stop_is_handed_back_to_release() -> None:
    async def run() -> None:
        regions, images = Arrivals("regions"), Arrivals("images")
        polls = poller(regions, images)
        stop: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        asyncio.get_running_loop().call_later(0.01, stop.set_result, None)
        assert await polls.next(2, [stop]) == []
        images.arrived.put_nowait(message("{}", "late"))
        (work,) = await polls.close()
        assert work.message.message_id == "late"
        assert polls.open_polls == 0

    asyncio.run(run())


def test_a_failed_poll_is_raised_and_the_other_keeps_what_it_brought() -> None:
    async def run() -> None:
        regions, images = Arrivals("regions"), Arrivals("images")
        regions.failure = RetryableError("SQS unavailable")
        images.arrived.put_nowait(message("{}", "i"))
        polls = poller(regions, images)
        with pytest.raises(RetryableError):
            await polls.next(2, [])
        regions.failure = None
        works = await polls.next(2, [])
        if not works:  # the image poll had not answered by the time the region poll failed
            works = await polls.next(2, [])
        (work,) = works
        assert work.message.message_id == "i"

    asyncio.run(run())
