"""pcap_block_store v7 containers: the payload of ``packetbuffer block`` AES blocks (spec §9).

Layout (little endian): a 64-byte container header, ``count`` u32 offsets of the packet headers in
the uncompressed data area, then the data area (``size_compress`` bytes if compressed with snappy
or LZ4, else ``size`` bytes). The data area holds, per packet, a 36-byte ``plus`` header (hm 0) or
a 58-byte ``plus2`` header (hm 1) followed by ``caplen`` packet bytes, without padding.
"""

from __future__ import annotations

import struct
from array import array
from collections.abc import Iterable, Iterator
from typing import NamedTuple

from . import pbkernel
from .compression import PbCompression, pb_compress, pb_decompress
from .errors import LocalProtocolError, RemoteProtocolError
from .framing import byte_sum

__all__ = [
    "CONTAINER_HEADER_SIZE",
    "DEFAULT_MAX_CONTAINER_SIZE",
    "DEFAULT_MAX_TIME_DIFF",
    "MAX_AREA_SIZE",
    "ENCAPS_NONE",
    "HM_PLUS",
    "HM_PLUS2",
    "MAX_CAPLEN",
    "MAX_IP_OFFSET",
    "PLUS2_SIZE",
    "PLUS_SIZE",
    "TITLE",
    "VERSION",
    "VLAN_NOSET",
    "VLAN_UNSET",
    "Container",
    "ContainerBuilder",
    "ContainerHeader",
    "PacketHeader",
    "checksum32buf",
    "decode_container",
    "encode_area",
    "encode_container",
    "peek_header",
    "validate_container",
]

TITLE = b"pcap_block_store"
VERSION = 7
CONTAINER_HEADER_SIZE = 64
PLUS_SIZE = 36
PLUS2_SIZE = 58
HM_PLUS = 0
HM_PLUS2 = 1
VLAN_NOSET = 0xFFFE  # what the real sender writes for "packet has no VLAN" (recordings)
VLAN_UNSET = 0xFFFF
ENCAPS_NONE = 0xFFFF
MAX_CAPLEN = 65535
MAX_IP_OFFSET = 1000
DEFAULT_MAX_TIME_DIFF = 30  # receive_packetbuffer_maximum_time_diff_s
TIME_DIFF_MODULO = 1800  # the receiver forgives whole half hours (time zones)
# The receiver refuses more than 10 x packetbuffer_block_maxsize (default 1024 KiB).
DEFAULT_MAX_CONTAINER_SIZE = 10 * 1024 * 1024
# vmproto cap on the declared uncompressed data area (spec §9.8 row 10, §5.8): checked before anything is
# allocated for it, so a few header bytes cannot make the receiver reserve gigabytes.
MAX_AREA_SIZE = 256 * 1024 * 1024

_HEADER = struct.Struct("<16sB3sIIIHh10sb1sIIB3sI")
_PLUS = struct.Struct("<IIII8sHHhHHBB")
_PLUS2_EXT = struct.Struct("<BBH16sBB")
_CAPLEN_IPOFF = struct.Struct("<I14xH")  # caplen at +8, header_ip_offset at +26
assert _HEADER.size == CONTAINER_HEADER_SIZE and _PLUS.size == PLUS_SIZE
assert _PLUS.size + _PLUS2_EXT.size == PLUS2_SIZE

# b ^ 0x80 == b + 128 for b < 128 and b - 128 otherwise, so sum(b ^ 0x80) - 128 * n is the sum of
# the bytes read as signed: one C-speed translate plus the fast unsigned byte_sum.
_FLIP_SIGN = bytes(b ^ 0x80 for b in range(256))

# Reply texts of the receiver (spec §9), in its validation order.
TOO_BIG = "too big"
BAD_ID = "missing / bad block id"
BAD_VERSION = "bad version - sender and receiver must be the same version"
BAD_CHECKSUM = "bad checksum"
BAD_OFFSETS = "bad offsets"
# spec §9.8 row 1: the reference replies this for an empty payload; vmproto also uses it for containers shorter than
# their header or declared total, which the reference silently mis-handles.
BAD_SIZE = "bad size / offset"


