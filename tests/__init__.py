"""Test suite; tests.peers holds the live-test harness shared with scripts/demo.py."""
