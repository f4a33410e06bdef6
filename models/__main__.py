"""``python -m models``: run the synthetic model server."""

from models.server import main

main()
