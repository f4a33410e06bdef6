"""``python -m worker``: run the ModelRunner worker."""

from worker.signals import EarlyStop

# Before the service's imports (about a second): a stop asked for meanwhile is kept, not fatal.
early_stop = EarlyStop()
early_stop.install()

from worker.service import main  # noqa: E402  (after the early stop, on purpose)

main(early_stop)
