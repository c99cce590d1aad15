"""Peers used to test the suite itself: a fault-injecting TCP proxy (`faultproxy`)."""
