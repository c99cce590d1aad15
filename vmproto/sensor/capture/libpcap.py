"""Our own cffi (ABI mode) binding to the system libpcap: live handles, offline files, the dumper.

Everything here is synchronous; `vmproto.sensor.capture.live` drives a non-blocking handle from Trio.
Timestamps are requested with nanosecond precision, so `ts.tv_usec` carries nanoseconds.
"""

from __future__ import annotations

import ctypes.util
import os
import threading
from dataclasses import dataclass

from cffi import FFI

from .batch import PacketBatch
from .errors import CaptureError, CaptureOptionError

_CDEF = """
typedef struct pcap pcap_t;
typedef struct pcap_dumper pcap_dumper_t;
struct pcap_timeval { long tv_sec; long tv_usec; };
struct pcap_pkthdr { struct pcap_timeval ts; uint32_t caplen; uint32_t len; };
struct bpf_program { unsigned int bf_len; void *bf_insns; };
struct pcap_stat { unsigned int ps_recv; unsigned int ps_drop; unsigned int ps_ifdrop; };
typedef void (*pcap_handler)(unsigned char *, const struct pcap_pkthdr *, const unsigned char *);

pcap_t *pcap_create(const char *, char *);
int pcap_set_snaplen(pcap_t *, int);
int pcap_set_promisc(pcap_t *, int);
int pcap_set_timeout(pcap_t *, int);
int pcap_set_immediate_mode(pcap_t *, int);
int pcap_set_buffer_size(pcap_t *, int);
int pcap_set_tstamp_precision(pcap_t *, int);
int pcap_activate(pcap_t *);
int pcap_compile(pcap_t *, struct bpf_program *, const char *, int, uint32_t);
int pcap_setfilter(pcap_t *, struct bpf_program *);
void pcap_freecode(struct bpf_program *);
int pcap_setnonblock(pcap_t *, int, char *);
int pcap_get_selectable_fd(pcap_t *);
int pcap_dispatch(pcap_t *, int, pcap_handler, unsigned char *);
int pcap_next_ex(pcap_t *, struct pcap_pkthdr **, const unsigned char **);
int pcap_stats(pcap_t *, struct pcap_stat *);
int pcap_datalink(pcap_t *);
int pcap_snapshot(pcap_t *);
char *pcap_geterr(pcap_t *);
const char *pcap_statustostr(int);
void pcap_close(pcap_t *);
void pcap_breakloop(pcap_t *);
pcap_t *pcap_open_offline_with_tstamp_precision(const char *, unsigned int, char *);
int pcap_get_tstamp_precision(pcap_t *);
pcap_t *pcap_open_dead_with_tstamp_precision(int, int, unsigned int);
pcap_dumper_t *pcap_dump_open(pcap_t *, const char *);
void pcap_dump(unsigned char *, const struct pcap_pkthdr *, const unsigned char *);
int pcap_dump_flush(pcap_dumper_t *);
void pcap_dump_close(pcap_dumper_t *);
const char *pcap_lib_version(void);
"""

ERRBUF_SIZE = 256
TSTAMP_PRECISION_NANO = 1
PCAP_ERROR_BREAK = -2
PCAP_NETMASK_UNKNOWN = 0xFFFFFFFF

ffi = FFI()
ffi.cdef(_CDEF)
_lib = None
_lib_lock = threading.Lock()


def lib():
    """Return the loaded libpcap; raises `CaptureError` when it is not installed."""
    global _lib
    if _lib is None:
        with _lib_lock:
            if _lib is None:
                names = [ctypes.util.find_library("pcap"), "libpcap.so.1", "libpcap.so.0.8", "libpcap.so"]
                last: Exception | None = None
                for name in names:
                    if not name:
                        continue
                    try:
                        _lib = ffi.dlopen(name)
                        break
                    except OSError as exc:
                        last = exc
                else:
                    raise CaptureError(f"libpcap not found: {last}")
    return _lib


def version() -> str:
    """Return libpcap's version string."""
    return ffi.string(lib().pcap_lib_version()).decode()


def _err(handle) -> str:
    return ffi.string(lib().pcap_geterr(handle)).decode(errors="replace")


@dataclass(frozen=True, slots=True)
class PcapStats:
    """Kernel counters from pcap_stats: packets received by the filter, dropped for lack of buffer
    space, and dropped by the interface/driver (not supported everywhere)."""

    received: int
    dropped: int
    if_dropped: int


