"""A handler module that takes long to import, as a worker loading a large model at import does.

The sleep is bounded (60 s), so a worker a test forgets still finishes importing and exits.
"""

from __future__ import annotations

import time

from tests.worker.blocking_handler import BlockForever

time.sleep(60)


class SlowToImport(BlockForever):
    name = "slow-import"
