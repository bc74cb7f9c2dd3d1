"""rtcstack benchmarks: `python -m bench` (or `scripts/bench`, inside a private network namespace).

Every figure is measured for rtcstack's `Call` and for the raw `livekit.rtc.Room` side by side in the same run,
in alternating runs, and printed as one table that is also written to BENCHMARKS.md.
"""