def checksum32buf(data: bytes | bytearray | memoryview) -> int:
    """The reference's container checksum: bytes as *signed* 8-bit values summed into 16 bits.

    Returns 0..65535 (the container stores max(value, 1)).
    """
    fast = pbkernel.sums(data)
    if fast is not None:
        return fast[1]
    raw = data if isinstance(data, bytes) else bytes(data)
    return (byte_sum(raw.translate(_FLIP_SIGN)) - 128 * len(raw)) & 0xFFFF


class ContainerHeader(NamedTuple):
    """All 64 header bytes, pads kept raw so a container can be rebuilt byte for byte."""

    title: bytes
    version: int
    pad17: bytes
    size: int
    size_compress: int
    count: int
    dlink: int
    sensor_id: int
    ifname: bytes
    hm: int
    pad47: bytes
    checksum: int
    counter: int
    require_confirmation: int
    pad57: bytes
    time_s: int

    @property
    def ifname_text(self) -> str:
        """The interface name up to its first NUL."""
        return self.ifname.split(b"\0", 1)[0].decode("latin-1")

    @property
    def header_size(self) -> int:
        """Packet header size for this container's header mode."""
        return PLUS2_SIZE if self.hm == HM_PLUS2 else PLUS_SIZE

    @property
    def total_size(self) -> int:
        """Declared container length: header + offsets + data area as sent."""
        return CONTAINER_HEADER_SIZE + 4 * self.count + (self.size_compress or self.size)


class PacketHeader(NamedTuple):
    """One packet header; the ``plus2`` fields are ``None`` for hm 0."""

    ts_sec: int
    ts_usec: int
    caplen: int
    len: int
    fillers: bytes
    header_ip_encaps_offset: int
    header_ip_offset: int
    std: int
    dlink: int
    vlan: int
    flags: int
    pad35: int
    detect_headers: int | None = None
    pad37: int | None = None
    eth_protocol: int | None = None
    dc: bytes | None = None
    ignore: int | None = None
    pad57: int | None = None


def peek_header(payload: bytes | bytearray | memoryview) -> ContainerHeader:
    """Return the container header. Raises :class:`RemoteProtocolError` if under 64 bytes."""
    if len(payload) < CONTAINER_HEADER_SIZE:
        raise RemoteProtocolError(BAD_SIZE)
    return ContainerHeader(*_HEADER.unpack_from(payload, 0))


def _time_error(diff: int, label: str) -> str:
    return (
        f"Time difference between server and client (id_sensor:{label}) is too big ({diff}s) - "
        "data cannot be received. Please synchronise time on both server and client. Or increase "
        "configuration parameter receive_packetbuffer_maximum_time_diff_s on server."
    )


def _offsets(payload: bytes | memoryview, count: int) -> array:
    offs = array("I")
    offs.frombytes(bytes(payload[CONTAINER_HEADER_SIZE : CONTAINER_HEADER_SIZE + 4 * count]))
    return offs


def _check_offsets(offs: array, size: int, hdr_size: int) -> None:
    # Strictly increasing and inside the area; we also require the last header to fit (the
    # reference reads it unchecked) and refuse count 0 (which crashes the reference).
    if not offs or offs[-1] >= size or offs[-1] + hdr_size > size:
        _fail(BAD_OFFSETS)
    k = pbkernel.load()
    if k is not None:
        if not k.lib.pb_increasing(k.ffi.from_buffer("uint32_t[]", offs), len(offs)):
            _fail(BAD_OFFSETS)
        return
    prev = -1
    for off in offs:
        if off <= prev:
            _fail(BAD_OFFSETS)
        prev = off