class PcapHandle:
    """One libpcap handle (live or offline). Close it with `close()` or a `with` block."""

    def __init__(self, handle, name: str, offline: bool = False) -> None:
        self._h = handle
        self.name = name
        self.offline = offline
        self.linktype = lib().pcap_datalink(handle)
        self._batch: tuple[list[int], list[bytes], list[int]] | None = None
        self._cb = ffi.callback("pcap_handler", self._on_packet)

    # -- construction --------------------------------------------------------------------------------

    @classmethod
    def open_live(cls, device: str, *, snaplen: int = 3200, promisc: bool = True, buffer_bytes: int = 50 << 20,
                  immediate: bool = True, timeout_ms: int = 100, bpf: str = "", nonblocking: bool = False,
                  ) -> PcapHandle:
        """Create and activate a live handle with ns timestamps.

        Raises `CaptureError` when libpcap refuses (no such device, no permission, bad filter ...).
        """
        L = lib()
        errbuf = ffi.new("char[]", ERRBUF_SIZE)
        h = L.pcap_create(device.encode(), errbuf)
        if h == ffi.NULL:
            raise CaptureError(f"pcap_create({device}): {ffi.string(errbuf).decode(errors='replace')}")
        try:
            for what, rc in (("snaplen", L.pcap_set_snaplen(h, snaplen)),
                             ("promisc", L.pcap_set_promisc(h, int(promisc))),
                             ("timeout", L.pcap_set_timeout(h, timeout_ms)),
                             ("immediate mode", L.pcap_set_immediate_mode(h, int(immediate))),
                             ("buffer size", L.pcap_set_buffer_size(h, buffer_bytes)),
                             ("ns precision", L.pcap_set_tstamp_precision(h, TSTAMP_PRECISION_NANO))):
                if rc != 0:
                    raise CaptureError(f"{device}: cannot set {what}: {ffi.string(L.pcap_statustostr(rc)).decode()}")
            rc = L.pcap_activate(h)
            if rc < 0:
                detail = _err(h) or ffi.string(L.pcap_statustostr(rc)).decode()
                raise CaptureError(f"pcap_activate({device}): {detail}")
            self = cls(h, device)
        except BaseException:
            L.pcap_close(h)
            raise
        try:
            if bpf:
                self.set_filter(bpf)
            if nonblocking:
                self.set_nonblocking(True)
        except BaseException:
            self.close()
            raise
        return self

    @classmethod
    def open_offline(cls, path: str | os.PathLike[str]) -> PcapHandle:
        """Open a pcap/pcapng file through libpcap with ns timestamps. Raises `CaptureError`."""
        errbuf = ffi.new("char[]", ERRBUF_SIZE)
        h = lib().pcap_open_offline_with_tstamp_precision(os.fsencode(path), TSTAMP_PRECISION_NANO, errbuf)
        if h == ffi.NULL:
            raise CaptureError(f"cannot open {path}: {ffi.string(errbuf).decode(errors='replace')}")
        return cls(h, os.fspath(path), offline=True)

    # -- settings ------------------------------------------------------------------------------------

    def set_filter(self, expression: str) -> None:
        """Compile and install a BPF filter. Raises `CaptureOptionError` when it does not compile."""
        L = lib()
        prog = ffi.new("struct bpf_program *")
        if L.pcap_compile(self._handle(), prog, expression.encode(), 1, PCAP_NETMASK_UNKNOWN) != 0:
            raise CaptureOptionError(f"bad filter {expression!r}: {_err(self._h)}")
        try:
            if L.pcap_setfilter(self._h, prog) != 0:
                raise CaptureError(f"pcap_setfilter: {_err(self._h)}")
        finally:
            L.pcap_freecode(prog)

    def set_nonblocking(self, on: bool) -> None:
        """Switch non-blocking reads on or off. Raises `CaptureError`."""
        errbuf = ffi.new("char[]", ERRBUF_SIZE)
        if lib().pcap_setnonblock(self._handle(), int(on), errbuf) < 0:
            raise CaptureError(f"pcap_setnonblock: {ffi.string(errbuf).decode(errors='replace')}")

    def fileno(self) -> int:
        """Return the selectable descriptor (for trio.lowlevel.wait_readable). Raises `CaptureError`."""
        fd = lib().pcap_get_selectable_fd(self._handle())
        if fd < 0:
            raise CaptureError(f"{self.name}: no selectable descriptor")
        return fd

    # -- reading -------------------------------------------------------------------------------------

    def _handle(self):
        if self._h is None:
            raise CaptureError(f"{self.name}: handle is closed")
        return self._h

    def _on_packet(self, _user, hdr, data) -> None:
        ts_l, fr_l, ol_l = self._batch  # type: ignore[misc]
        ts_l.append(hdr.ts.tv_sec * 1_000_000_000 + hdr.ts.tv_usec)
        fr_l.append(ffi.buffer(data, hdr.caplen)[:])
        ol_l.append(hdr.len)

    def dispatch(self, max_packets: int = 4096) -> PacketBatch | None:
        """Read up to `max_packets` buffered packets with pcap_dispatch.

        Returns a batch (possibly empty when nothing is ready on a non-blocking handle), or None at the end
        of an offline file. Raises `CaptureError` on a read error.
        """
        h = self._handle()
        self._batch = ([], [], [])
        try:
            rc = lib().pcap_dispatch(h, max_packets, self._cb, ffi.NULL)
            ts_l, fr_l, ol_l = self._batch
        finally:
            self._batch = None
        if rc == -1:
            raise CaptureError(f"{self.name}: pcap_dispatch: {_err(h)}")
        if rc == 0 and self.offline:
            return None  # pcap_dispatch returns 0 at the end of a file, and "nothing ready" on live handles
        return PacketBatch(self.linktype, ts_l, fr_l, ol_l)

    def next_ex_batch(self, max_packets: int = 4096) -> PacketBatch | None:
        """Like `dispatch`, but with a pcap_next_ex loop (kept to compare the two in bench/decode.py)."""
        L = lib()
        h = self._handle()
        hdr_p = ffi.new("struct pcap_pkthdr **")
        data_p = ffi.new("const unsigned char **")
        ts_l: list[int] = []
        fr_l: list[bytes] = []
        ol_l: list[int] = []
        buffer = ffi.buffer
        for _ in range(max_packets):
            rc = L.pcap_next_ex(h, hdr_p, data_p)
            if rc == 1:
                hdr = hdr_p[0]
                ts_l.append(hdr.ts.tv_sec * 1_000_000_000 + hdr.ts.tv_usec)
                fr_l.append(buffer(data_p[0], hdr.caplen)[:])
                ol_l.append(hdr.len)
            elif rc == 0:
                break
            elif rc == PCAP_ERROR_BREAK:
                if not fr_l:
                    return None
                break
            else:
                raise CaptureError(f"{self.name}: pcap_next_ex: {_err(h)}")
        return PacketBatch(self.linktype, ts_l, fr_l, ol_l)

    def stats(self) -> PcapStats:
        """Return the kernel counters. Raises `CaptureError` (e.g. on offline handles)."""
        st = ffi.new("struct pcap_stat *")
        if lib().pcap_stats(self._handle(), st) != 0:
            raise CaptureError(f"{self.name}: pcap_stats: {_err(self._h)}")
        return PcapStats(st.ps_recv, st.ps_drop, st.ps_ifdrop)

    def breakloop(self) -> None:
        """Make a running dispatch return early."""
        if self._h is not None:
            lib().pcap_breakloop(self._h)

    def close(self) -> None:
        """Release the handle (idempotent)."""
        if self._h is not None:
            lib().pcap_close(self._h)
            self._h = None

    def __enter__(self) -> PcapHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_offline(path: str | os.PathLike[str], batch_size: int = 4096) -> list[PacketBatch]:
    """Read a whole file through libpcap (ns timestamps). Raises `CaptureError`."""
    out = []
    with PcapHandle.open_offline(path) as h:
        while True:
            b = h.next_ex_batch(batch_size)
            if b is None or not b.frames:
                break
            out.append(b)
    return out


