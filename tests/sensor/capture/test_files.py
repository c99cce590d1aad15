"""Capture files: pure-Python reader, libpcap offline reader, both writers, options."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from tests.conftest import CORPUS, need_shared
from vmproto.sensor.capture import (
    CaptureFileReader,
    CaptureFormatError,
    CaptureOptionError,
    CaptureOptions,
    PcapngWriter,
    PcapWriter,
    libpcap,
    parse_interfaces,
    parse_port_list,
    read_capture,
)
from vmproto.testing import pcapgen as g

TS = 1_763_632_800_123_456_789
FRAMES = [g.ethernet(g.udp4("192.0.2.1", "192.0.2.2", 5060, 5060 + i, b"p" * i)) for i in range(10)]


def _flat(batches) -> list[tuple[int, int, bytes, int]]:
    return [(b.linktype, t, f, o) for b in batches for t, f, o in zip(b.ts_ns, b.frames, b.orig_len, strict=True)]


@pytest.mark.parametrize("nanosecond", [True, False])
def test_pcap_writer_reader_and_libpcap_agree(tmp_path: Path, nanosecond: bool) -> None:
    path = tmp_path / "a.pcap"
    with PcapWriter(path, 1, snaplen=50, nanosecond=nanosecond) as w:
        for i, f in enumerate(FRAMES):
            w.write(TS + i, f)
    ours = _flat(read_capture(path))
    theirs = _flat(libpcap.read_offline(path))
    assert ours == theirs
    expect_ts = [TS + i if nanosecond else (TS + i) // 1000 * 1000 for i in range(10)]
    assert [r[1] for r in ours] == expect_ts
    assert [r[2] for r in ours] == [f[:50] for f in FRAMES]
    assert [r[3] for r in ours] == [len(f) for f in FRAMES]


def test_pcapng_writer_mixed_link_types(tmp_path: Path) -> None:
    path = tmp_path / "a.pcapng"
    ip = g.udp4("192.0.2.1", "192.0.2.2", 1, 2, b"x")
    with PcapngWriter(path) as w:
        w.write(TS, g.ethernet(ip), 1)
        w.write(TS + 1, ip, 101)
        w.write(TS + 2, g.ethernet(ip), 1)
    batches = read_capture(path)
    assert [(b.linktype, len(b.frames)) for b in batches] == [(1, 1), (101, 1), (1, 1)]
    # libpcap refuses files whose interfaces differ in link type; the pure-Python reader splits batches.
    with pytest.raises(libpcap.CaptureError):
        libpcap.read_offline(path)
    assert [r[1] for r in _flat(batches)] == [TS, TS + 1, TS + 2]


def test_libpcap_dumper_output_reads_back(tmp_path: Path) -> None:
    path = tmp_path / "d.pcap"
    with libpcap.PcapDumper(path, 1) as d:
        for i, f in enumerate(FRAMES):
            d.write(TS + i, f)
    assert [(t, f) for _, t, f, _ in _flat(read_capture(path))] == [(TS + i, f) for i, f in enumerate(FRAMES)]


def test_dispatch_and_next_ex_read_the_same(tmp_path: Path) -> None:
    path = tmp_path / "b.pcap"
    g.write_pcap(path, 1, [(TS + i, f) for i, f in enumerate(FRAMES * 50)])
    with libpcap.PcapHandle.open_offline(path) as h:
        got = []
        while (b := h.dispatch(64)) is not None:
            got.append(b)
    assert _flat(got) == _flat(libpcap.read_offline(path, 64)) == _flat(read_capture(path))


def test_batches_are_bounded(tmp_path: Path) -> None:
    path = tmp_path / "c.pcap"
    g.write_pcap(path, 1, [(TS + i, FRAMES[0]) for i in range(1000)])
    with CaptureFileReader(path, batch_size=128) as r:
        sizes = [len(b.frames) for b in r]
    assert max(sizes) == 128 and sum(sizes) == 1000


def test_truncated_last_record_is_ignored() -> None:
    buf = io.BytesIO()
    g.write_pcap(buf, 1, [(TS, f) for f in FRAMES])
    data = buf.getvalue()[:-5]
    with CaptureFileReader(io.BytesIO(data)) as r:
        assert sum(len(b.frames) for b in r) == 9
        assert r.truncated_tail


@pytest.mark.parametrize("blob", [b"", b"\x00\x01\x02\x03" * 10, b"\xd4\xc3\xb2\xa1\x02\x00",
                                  b"\x0a\x0d\x0d\x0a" + b"\xff" * 20])
def test_bad_files_raise_format_error(blob: bytes) -> None:
    with pytest.raises(CaptureFormatError):
        read_capture(blob)


def test_corrupt_record_length_raises() -> None:
    buf = io.BytesIO()
    g.write_pcap(buf, 1, [(TS, FRAMES[0])])
    data = bytearray(buf.getvalue())
    data[24 + 8 : 24 + 12] = (50_000_000).to_bytes(4, "little")
    with pytest.raises(CaptureFormatError):
        read_capture(bytes(data))


def test_libpcap_errors() -> None:
    with pytest.raises(libpcap.CaptureError):
        libpcap.PcapHandle.open_offline("/nonexistent/x.pcap")
    with pytest.raises(libpcap.CaptureError):
        libpcap.PcapHandle.open_live("no-such-if-vmp")


def test_corpus_pcapng_same_as_libpcap() -> None:
    for name in ("pub_heplify_gre_teb_sip.pcapng", "pub_hepws_hep3_compressed.pcapng", "gen_base_sll.pcap"):
        path = need_shared(CORPUS / "pcaps" / name)
        assert _flat(read_capture(path)) == _flat(libpcap.read_offline(path))


def test_port_lists_and_interfaces() -> None:
    assert parse_port_list("5060,5061-5063, 6060") == {5060, 5061, 5062, 5063, 6060}
    for bad in ("", "x", "5065-5060", "0", "70000", "1-2-3"):
        with pytest.raises(CaptureOptionError):
            parse_port_list(bad)
    assert parse_interfaces("eth0, eth1") == ("eth0", "eth1")
    for bad in ("", "any,eth0", "eth0,eth0", "bad name", "x" * 16):
        with pytest.raises(CaptureOptionError):
            parse_interfaces(bad)
    assert CaptureOptions().snaplen == 3200 and CaptureOptions().ringbuffer_mb == 50
    for kw in ({"snaplen": 10}, {"ringbuffer_mb": 0}, {"filter": "a\x00"}, {"sipport": frozenset()}):
        with pytest.raises(CaptureOptionError):
            CaptureOptions(**kw)
