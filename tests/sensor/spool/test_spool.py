"""Spool: layout and confinement, per-call pcap writing (SIP, RTP full / header), LRU reopening, write
errors, options, index and cleaner."""

from __future__ import annotations

import os
from pathlib import Path

import dpkt
import pytest
import trio

from vmproto.sensor.calls import AnalyzerConfig, CallAnalyzer
from vmproto.sensor.capture.libpcap import PcapHandle
from vmproto.sensor.spool import (
    LINKTYPE_RAW,
    RtpMode,
    SpoolAccessError,
    SpoolCleaner,
    SpoolIndex,
    SpoolLayout,
    SpoolLimits,
    SpoolOptionError,
    SpoolOptions,
    SpoolWriter,
    execute_plan,
    parse_savertp,
    plan_cleanup,
    unit_of,
    unit_start,
)
from vmproto.testing.callgen import CallSpec, generate_call

T0 = 1_763_632_800  # 2025-11-20 10:00:00 UTC


def _calls(n: int = 2) -> list:
    packets = []
    for i in range(n):
        packets += generate_call(CallSpec(call_id=f"spool-{i}@test", seed=i, start_s=T0 + i * 61.5,
                                          rtp_seconds=1.0, caller_rtp_port=10000 + 2 * i,
                                          callee_rtp_port=20000 + 2 * i)).packets
    packets.sort(key=lambda p: p.ts_ns)
    return packets


async def _run(options: SpoolOptions, packets: list, *, flush_every: int = 50) -> tuple[SpoolWriter, list]:
    writer = SpoolWriter(options)
    cdrs: list = []
    analyzer = CallAnalyzer(AnalyzerConfig(), on_call_packet=writer.on_packet,
                            on_call_closed=lambda call, cdr: (writer.on_call_closed(call), cdrs.append(cdr)))
    async with trio.open_nursery() as nursery:
        await nursery.start(writer.run)
        for i, pkt in enumerate(packets):
            analyzer.feed(pkt)
            if i % flush_every == 0:
                await writer.flush()
        analyzer.finish()
        await writer.aclose()
    return writer, cdrs


def _read(path: Path) -> tuple[int, list[tuple[float, bytes, int]]]:
    """(linktype, [(ts, captured bytes, orig_len)]) read back with dpkt."""
    with open(path, "rb") as f:
        reader = dpkt.pcap.Reader(f)
        out = []
        for ts, buf in reader:
            out.append((ts, buf, len(buf)))
        return reader.datalink(), out


def _orig_lens(path: Path) -> list[int]:
    import struct

    data = path.read_bytes()[24:]
    lens = []
    while data:
        _s, _u, incl, orig = struct.unpack_from("<IIII", data)
        lens.append(orig)
        data = data[16 + incl:]
    return lens


# ---- layout ---------------------------------------------------------------------------------------------------


def test_layout_paths_follow_the_reference_naming(tmp_path: Path) -> None:
    layout = SpoolLayout([tmp_path])
    ns = (T0 + 3 * 3600 + 7 * 60 + 5) * 1_000_000_000
    assert layout.call_relpath("abc@host", ns, "sip") == "2025-11-20/13/07/SIP/abc@host.pcap"
    assert layout.call_relpath("abc@host", ns, "rtcp") == "2025-11-20/13/07/RTP/abc@host.pcap"
    assert SpoolLayout([tmp_path], pcap_split=False).call_relpath("x", ns, "rtp") == "2025-11-20/13/07/ALL/x.pcap"
    assert unit_of(ns) == "2025-11-20/13/07" and unit_start("2025-11-20/13/07") == T0 + 3 * 3600 + 7 * 60
    assert unit_start("2025-13-20/13/07") is None and unit_start("x") is None
    with pytest.raises(ValueError):
        layout.call_relpath("a/b", ns, "sip")