class PcapDumper:
    """Writes packets with libpcap's own dumper (pcap_dump_open), ns precision."""

    def __init__(self, path: str | os.PathLike[str], linktype: int, snaplen: int = 262144) -> None:
        L = lib()
        self._dead = L.pcap_open_dead_with_tstamp_precision(linktype, snaplen, TSTAMP_PRECISION_NANO)
        if self._dead == ffi.NULL:
            raise CaptureError("pcap_open_dead failed")
        self._d = L.pcap_dump_open(self._dead, os.fsencode(path))
        if self._d == ffi.NULL:
            msg = _err(self._dead)
            L.pcap_close(self._dead)
            raise CaptureError(f"pcap_dump_open({path}): {msg}")
        self._hdr = ffi.new("struct pcap_pkthdr *")

    def write(self, ts_ns: int, frame: bytes, orig_len: int | None = None) -> None:
        """Append one packet. Raises `CaptureError` after close."""
        if self._d is None:
            raise CaptureError("dumper is closed")
        hdr = self._hdr
        hdr.ts.tv_sec, hdr.ts.tv_usec = divmod(ts_ns, 1_000_000_000)
        hdr.caplen = len(frame)
        hdr.len = len(frame) if orig_len is None else orig_len
        lib().pcap_dump(ffi.cast("unsigned char *", self._d), hdr, frame)

    def close(self) -> None:
        """Flush and close (idempotent)."""
        if self._d is not None:
            L = lib()
            L.pcap_dump_close(self._d)
            L.pcap_close(self._dead)
            self._d = None

    def __enter__(self) -> PcapDumper:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
