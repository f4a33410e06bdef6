"""``python -m worker``: run the ModelRunner worker."""

from worker.service import main

main()