def validate_container(
    payload: bytes | bytearray | memoryview,
    *,
    now: int,
    max_time_diff: int = DEFAULT_MAX_TIME_DIFF,
    max_size: int = DEFAULT_MAX_CONTAINER_SIZE,
    sensor_label: str | None = None,
) -> None:
    """Run the receiver's checks in the reference's order; raise the reply text it would send.

    ``now`` is the receiver's UNIX time, ``max_size`` the byte cap (10 x packetbuffer_block_maxsize),
    ``sensor_label`` the ``id_sensor:`` text of the time error (default: the header's sensor_id if
    > 0, else ``local``). Raises :class:`RemoteProtocolError` whose ``reason`` and ``reply`` (AES
    block, connection kept) are ``too big``, ``missing / bad block id``, ``bad version - ...``,
    the time-difference text, ``bad checksum``, ``bad offsets``, ``bad headers - caplen = N`` /
    ``bad headers - header_ip_offset = N`` (uncompressed only), or ``bad size / offset`` for short payloads.
    """
    n = len(payload)
    if n > max_size:
        _fail(TOO_BIG)
    if n < CONTAINER_HEADER_SIZE:
        _fail(BAD_SIZE)
    hdr = ContainerHeader(*_HEADER.unpack_from(payload, 0))
    if hdr.title != TITLE:
        _fail(BAD_ID)
    if hdr.version != VERSION:
        _fail(BAD_VERSION)
    if hdr.time_s:
        diff = abs(hdr.time_s - int(now)) % TIME_DIFF_MODULO
        if diff > max_time_diff:
            label = sensor_label if sensor_label is not None else (
                str(hdr.sensor_id) if hdr.sensor_id > 0 else "local"
            )
            _fail(_time_error(diff, label))
    total = hdr.total_size
    if n < total:
        _fail(BAD_SIZE)
    if hdr.checksum:
        body = payload[CONTAINER_HEADER_SIZE:total]
        if hdr.checksum != max(checksum32buf(body), 1):
            _fail(BAD_CHECKSUM)
    if hdr.hm not in (HM_PLUS, HM_PLUS2):
        _fail(f"bad headers - hm = {hdr.hm}")
    offs = _offsets(payload, hdr.count)
    _check_offsets(offs, hdr.size, hdr.header_size)
    if hdr.size > min(MAX_AREA_SIZE, max_size):
        # spec §5.8: the declared area is capped at 256 MiB and at 10 x packetbuffer_block_maxsize.
        _fail(TOO_BIG)
    if not hdr.size_compress:
        base = CONTAINER_HEADER_SIZE + 4 * hdr.count
        _check_area(memoryview(payload)[base : base + hdr.size], offs, hdr)


def _check_area(area: bytes | memoryview, offs: array, hdr: ContainerHeader) -> None:
    """Rows 8-10 of spec §9.8 on an uncompressed data area whose offsets passed :func:`_check_offsets`.

    ``area`` holds exactly ``hdr.size`` bytes. Packet headers fit (the last offset + header size is within the
    area), so every header field read here exists. Layout (spec §9.3): packets follow one another without gaps,
    the first at offset 0, and the last one ends exactly at ``size``; anything else is ``bad offsets``.
    """
    hdr_size = hdr.header_size
    k = pbkernel.load()
    if k is not None:
        value = k.ffi.new("uint32_t *")
        code = k.lib.pb_check_area(k.ffi.from_buffer(area), hdr.size, k.ffi.from_buffer("uint32_t[]", offs),
                                   len(offs), hdr_size, value)
        if code == 1:
            _fail(f"bad headers - caplen = {value[0]}")
        if code == 2:
            _fail(f"bad headers - header_ip_offset = {value[0]}")
        if code == 3:
            _fail(BAD_OFFSETS)
        return
    unpack = _CAPLEN_IPOFF.unpack_from
    expected = 0
    layout_ok = True
    for off in offs:
        caplen, ip_offset = unpack(area, off + 8)
        if caplen > MAX_CAPLEN:
            _fail(f"bad headers - caplen = {caplen}")
        if ip_offset > MAX_IP_OFFSET:
            _fail(f"bad headers - header_ip_offset = {ip_offset}")
        # Checked after the loop: rows 8 and 9 come before the vmproto layout rule of row 10 in the reply order.
        layout_ok = layout_ok and off == expected
        expected = off + hdr_size + caplen
    if not layout_ok or expected != hdr.size:
        _fail(BAD_OFFSETS)


