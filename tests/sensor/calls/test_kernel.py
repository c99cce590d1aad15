"""The C RTP kernel against the pure-Python reference model: identical statistics on random streams.

Random streams mix what makes the model branch: loss, reordering, duplicates, capture jitter and late
packets, marker bits, timestamp jumps, payload type changes (PCMU/PCMA/G.729/G.723/GSM, a dynamic type,
comfort noise, DTMF events), sequence resets, re-INVITE force marks and the connected flag. Every observable
result is compared, including the three MOS receivers' loss histograms and the MOS figures.
"""

from __future__ import annotations

import random
import struct
import sys

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vmproto.sensor.calls import AnalyzerConfig, CallAnalyzer
from vmproto.sensor.calls.kernel import KernelRtpStream, kernel_available, stream_class
from vmproto.sensor.calls.rtp import RtpStream
from vmproto.testing.callgen import CallSpec, generate_call

pytestmark = pytest.mark.skipif(not kernel_available(), reason="no C compiler: the C RTP kernel cannot be built")

T0 = 1_763_632_800_000_000
#: payload type -> (bytes per 20 ms, samples per 20 ms)
_PT = {0: (160, 160), 8: (160, 160), 18: (20, 160), 4: (24, 240), 3: (33, 160), 96: (40, 320), 13: (1, 160),
       101: (4, 160), 9: (160, 160)}


def _rtp(pt: int, seq: int, ts: int, marker: bool, plen: int, pad: int = 0, first: int = 0x55) -> bytes:
    b0 = 0x80 | (0x20 if pad else 0)
    body = bytes([first]) + bytes(max(plen - 1, 0)) if plen > 0 else b""
    tail = bytes(pad - 1) + bytes([pad]) if pad else b""
    return struct.pack("!BBHII", b0, (0x80 if marker else 0) | pt, seq & 0xFFFF, ts & 0xFFFFFFFF, 0x1234) + body + tail


