"""`FrameList` and the kernel-walked pcap reader against the pure-Python record walk."""

from __future__ import annotations

import io
import struct
from array import array

import pytest

from vmproto.sensor.capture import CaptureFileReader, CaptureFormatError, files
from vmproto.sensor.capture.frames import U32, FrameList
from vmproto.sensor.decode import kernel as kmod
from vmproto.testing import pcapgen as g

TS = 1_763_632_800_123_456_789
FRAMES = [g.ethernet(g.udp4("192.0.2.1", "192.0.2.2", 5060, 5060 + i, b"q" * (i * 7 % 300))) for i in range(200)]

needs_kernel = pytest.mark.skipif(not kmod.kernel_available(), reason="C decode kernel cannot be built here")


def test_frame_list_is_a_read_only_sequence_of_bytes() -> None:
    fl = FrameList.from_frames(FRAMES[:5])
    assert len(fl) == 5 and fl == FRAMES[:5] and FRAMES[:5] == fl
    assert list(fl) == FRAMES[:5] and fl[3] == FRAMES[3] and fl[-1] == FRAMES[4]
    assert type(fl[1:3]) is FrameList and fl[1:3] == FRAMES[1:3] and fl[::2] == FRAMES[0:5:2]
    assert fl != FRAMES[:4] and fl != FRAMES[1:6] and fl != "abc"
    assert FRAMES[2] in fl and fl.index(FRAMES[2]) == 2
    assert FrameList.from_frames([]) == [] and len(FrameList.from_frames([b"", b""])) == 2
    assert "5 frames" in repr(fl)
    with pytest.raises(IndexError):
        fl[5]
    with pytest.raises(TypeError):
        hash(fl)
    with pytest.raises(ValueError, match="frame starts"):
        FrameList(b"abc", array(U32, [0]), array(U32))


def _pcap(endian: str, nanosecond: bool, frames: list[bytes], tail: bytes = b"") -> bytes:
    magic = 0xA1B23C4D if nanosecond else 0xA1B2C3D4
    out = [struct.pack(endian + "IHHiIII", magic, 2, 4, 0, 0, 65535, 1)]
    for i, f in enumerate(frames):
        ts = TS + i * 1_000_003
        sec, frac = divmod(ts, 1_000_000_000)
        if not nanosecond:
            frac //= 1000
        out.append(struct.pack(endian + "IIII", sec, frac, len(f), len(f) + i) + f)
    return b"".join(out) + tail


class _Pipe(io.BytesIO):
    """A stream that cannot seek, like stdin or a pipe."""

    def seekable(self) -> bool:
        return False


def _read(data: bytes, batch_size: int, pipe: bool = False) -> tuple[list[tuple], bool]:
    with CaptureFileReader((_Pipe if pipe else io.BytesIO)(data), batch_size=batch_size) as r:
        rows = [(b.linktype, t, f, o) for b in r for t, f, o in zip(b.ts_ns, b.frames, b.orig_len, strict=True)]
        return rows, r.truncated_tail


@needs_kernel
@pytest.mark.parametrize("endian", ["<", ">"])
@pytest.mark.parametrize("nanosecond", [True, False])
@pytest.mark.parametrize("chunk", [files.CHUNK, 1000, 97])
def test_kernel_walk_matches_python_walk(monkeypatch: pytest.MonkeyPatch, endian: str, nanosecond: bool,
                                         chunk: int) -> None:
    # Small chunks put record headers and frames across read boundaries; a cut last record is ignored.
    data = _pcap(endian, nanosecond, FRAMES, tail=struct.pack(endian + "IIII", 1, 2, 100, 100) + bytes(20))
    monkeypatch.setattr(files, "CHUNK", chunk)
    fast, fast_tail = _read(data, 64)
    with CaptureFileReader(io.BytesIO(data), batch_size=64) as r:
        batches = list(r)
        assert all(isinstance(b.frames, FrameList) and 0 < len(b.frames) <= 64 for b in batches)
    monkeypatch.setattr(files, "_pcap_scanner", lambda: None)
    piped, piped_tail = _read(data, 64, pipe=True)
    slow, slow_tail = _read(data, 64)
    assert fast == piped == slow and fast_tail is piped_tail is slow_tail is True
    assert [f for _, _, f, _ in fast] == FRAMES
    ts7 = TS + 7 * 1_000_003
    assert fast[7][1] == (ts7 if nanosecond else ts7 // 1000 * 1000)


@needs_kernel
@pytest.mark.parametrize("python", [False, True])
def test_corrupt_record_length_is_reported_by_both_walks(monkeypatch: pytest.MonkeyPatch, python: bool) -> None:
    good = _pcap("<", False, FRAMES[:3])
    data = good + struct.pack("<IIII", 1, 2, files.MAX_FRAME + 1, 60) + bytes(100)
    if python:
        monkeypatch.setattr(files, "_pcap_scanner", lambda: None)
    with pytest.raises(CaptureFormatError, match="claims 1048577 captured bytes") as info:
        _read(data, 2)
    assert str(len(good)) in str(info.value)


def test_reader_without_kernel_gives_lists(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(files, "_pcap_scanner", lambda: None)
    with CaptureFileReader(io.BytesIO(_pcap("<", True, FRAMES[:10]))) as r:
        (batch,) = list(r)
    assert type(batch.frames) is list and batch.frames == FRAMES[:10]