def test_resolve_confines_paths_to_the_spool(tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    (spool / "d").mkdir(parents=True)
    outside = tmp_path / "secret"
    outside.write_text("x")
    (spool / "d" / "link").symlink_to(outside)
    (spool / "d" / "inner").symlink_to(spool / "d")
    layout = SpoolLayout([spool])
    assert layout.resolve("d/f.pcap") == spool / "d" / "f.pcap"
    assert layout.resolve(str(spool / "d" / "f.pcap")) == spool / "d" / "f.pcap"
    assert layout.resolve("d/inner/f.pcap") == spool / "d" / "inner" / "f.pcap"
    for bad in ("../secret", "d/../../secret", "d/..", str(outside), "/etc/passwd", "d/link", "", "a\x00b"):
        with pytest.raises(SpoolAccessError):
            layout.resolve(bad)
    with pytest.raises(SpoolAccessError):
        layout.resolve("d/f.pcap", spool_index=1)
    assert layout.contains(spool / "d" / "x") and not layout.contains(outside)


# ---- writer ---------------------------------------------------------------------------------------------------


async def test_sip_and_full_rtp_captures_hold_the_calls_packets(tmp_path: Path) -> None:
    packets = _calls(2)
    writer, cdrs = await _run(SpoolOptions(spooldirs=(tmp_path,), savesip=True, savertp=RtpMode.YES), packets)
    assert len(cdrs) == 2 and writer.stats.write_errors == 0
    for i, cdr in enumerate(cdrs):
        unit = unit_of(cdr.calldate_us * 1000)
        sip = tmp_path / unit / "SIP" / f"spool-{i}@test.pcap"
        rtp = tmp_path / unit / "RTP" / f"spool-{i}@test.pcap"
        linktype, sip_recs = _read(sip)
        assert linktype == LINKTYPE_RAW
        expected_sip = [p.ip_packet for p in packets if p.sport == 5060 and f"Call-ID: spool-{i}@test".encode()
                        in p.payload]
        assert len(expected_sip) >= 7 and [b for _, b, _ in sip_recs] == expected_sip
        assert [round(ts * 1e6) for ts, _, _ in sip_recs] == [
            p.ts_ns // 1000 for p in packets if p.ip_packet in expected_sip]
        _, rtp_recs = _read(rtp)
        ports = {10000 + 2 * i, 20000 + 2 * i}
        expected_rtp = [p.ip_packet for p in packets if p.sport != 5060 and p.dport in ports]
        assert [b for _, b, _ in rtp_recs] == expected_rtp
        # libpcap reads the files too (what Wireshark uses).
        handle = PcapHandle.open_offline(sip)
        try:
            # libpcap reports the file's LINKTYPE_RAW (101) as its DLT_RAW value (12 on Linux).
            assert handle.linktype == 12
            batch = handle.dispatch(1000)
            assert batch is not None and batch.frames == expected_sip
        finally:
            handle.close()
    assert writer.index.total_bytes() == sum(f.stat().st_size for f in tmp_path.rglob("*.pcap"))


async def test_savertp_header_keeps_only_the_fixed_rtp_header(tmp_path: Path) -> None:
    packets = _calls(1)
    await _run(SpoolOptions(spooldirs=(tmp_path,), savesip=False, savertp=RtpMode.HEADER), packets)
    assert not list(tmp_path.rglob("SIP"))
    rtp = next(tmp_path.rglob("RTP/*.pcap"))
    _, recs = _read(rtp)
    full = [p for p in packets if p.sport != 5060]
    assert len(recs) == len(full)
    assert all(len(b) == 20 + 8 + 12 for _, b, _ in recs)
    assert [b for _, b, _ in recs] == [p.ip_packet[:40] for p in full]
    assert _orig_lens(rtp) == [len(p.ip_packet) for p in full]


async def test_nothing_saved_by_default(tmp_path: Path) -> None:
    writer, cdrs = await _run(SpoolOptions(spooldirs=(tmp_path,)), _calls(1))
    assert cdrs and not any(tmp_path.iterdir()) and writer.stats.packets == 0


async def test_lru_reopen_appends_to_a_valid_file(tmp_path: Path) -> None:
    packets = _calls(2)
    options = SpoolOptions(spooldirs=(tmp_path,), savesip=True, savertp=RtpMode.YES, max_open_files=1)
    writer, _ = await _run(options, packets, flush_every=1)
    files = sorted(tmp_path.rglob("*.pcap"))
    assert len(files) == 4
    total = 0
    for f in files:
        _, recs = _read(f)  # a second header inside the file would break the reader
        total += len(recs)
    assert total == len(packets) == writer.stats.packets


async def test_write_errors_are_counted_not_raised(tmp_path: Path) -> None:
    blocker = tmp_path / "spool"
    blocker.write_text("not a directory")
    writer, cdrs = await _run(SpoolOptions(spooldirs=(blocker,), savesip=True), _calls(1))
    assert cdrs and writer.stats.write_errors > 0 and writer.stats.packets == 0


async def test_flush_applies_back_pressure(tmp_path: Path) -> None:
    writer = SpoolWriter(SpoolOptions(spooldirs=(tmp_path,), savesip=True), queue_batches=1)

    class Call:
        call_id = "bp"
        fbasename = "bp"
        calldate = T0 * 1_000_000_000

    pkt = _calls(1)[0]
    # No writer task: the first batch fills the channel, the second flush must wait.
    writer.on_packet(Call(), pkt, "sip")
    await writer.flush()
    writer.on_packet(Call(), pkt, "sip")
    with trio.move_on_after(0.2) as scope:
        await writer.flush()
    assert scope.cancelled_caught


# ---- options --------------------------------------------------------------------------------------------------


def test_options_from_config_text_values(tmp_path: Path) -> None:
    from vmproto import config

    cfg = config.load_text(f"spooldir = {tmp_path}\nsavesip = yes\nsavertp = header\nmaxpoolsize = 500\n"
                           "maxpoolrtpdays = 3\npcap_split = no\ncleanspool_interval = 60\n")
    opts = SpoolOptions.from_config(cfg)
    assert opts.savesip and opts.savertp is RtpMode.HEADER and not opts.pcap_split
    assert opts.limits == SpoolLimits(maxpoolsize=500, maxpoolrtpdays=3) and opts.cleanspool_interval == 60
    assert [parse_savertp(v) for v in ("yes", "no", "h", "1", "0", True)] == [
        RtpMode.YES, RtpMode.NO, RtpMode.HEADER, RtpMode.YES, RtpMode.NO, RtpMode.YES]
    with pytest.raises(SpoolOptionError):
        parse_savertp("maybe")
    # The registry types the spool limits: a bad value is refused when the file is read, naming the option.
    with pytest.raises(config.ConfigError, match="maxpoolsipsize"):
        config.load_text("maxpoolsipsize = lots\n")
    with pytest.raises(SpoolOptionError):
        SpoolLimits(maxpooldays=-1)


# ---- index and cleaner ----------------------------------------------------------------------------------------


def _make(root: Path, unit: str, type_dir: str, name: str, size: int) -> None:
    d = root / unit / type_dir
    d.mkdir(parents=True, exist_ok=True)
    (d / name).write_bytes(b"\0" * size)


MB = 1 << 20


def test_cleaner_deletes_oldest_units_past_maxpoolsize(tmp_path: Path) -> None:
    units = ["2025-11-20/10/00", "2025-11-20/10/01", "2025-11-20/11/00", "2025-11-21/00/00"]
    for u in units:
        _make(tmp_path, u, "SIP", "a.pcap", MB // 2)
        _make(tmp_path, u, "RTP", "a.pcap", MB // 2)
    (tmp_path / "filesindex").mkdir()  # not a unit: ignored
    index = SpoolIndex()
    assert index.scan(0, tmp_path) == 8 and index.total_bytes() == 4 * MB
    now = unit_start(units[-1]) + 60
    busy = frozenset({units[1]})
    actions = plan_cleanup(index.snapshot(), SpoolLimits(maxpoolsize=2), now, busy)
    # 4 MB > 2 MB: the oldest non-busy units go until the rest fits (busy unit 10/01 is skipped).
    assert [(a.unit, a.type_dirs, a.reason) for a in actions] == [
        (units[0], (), "maxpoolsize"), (units[2], (), "maxpoolsize")]
    freed = execute_plan((tmp_path,), index, actions)
    assert freed == 2 * MB and index.total_bytes() == 2 * MB
    assert not (tmp_path / "2025-11-20" / "11").exists() and not (tmp_path / units[0]).exists()
    assert (tmp_path / units[1]).exists() and (tmp_path / units[3]).exists()
    assert plan_cleanup(index.snapshot(), SpoolLimits(maxpoolsize=2), now, busy) == []


def test_cleaner_type_limits_and_ages(tmp_path: Path) -> None:
    units = ["2025-11-18/10/00", "2025-11-19/10/00", "2025-11-20/10/00"]
    for u in units:
        _make(tmp_path, u, "SIP", "a.pcap", 1000)
        _make(tmp_path, u, "RTP", "a.pcap", MB)
    index = SpoolIndex()
    index.scan(0, tmp_path)
    now = unit_start(units[2]) + 600
    actions = plan_cleanup(index.snapshot(), SpoolLimits(maxpoolrtpdays=1), now)
    assert [(a.unit, a.type_dirs) for a in actions] == [(units[0], ("RTP",)), (units[1], ("RTP",))]
    actions = plan_cleanup(index.snapshot(), SpoolLimits(maxpooldays=2), now)
    assert [(a.unit, a.type_dirs) for a in actions] == [(units[0], ())]
    actions = plan_cleanup(index.snapshot(), SpoolLimits(maxpoolrtpsize=1), now)
    assert [(a.unit, a.type_dirs) for a in actions] == [(units[0], ("RTP",)), (units[1], ("RTP",))]
    execute_plan((tmp_path,), index, actions)
    assert (tmp_path / units[0] / "SIP" / "a.pcap").exists() and not (tmp_path / units[0] / "RTP").exists()
    assert index.total_bytes("rtp") == MB and index.total_bytes("sip") == 3000


async def test_cleaner_task_scans_and_cleans(tmp_path: Path) -> None:
    old, new = "2025-11-20/10/00", "2025-11-20/10/05"
    _make(tmp_path, old, "SIP", "a.pcap", MB)
    _make(tmp_path, new, "SIP", "b.pcap", MB)
    index = SpoolIndex()
    cleaner = SpoolCleaner((tmp_path,), index, SpoolLimits(maxpoolsize=1), interval=3600,
                           clock=lambda: float(unit_start(new) + 60))
    async with trio.open_nursery() as nursery:
        await nursery.start(cleaner.run)
        with trio.fail_after(5):
            while cleaner.runs < 1:
                await trio.sleep(0.01)
        nursery.cancel_scope.cancel()
    assert not (tmp_path / "2025-11-20" / "10" / "00").exists() and (tmp_path / new / "SIP" / "b.pcap").exists()
    assert cleaner.freed_bytes == MB and index.total_bytes() == MB


def test_index_scan_ignores_foreign_entries(tmp_path: Path) -> None:
    _make(tmp_path, "2025-11-20/10/00", "SIP", "a.pcap", 10)
    _make(tmp_path, "2025-11-20/10/00", "WEIRD", "a.pcap", 10)
    _make(tmp_path, "notadate/10/00", "SIP", "a.pcap", 10)
    os.symlink(tmp_path / "2025-11-20", tmp_path / "2025-11-21")
    index = SpoolIndex()
    assert index.scan(0, tmp_path) == 1 and index.total_bytes() == 10
