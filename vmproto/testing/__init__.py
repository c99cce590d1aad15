"""Generators and fixtures shared by tests, conformance and bench (pcap generator, call generator, MariaDB)."""
