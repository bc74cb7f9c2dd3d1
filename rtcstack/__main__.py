"""The `rtcstack` command line (also `python -m rtcstack`); the commands live in `rtcstack.cli`.

This entry point is the one module outside `rtcstack.cli` that imports it; the library never does.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import NoReturn

from .cli import main

__all__ = ["main", "run"]


def run() -> NoReturn:
    """Run the command, flush its output, and end the process without the interpreter's teardown.

    livekit 1.2.1's native threads may still call into Python while the interpreter finalizes, which aborts the
    process ("panic in a function that cannot unwind", SIGABRT; seen about 1 run in 15 after a refused connect
    on a loaded 2-core machine). The command is done by then, so nothing is lost by skipping the teardown.
    """
    code = main()
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    run()