def _fail(reason: str) -> None:
    raise RemoteProtocolError(reason, reply=reason.encode("utf-8"), reply_mode="aes", close=False)


class Container:
    """A decoded container: header, offsets and the uncompressed data area.

    Packets are read lazily: :meth:`iter_packets` yields light tuples with a memoryview of the
    packet bytes; :meth:`packet` gives the full :class:`PacketHeader` of one packet.
    """

    __slots__ = ("area", "header", "offsets")

    def __init__(self, header: ContainerHeader, offsets: array, area: bytes) -> None:
        self.header = header
        self.offsets = offsets
        self.area = area

    def __len__(self) -> int:
        return len(self.offsets)

    def packet(self, index: int) -> tuple[PacketHeader, memoryview]:
        """Return ``(header, data)`` of packet ``index``."""
        off = self.offsets[index]
        fields = _PLUS.unpack_from(self.area, off)
        hdr_size = self.header.header_size
        if hdr_size == PLUS2_SIZE:
            fields += _PLUS2_EXT.unpack_from(self.area, off + PLUS_SIZE)
        ph = PacketHeader(*fields)
        start = off + hdr_size
        return ph, memoryview(self.area)[start : start + ph.caplen]

    def iter_packets(self) -> Iterator[tuple[int, int, int, int, int, int, int, int, int, memoryview]]:
        """Yield ``(ts_sec, ts_usec, caplen, len, header_ip_encaps_offset, header_ip_offset, dlink,
        vlan, flags, data)`` per packet (``dlink`` 0 means the container's ``dlink``)."""
        area = self.area
        mv = memoryview(area)
        hdr_size = self.header.header_size
        unpack = _PLUS.unpack_from
        for off in self.offsets:
            ts, us, caplen, length, _f, encaps, ip_off, _std, dlink, vlan, flags, _pad = unpack(area, off)
            start = off + hdr_size
            yield ts, us, caplen, length, encaps, ip_off, dlink, vlan, flags, mv[start : start + caplen]


def decode_container(
    payload: bytes | bytearray | memoryview,
    compress_method: PbCompression | None = PbCompression.SNAPPY,
    *,
    max_size: int = MAX_AREA_SIZE,
) -> Container:
    """Parse a container (after :func:`validate_container`), decompressing the data area with the
    receiver's configured method (it is not recorded in the container).

    ``max_size`` caps the declared uncompressed area (default 256 MiB, spec §9.8 row 10); it is checked
    before anything is decompressed or allocated. The decoded area then gets rows 8-10 of spec §9.8
    (caplen, header_ip_offset, the §9.3 layout), so a compressed area is held to the same rules as an
    uncompressed one. Raises :class:`RemoteProtocolError` with the reply text of the failing check
    (``bad size / offset``, ``bad headers - ...``, ``bad offsets``, ``too big``) or the codec's reason
    for an undecodable area, and :class:`LocalProtocolError` when the area is compressed but
    ``compress_method`` is None.
    """
    hdr = peek_header(payload)
    if hdr.hm not in (HM_PLUS, HM_PLUS2):
        _fail(f"bad headers - hm = {hdr.hm}")
    total = hdr.total_size
    if len(payload) < total:
        _fail(BAD_SIZE)
    offs = _offsets(payload, hdr.count)
    _check_offsets(offs, hdr.size, hdr.header_size)
    if hdr.size > min(MAX_AREA_SIZE, max_size):
        _fail(TOO_BIG)
    start = CONTAINER_HEADER_SIZE + 4 * hdr.count
    raw = payload[start:total]
    if hdr.size_compress:
        if compress_method is None:
            raise LocalProtocolError("compressed container but no compress_method given")
        area = pb_decompress(compress_method, raw, hdr.size, max_size=min(MAX_AREA_SIZE, max_size))
    else:
        area = bytes(raw)
    _check_area(area, offs, hdr)
    return Container(hdr, offs, area)


