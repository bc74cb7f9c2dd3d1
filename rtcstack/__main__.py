"""The `rtcstack` command line (also `python -m rtcstack`); the commands live in `rtcstack._cli`."""

from __future__ import annotations

import sys

from ._cli import main

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main())
