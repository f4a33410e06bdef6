"""``python -m client``: the ``modelrunner`` command line."""

import sys

from client.cli import main

sys.exit(main())
