"""cffi (API mode) definition of the RTP statistics kernel (`_kernel.c`).

`build(tmpdir)` compiles the extension module `vmproto.sensor.calls._rtp_kernel` and returns the path of the
shared object. `vmproto.sensor.calls.kernel` calls it on first use and caches the result. For a build at
install time, point setuptools at `ffibuilder` (`cffi_modules = ["vmproto/sensor/calls/_kernel_build.py:
ffibuilder"]`); the installed module is used when its embedded digest matches this source.
"""

from __future__ import annotations

from pathlib import Path

from vmproto._ckernel import KernelSpec

MODULE_NAME = "vmproto.sensor.calls._rtp_kernel"
SOURCE = Path(__file__).with_name("_kernel.c")

#: What Python sees of the kernel. Struct fields listed here are read after a stream ends; `...;` lets the C
#: compiler fill in the layout (API mode), so the order need not match the C struct.
CDEF = """
typedef struct {
    int64_t first_time_us, last_time_us;
    int64_t ttl_min, ttl_max, ttl_sum, ttl_count;
    int64_t codec, first_codec;
    int64_t received, lost, reordered;
    int64_t slost[11];
    int64_t delay[7];
    double avgjitter, maxjitter;
    int64_t packetization;
    float avg_ptime;
    int64_t save_mos_wait, mos_time_ms;
    ...;
} vm_stream;

vm_stream *vm_stream_new(void);
void vm_stream_free(vm_stream *s);
int vm_stream_read(vm_stream *s, int64_t ts_us, int64_t ttl, const uint8_t *data, int64_t len,
                   const int64_t *fm, int64_t fm_n, int connected);
void vm_stream_save_mos(vm_stream *s, int connected);
int64_t vm_stream_loss(const vm_stream *s, int chan, int bucket);
int64_t vm_stream_mos_min(const vm_stream *s, int chan);
double vm_stream_mos_avg(const vm_stream *s, int chan);
void vm_stream_set_rtpmap(vm_stream *s, int pt, int64_t codec);
const char *vm_kernel_digest(void);
"""

#: Floating point must follow Python's evaluation exactly: no fused multiply-add, no fast-math.
COMPILE_ARGS = ["-O2", "-ffp-contract=off", "-fno-fast-math", "-std=c99"]


#: The kernel's build description, shared with the loader (vmproto._ckernel). The digest is compiled in, so an
#: install-time build is used only when it matches this source.
SPEC = KernelSpec(MODULE_NAME, SOURCE, CDEF, tuple(COMPILE_ARGS), libraries=("m",), embed_digest=True)
source_digest = SPEC.digest
ffibuilder = SPEC.ffibuilder  # setuptools: cffi_modules = ["vmproto/sensor/calls/_kernel_build.py:ffibuilder"]
build = SPEC.build


if __name__ == "__main__":
    print(build("."))