class ContainerBuilder:
    """Accumulates packets and serialises them as one container (the sender side).

    Packets are packed into one list of byte strings as they are added; :attr:`size` is the data
    area so far, for the ``packetbuffer_block_maxsize`` decision.
    """

    __slots__ = ("_count", "_hm", "_offsets", "_parts", "_size")

    def __init__(self, hm: int = HM_PLUS) -> None:
        if hm not in (HM_PLUS, HM_PLUS2):
            raise LocalProtocolError(f"hm must be 0 or 1, not {hm}")
        self._hm = hm
        self._parts: list[bytes] = []
        self._offsets = array("I")
        self._size = 0
        self._count = 0

    @property
    def size(self) -> int:
        """Bytes in the uncompressed data area."""
        return self._size

    def __len__(self) -> int:
        return self._count

    def add(
        self,
        ts_sec: int,
        ts_usec: int,
        data: bytes,
        orig_len: int | None = None,
        header_ip_offset: int = 14,
        header_ip_encaps_offset: int | None = None,
        dlink: int = 1,
        vlan: int = VLAN_NOSET,
        flags: int = 0,
        *,
        detect_headers: int = 1,
        eth_protocol: int = 0,
        dc: bytes = b"",
        ignore: int = 0,
    ) -> None:
        """Add one packet. ``header_ip_encaps_offset`` defaults to ``header_ip_offset`` (what the
        real sender writes for plain Ethernet/IP); ``orig_len`` defaults to ``len(data)``."""
        caplen = len(data)
        if caplen > 0xFFFFFFFF:
            raise LocalProtocolError("packet too large")
        encaps = header_ip_offset if header_ip_encaps_offset is None else header_ip_encaps_offset
        try:
            header = _PLUS.pack(
                ts_sec, ts_usec, caplen, caplen if orig_len is None else orig_len, b"",
                encaps, header_ip_offset, 0, dlink, vlan, flags, 0,
            )
            if self._hm == HM_PLUS2:
                header += _PLUS2_EXT.pack(detect_headers, 0, eth_protocol, dc, ignore, 0)
        except struct.error as exc:
            raise LocalProtocolError(f"packet header field out of range: {exc}") from None
        self.add_packed(header, data)

    def add_packed(self, header: bytes, data: bytes) -> None:
        """Add a packet whose header is already packed (36 or 58 bytes, matching ``hm``)."""
        if len(header) != (PLUS2_SIZE if self._hm == HM_PLUS2 else PLUS_SIZE):
            raise LocalProtocolError("packed header size does not match the header mode")
        self._offsets.append(self._size)
        self._parts.append(header)
        self._parts.append(data)
        self._size += len(header) + len(data)
        self._count += 1

    def build(
        self,
        *,
        counter: int,
        time_s: int = 0,
        sensor_id: int = 0,
        dlink: int = 1,
        ifname: bytes | str = b"",
        require_confirmation: bool = True,
        compress: PbCompression | None = PbCompression.SNAPPY,
        checksum: bool = True,
        pads: tuple[bytes, bytes, bytes] = (b"\0\0\0", b"\0", b"\0\0\0"),
    ) -> bytes:
        """Serialise the container.

        ``compress`` None leaves the area uncompressed (``size_compress`` 0); ``sensor_id`` is
        truncated to 16 bits as in the reference; ``ifname`` must fit 9 bytes + NUL; ``pads`` are
        the raw bytes at 17-19, 47 and 57-59 (zero unless rebuilding a recording). Raises
        :class:`LocalProtocolError` for an empty container (it would crash the reference receiver)
        or out-of-range fields.
        """
        if not self._count:
            raise LocalProtocolError("a container needs at least one packet")
        return encode_area(
            b"".join(self._parts), self._offsets, hm=self._hm, counter=counter, time_s=time_s, sensor_id=sensor_id,
            dlink=dlink, ifname=ifname, require_confirmation=require_confirmation, compress=compress,
            checksum=checksum, pads=pads,
        )