@st.composite
def streams(draw: st.DrawFn) -> tuple[list[tuple[int, int, bytes]], list[int], bool]:
    """Return (packets as (arrival us, ttl, payload), force-mark times, connected)."""
    rng = random.Random(draw(st.integers(0, 2**32 - 1)))
    n = draw(st.integers(5, 900))
    ptime = draw(st.sampled_from([10, 20, 30, 40, 60]))
    loss = draw(st.sampled_from([0.0, 0.01, 0.05, 0.3]))
    reorder = draw(st.sampled_from([0.0, 0.02, 0.1]))
    jitter_ms = draw(st.sampled_from([0, 2, 8, 40, 150]))
    pts = draw(st.lists(st.sampled_from(sorted(_PT)), min_size=1, max_size=4))
    seq = rng.randrange(65536)
    ts = rng.randrange(2**32)
    t = T0
    sent: list[tuple[int, int, bytes]] = []
    pt = pts[0]
    for i in range(n):
        r = rng.random()
        marker = i == 0 or r < 0.02
        per, samples = _PT[pt]
        if r > 0.93 and r <= 0.95:
            # Silence suppression: a talk spurt starts some frames later, usually with the marker bit.
            ts += samples * ptime // 20 * rng.choice([1, 2, 3, 4, 6, 12])
            t += ptime * 1000 * rng.choice([0, 1, 2, 3, 4, 6, 12])
            marker = rng.random() < 0.7
        if r < 0.05:
            pt = rng.choice(pts)
        if r > 0.995:
            seq += rng.choice([500, 5000, 30000])  # sequence jump / reset without a marker
        if 0.97 < r < 0.98:
            ts += rng.choice([8000, 160000, 2**31])  # timestamp jump (talk spurt, clock change)
        if 0.95 < r < 0.955:
            t += rng.choice([1_000_000, 3_000_000])  # a pause
        per, samples = _PT[pt]
        plen = per * ptime // 20
        if pt == 18 and rng.random() < 0.1:
            plen = 2  # G.729 annex B SID
        pad = 4 if rng.random() < 0.05 else 0
        first = rng.choice([0x00, 0x02, 0x55])
        arrival = t + int(rng.random() * jitter_ms * 1000)
        if rng.random() < 0.01:
            arrival = t - rng.choice([20_000, 60_000])  # captured out of order by more than the 50 ms window
        if rng.random() >= loss:
            sent.append((arrival, 64 - rng.randrange(3), _rtp(pt, seq, ts, marker, plen, pad, first)))
            if rng.random() < 0.01:
                sent.append((arrival + 10, 64, sent[-1][2]))  # duplicate
        seq = (seq + 1) & 0xFFFF
        ts = (ts + samples * ptime // 20) & 0xFFFFFFFF
        t += ptime * 1000
    for i in range(len(sent) - 1):
        if rng.random() < reorder:
            sent[i], sent[i + 1] = sent[i + 1], sent[i]
    n_fm = draw(st.integers(0, 3))
    fm = sorted(rng.randrange(T0, t + 1) for _ in range(n_fm))
    connected = draw(st.booleans())
    sent.append(((sent[-1][0] if sent else t) + 20_000, 64, b"\x80"))  # not RTP: ignored by both
    return sent, fm, connected


def _observe(s: RtpStream | KernelRtpStream, connected: bool) -> dict[str, object]:
    s.finalize_mos(connected)
    return {
        "received": s.received, "received_cdr": s.received_cdr, "lost": s.lost, "reordered": s.reordered,
        "avgjitter": s.avgjitter, "maxjitter": s.maxjitter, "codec": s.codec, "first_codec": s.first_codec,
        "packetization": s.packetization, "slost": list(s.slost), "delay": dict(s.delay),
        "ttl": (s.ttl_min, s.ttl_max, s.ttl_sum, s.ttl_count), "times": (s.first_time_us, s.last_time_us),
        "avg_ptime": s.avg_ptime, "rtp_ptime": s.rtp_ptime,
        "loss": [s.loss_histogram(i) for i in range(3)],
        "mos": [(m.minimum, m.average) for m in s.mos],
    }


def _run(cls: type, packets: list[tuple[int, int, bytes]], fm: list[int], connected: bool,
         rtpmap: dict[int, int]) -> tuple[list[bool], dict[str, object]]:
    s = cls(b"\xc0\x00\x02\x0a", 10000, b"\xc6\x33\x64\x14", 20000, 0x1234, True, 20, rtpmap, {101: 400})
    results = [s.feed(ts, ttl, data, fm, connected) for ts, ttl, data in packets]
    return results, _observe(s, connected)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(streams(), st.sampled_from([{96: 9}, {96: 97}, {}]))
def test_kernel_matches_python_model(stream: tuple[list[tuple[int, int, bytes]], list[int], bool],
                                     rtpmap: dict[int, int]) -> None:
    packets, fm, connected = stream
    py = _run(RtpStream, packets, fm, connected, rtpmap)
    c = _run(KernelRtpStream, packets, fm, connected, rtpmap)
    assert c[0] == py[0]
    assert c[1] == py[1]


def test_streams_exercise_the_receivers() -> None:
    """Guard against a vacuous comparison: lossy jittery streams do fill the MOS loss histograms."""
    rng = random.Random(5)
    packets = []
    for i in range(600):
        if rng.random() < 0.1:
            continue
        packets.append((T0 + i * 20_000 + int(rng.random() * 120_000), 64, _rtp(0, i, i * 160, i == 0, 160)))
    packets.sort()
    _, py = _run(RtpStream, packets, [], True, {})
    _, c = _run(KernelRtpStream, packets, [], True, {})
    assert c == py
    assert sum(py["loss"][0]) > 10 and py["lost"] > 10  # type: ignore[arg-type]
    assert py["mos"][0][0] < 45  # type: ignore[index]


@settings(max_examples=15, deadline=None)
@given(st.integers(0, 10_000), st.floats(0.0, 0.2), st.floats(0.0, 60.0), st.floats(0.0, 0.1),
       st.booleans(), st.sampled_from(["pcmu", "g729"]))
def test_analyzer_cdrs_identical(seed: int, loss: float, jitter: float, reorder: float, reinvite: bool,
                                 codec: str) -> None:
    """Whole calls (SIP, re-INVITE, SSRC change halfway) give equal CDR records with either stream class."""
    spec = CallSpec(seed=seed, loss=loss, jitter_ms=jitter, reorder=reorder, reinvite=reinvite, codec=codec,
                    rtp_seconds=4.0)
    packets = generate_call(spec).packets
    half = len(packets) // 2
    mutated = []
    for i, p in enumerate(packets):
        if i > half and p.proto == 17 and p.dport in (10000, 20000) and len(p.payload) >= 12:
            payload = p.payload[:8] + b"\x00\x00\xbe\xef" + p.payload[12:]  # a new SSRC mid-call
            p = p._replace(payload=payload)
        mutated.append(p)
    out = {}
    for kind in ("python", "c"):
        an = CallAnalyzer(AnalyzerConfig(sip_ports=frozenset({5060}), rtp_kernel=kind))
        records = [r for p in mutated for r in an.feed(p)] + an.finish()
        out[kind] = records
    assert out["c"] == out["python"]
    assert out["c"] and out["c"][0].a is not None


def test_stream_class_choice(monkeypatch: pytest.MonkeyPatch) -> None:
    assert stream_class("python") is RtpStream
    assert stream_class("c") is KernelRtpStream
    monkeypatch.setenv("VMPROTO_RTP_KERNEL", "python")
    assert stream_class() is RtpStream
    with pytest.raises(ValueError, match="rtp kernel"):
        stream_class("fortran")


def test_no_compiler_falls_back_to_python(monkeypatch: pytest.MonkeyPatch, tmp_path, caplog) -> None:
    """Without a toolchain the kernel is reported unavailable once and "auto" runs the Python model."""
    from vmproto.sensor.calls import _kernel_build, kernel
    from vmproto.sensor.calls.kernel import KernelUnavailable

    def no_compiler(target: object) -> None:
        raise OSError("gcc: not found")

    monkeypatch.setattr(kernel.LOADER, "_module", None)
    monkeypatch.setattr(kernel.LOADER, "_failure", None)
    monkeypatch.delitem(sys.modules, _kernel_build.MODULE_NAME, raising=False)  # no installed/loaded build
    monkeypatch.setenv("VMPROTO_KERNEL_CACHE", str(tmp_path))
    monkeypatch.setattr(kernel.LOADER, "_build_into", no_compiler)
    with caplog.at_level("WARNING", logger="vmproto._ckernel"):
        assert stream_class("auto") is RtpStream
    assert "unavailable" in caplog.text and "gcc: not found" in caplog.text
    with pytest.raises(KernelUnavailable, match="gcc: not found"):
        stream_class("c")
    an = CallAnalyzer(AnalyzerConfig(sip_ports=frozenset({5060})))
    assert an.rtp_kernel == "python"
    records = [r for p in generate_call(CallSpec(seed=1)).packets for r in an.feed(p)] + an.finish()
    assert records[0].a is not None and records[0].a.received == 150


def test_installed_kernel_from_other_sources_is_ignored(monkeypatch: pytest.MonkeyPatch, caplog) -> None:
    """A module built at install time is used only when its embedded digest matches the current source."""
    from vmproto.sensor.calls import _kernel_build, kernel

    real = kernel.load_kernel()
    assert real.ffi.string(real.lib.vm_kernel_digest()).decode() == _kernel_build.source_digest()

    class _Lib:
        @staticmethod
        def vm_kernel_digest() -> bytes:
            return b"0123456789abcdef"

    class _Ffi:
        @staticmethod
        def string(value: bytes) -> bytes:
            return value

    class _Stale:
        ffi = _Ffi()
        lib = _Lib()

    from vmproto import _ckernel

    real_import = _ckernel.importlib.import_module
    monkeypatch.setattr(_ckernel.importlib, "import_module",
                        lambda name: _Stale if name == _kernel_build.MODULE_NAME else real_import(name))
    monkeypatch.setattr(kernel.LOADER, "_module", None)
    with caplog.at_level("WARNING", logger="vmproto._ckernel"):
        assert kernel.LOADER.installed_module() is None
    assert "other sources" in caplog.text
