"""pytest plugin of rtcstack.testing (entry point ``pytest11``)."""
