"""cffi (API mode) definition of the packet engine kernel (`_kernel.c`).

`build(tmpdir)` compiles the extension module `_vmproto_decode_kernel` and returns the path of the shared
object. `vmproto.sensor.decode.kernel` calls it on first use and caches the result; run this file directly
(`python -m vmproto.sensor.decode._kernel_build`) to build into the current directory.
"""

from __future__ import annotations

from pathlib import Path

from vmproto._ckernel import KernelSpec

MODULE_NAME = "_vmproto_decode_kernel"
SOURCE = Path(__file__).with_name("_kernel.c")

#: What Python sees of the kernel; `...;` lets the compiler fill in the struct layouts (API mode).
CDEF = """
typedef struct {
    uint16_t vxlan_port;
    uint16_t tzsp_port;
    int32_t ipv6;
    int32_t max_depth;
    uint8_t udp_watch[65536];
    uint8_t tcp_watch[65536];
    ...;
} vm_cfg;

typedef struct {
    uint32_t *src_off, *dst_off, *dst_end, *ip_off, *ip_end;
    uint32_t *pay_off, *pay_end;
    uint32_t *src4, *dst4;
    uint32_t *seq;
    int32_t *vlan;
    uint16_t *sport, *dport;
    uint8_t *ver, *proto, *ttl, *flags, *tunnel;
    uint32_t uniform;
    ...;
} vm_cols;

uint32_t vm_decode(const uint8_t *b, const uint32_t *starts, const uint32_t *ends, uint32_t n, int linktype,
                   const vm_cfg *cfg, vm_cols *c, uint8_t *status, uint32_t *counts);
int64_t vm_pcap_scan(const uint8_t *d, uint64_t n, uint64_t pos, int swap, int64_t mult, uint32_t max_frame,
                     uint32_t cap, int64_t *ts, uint32_t *start, uint32_t *end, uint32_t *orig, uint64_t *next);
"""

COMPILE_ARGS = ["-O2", "-std=c99", "-Wall", "-Wno-unused-function"]


#: The kernel's build description, shared with the loader (vmproto._ckernel).
SPEC = KernelSpec(MODULE_NAME, SOURCE, CDEF, tuple(COMPILE_ARGS))
source_digest = SPEC.digest
ffibuilder = SPEC.ffibuilder  # what a setuptools `cffi_modules` entry would point at
build = SPEC.build


if __name__ == "__main__":
    print(build("."))