def encode_area(
    area: bytes | bytearray | memoryview,
    offsets: array,
    *,
    hm: int = HM_PLUS,
    counter: int,
    time_s: int = 0,
    sensor_id: int = 0,
    dlink: int = 1,
    ifname: bytes | str = b"",
    require_confirmation: bool = True,
    compress: PbCompression | None = PbCompression.SNAPPY,
    checksum: bool = True,
    pads: tuple[bytes, bytes, bytes] = (b"\0\0\0", b"\0", b"\0\0\0"),
) -> bytes:
    """Serialise a container from a data area already laid out as spec §9.3 says (packet header + packet bytes,
    back to back) and the u32 ``offsets`` of its packet headers (``array('I')``, one per packet).

    The fields are those of :meth:`ContainerBuilder.build`. The layout is the caller's promise (it is not
    re-checked here). Raises :class:`LocalProtocolError` for no packets, an ifname over 9 bytes or out-of-range
    header fields.
    """
    count = len(offsets)
    if not count:
        raise LocalProtocolError("a container needs at least one packet")
    if hm not in (HM_PLUS, HM_PLUS2):
        raise LocalProtocolError(f"hm must be 0 or 1, not {hm}")
    name = ifname.encode("latin-1") if isinstance(ifname, str) else bytes(ifname)
    if len(name) > 10 or (len(name) == 10 and name[9] != 0):
        raise LocalProtocolError("ifname longer than 9 bytes")
    size = len(area)
    size_compress = 0
    if compress is not None:
        area = pb_compress(compress, area)
        size_compress = len(area)
    # One buffer, written once: header space, offsets, area (no intermediate concatenations of the area).
    out = bytearray(CONTAINER_HEADER_SIZE + 4 * count + len(area))
    out[CONTAINER_HEADER_SIZE : CONTAINER_HEADER_SIZE + 4 * count] = offsets.tobytes()
    out[CONTAINER_HEADER_SIZE + 4 * count :] = area
    csum = max(checksum32buf(memoryview(out)[CONTAINER_HEADER_SIZE:]), 1) if checksum else 0
    sid = ((sensor_id + 0x8000) & 0xFFFF) - 0x8000
    try:
        _HEADER.pack_into(
            out, 0, TITLE, VERSION, pads[0], size, size_compress, count, dlink, sid,
            name, hm, pads[1], csum, counter, 1 if require_confirmation else 0, pads[2], time_s,
        )
    except struct.error as exc:
        raise LocalProtocolError(f"container header field out of range: {exc}") from None
    return bytes(out)


def encode_container(
    packets: Iterable[tuple],
    *,
    hm: int = HM_PLUS,
    counter: int,
    time_s: int = 0,
    sensor_id: int = 0,
    dlink: int = 1,
    ifname: bytes | str = b"",
    require_confirmation: bool = True,
    compress: PbCompression | None = PbCompression.SNAPPY,
    checksum: bool = True,
) -> bytes:
    """Build a container from ``packets``: tuples in the argument order of
    :meth:`ContainerBuilder.add` -- ``(ts_sec, ts_usec, data[, orig_len[, header_ip_offset[,
    header_ip_encaps_offset[, dlink[, vlan[, flags]]]]]])``."""
    builder = ContainerBuilder(hm)
    add = builder.add
    for p in packets:
        add(*p)
    return builder.build(
        counter=counter, time_s=time_s, sensor_id=sensor_id, dlink=dlink, ifname=ifname,
        require_confirmation=require_confirmation, compress=compress, checksum=checksum,
    )
