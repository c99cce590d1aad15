"""voipmonitor.conf parsing follows the reference's rules (first value wins, yesno, inline comments)."""

import logging

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vmproto import config


def test_reference_syntax():
    cfg = config.load_text(
        """
[general]
# a comment
; another
server_bind = 127.0.0.1
server_bind_port = 60025   # inline comment
server_password=refpass
server_type_compress = gzip
packetbuffer_sender = yes
remote_query = no
sipport = 5060,5061
sipport = 5080-5082
interface = eth0, eth1
server_bind_port = 1
"""
    )
    assert cfg.server_bind == "127.0.0.1"
    assert cfg.server_bind_port == 60025  # first occurrence wins, as in the reference
    assert cfg.server_password == "refpass"
    assert cfg.server_type_compress == 1
    assert cfg.packetbuffer_sender is True
    assert cfg.remote_query is False
    assert cfg.sipport == (5060, 5061, 5080, 5081, 5082)
    assert cfg.interface == ("eth0", "eth1")


def test_defaults_match_reference():
    cfg = config.defaults()
    assert cfg.server_bind_port == 60024
    assert cfg.server_sql_concat_limit == 1000
    assert cfg.server_sql_queue_limit == 1_000_000
    assert cfg.client_server_connect_maximum_time_diff_s == 2
    assert cfg.receive_packetbuffer_maximum_time_diff_s == 30
    assert cfg.id_sensor == -1
    assert cfg.managerport == 5029
    assert cfg.sipport == (5060,)


@pytest.mark.parametrize(("text", "expected"), [("yes", True), ("Y", True), ("1", True), ("no", False),
                                                ("true", False), ("0", False)])
def test_yesno_is_first_character(text, expected):
    assert config.parse_yesno(text) is expected


def test_unknown_option_warns_and_is_kept(caplog):
    with caplog.at_level(logging.WARNING, logger="vmproto.config"):
        cfg = config.load_text("frobnicate = 3\n")
    assert cfg.get("frobnicate") == "3"
    assert "unknown option frobnicate" in caplog.text


def test_bad_value_names_the_line():
    with pytest.raises(config.ConfigError, match="line 2: server_bind_port"):
        config.load_text("server_bind = x\nserver_bind_port = abc\n")


def test_aliases():
    cfg = config.load_text("use_blocks = yes\npacketbuffer_sender_require_confirmation = no\n")
    assert cfg.pcap_queue_use_blocks is True
    assert cfg.mirror_require_confirmation is False


def test_secrets_redacted():
    cfg = config.load_text("server_password = hunter2\n")
    assert cfg.redacted()["server_password"] == "***"
    assert "hunter2" not in repr(cfg.redacted())


@given(st.text(max_size=300))
def test_any_text_parses_or_raises_config_error(text):
    try:
        config.load_text(text)
    except config.ConfigError:
        pass


def test_port_lists_reject_out_of_range():
    with pytest.raises(config.ConfigError):
        config.parse_ports(["70000"])
    assert config.parse_ports(["5065-5063"]) == (5063, 5064, 5065)


def test_deduplicate_ipheader_three_ways():
    assert config.load_text("deduplicate_ipheader = ip_only\n").deduplicate_ipheader == "ip_only"
    assert config.load_text("deduplicate_ipheader = no\n").deduplicate_ipheader == "no"
    assert config.defaults().deduplicate_ipheader == "yes"
