"""The `rtcstack` command line (also `python -m rtcstack`)."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `rtcstack` console script."""
    del argv
    print("rtcstack: no commands yet", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
