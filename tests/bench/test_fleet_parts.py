"""The pieces of bench/fleet.py that decide what a run means: addresses, CDR messages, /proc sampling, profiles."""

from __future__ import annotations

import os

import pytest

from bench._common import BenchError
from bench.fleet import Sampler, cdr_sql, cdr_templates, proc_sample, profile_top, sensor_address
from vmproto.wire.store_msg import StoreMessage, decode_store_message, encode_store_message


def test_sensor_addresses_are_distinct_loopback():
    addresses = [sensor_address(i) for i in range(0, 70_000, 7)]
    assert len(set(addresses)) == len(addresses)
    assert all(a.startswith("127.") and all(0 <= int(x) <= 255 for x in a.split(".")) for a in addresses)
    assert sensor_address(0) == "127.1.0.1" and sensor_address(250) == "127.1.1.1"
    with pytest.raises(BenchError):
        sensor_address(-1)


def test_cdr_messages_are_real_cdr_sql_unique_per_message():
    templates = cdr_templates(4)
    now = 1_800_000_000.0
    a = cdr_sql(templates[0], 101, 0, now)
    b = cdr_sql(templates[0], 101, 1, now)
    c = cdr_sql(templates[0], 102, 0, now)
    assert len({a, b, c}) == 3  # the central's duplicate digest must never skip one
    text = a.decode()
    assert "INSERT INTO cdr (" in text and "getIdOrInsertSIPRES" in text and "fleet-101-0@bench" in text
    assert "'2027-01-1" in text  # dated now, not the generator's 2025 date (partitions)
    message = StoreMessage(10, "2027-01-15 08:00:00", (a,))
    assert decode_store_message(encode_store_message(message)).queries == (a,)


def test_proc_sample_and_sampler_window():
    sample = proc_sample(os.getpid())
    assert sample is not None and sample.rss_MB > 1 and sample.cpu_s >= 0
    assert proc_sample(2**22 + 12345) is None
    sampler = Sampler(os.getpid())
    sampler.sample()
    sum(i * i for i in range(200_000))
    sampler.sample()
    summary = sampler.between(0, float("inf"))
    assert summary["rss_peak_MB"] > 1 and summary["cpu_percent"] >= 0
    assert Sampler(None).between(0, 1) == {}


def test_profile_top_counts_own_and_inclusive_samples():
    collapsed = "run (a.py:1);work (b.py:2) 5\nrun (a.py:1);work (b.py:9) 2\nrun (a.py:4) 1\nnot a line\n"
    assert profile_top(collapsed) == [("work (b.py)", 7, 7), ("run (a.py)", 1, 8)]
    assert profile_top("") == []


def test_client_stats_serialise_counters_as_dicts():
    import json

    from bench.fleet import ClientStats

    stats = ClientStats(window=(1.0, 2.0))
    stats.service_lost["pong timeout (window)"] += 2
    stats.ping_lateness.append(0.003)
    doc = json.loads(json.dumps(stats.to_json()))
    assert doc["service_lost"] == {"pong timeout (window)": 2}
    assert doc["window"] == [1.0, 2.0] and doc["ping_lateness"] == [0.003] and doc["connect_failed"] == {}
