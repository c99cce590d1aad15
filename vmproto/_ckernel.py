"""Building and loading vmproto's optional C kernels (cffi API mode), in one place.

Each kernel is a C twin of a pure-Python reference (packet decode, RTP statistics, packet-block sums): the
Python code stays authoritative and tests hold the two to identical results. A kernel is described by a
`KernelSpec` (module name, C source, cdef, compiler flags) and loaded through a `KernelLoader`:

* a build made at install time (setuptools `cffi_modules` pointing at `spec.ffibuilder`) is used when the digest
  it was built with matches the current source (`embed_digest`);
* otherwise it is compiled on first use into a cache directory and loaded from there afterwards;
* without a C compiler (or any other toolchain failure) the loader says so once in the log and the callers use
  their pure-Python paths.

Cache directory (first match): `$VMPROTO_KERNEL_CACHE`; `<venv>/var/cache/vmproto` in a writable virtualenv;
`$XDG_CACHE_HOME/vmproto` or `~/.cache/vmproto`. Artefacts live under a digest of source, cdef, flags,
interpreter ABI and platform, so a changed source never loads a stale build.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import logging
import os
import sys
import sysconfig
import tempfile
import threading
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

__all__ = ["KernelLoader", "KernelSpec", "cache_root"]

log = logging.getLogger(__name__)


def cache_root() -> Path:
    """Where compiled kernels are kept (see the module docstring)."""
    env = os.environ.get("VMPROTO_KERNEL_CACHE")
    if env:
        return Path(env)
    if sys.prefix != sys.base_prefix and os.access(sys.prefix, os.W_OK):
        return Path(sys.prefix) / "var" / "cache" / "vmproto"
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "vmproto"


@dataclass(frozen=True)
class KernelSpec:
    """What a kernel is: `module_name` (the extension's import name), its C `source`, the `cdef` Python sees,
    compiler flags and libraries. `embed_digest` defines `VM_KERNEL_DIGEST` so an installed build can say which
    source it came from (the C source must expose it, e.g. `const char *vm_kernel_digest(void)`)."""

    module_name: str
    source: Path
    cdef: str
    compile_args: tuple[str, ...] = ("-O2", "-std=c99")
    libraries: tuple[str, ...] = ()
    embed_digest: bool = False

    def digest(self) -> str:
        """A key for the compiled artefact: source, cdef, flags, interpreter ABI and platform."""
        h = hashlib.sha256()
        h.update(self.source.read_bytes())
        h.update(self.cdef.encode())
        h.update(" ".join(self.compile_args).encode())
        h.update(" ".join(self.libraries).encode())
        h.update(sys.implementation.cache_tag.encode())
        h.update(str(sysconfig.get_config_var("EXT_SUFFIX")).encode())
        h.update(sysconfig.get_platform().encode())
        return h.hexdigest()[:16]

    def ffibuilder(self) -> Any:
        """The configured cffi builder (what a setuptools `cffi_modules` entry points at)."""
        from cffi import FFI  # imported lazily: importing a spec costs nothing

        ffi = FFI()
        ffi.cdef(self.cdef)
        macros = [("VM_KERNEL_DIGEST", f'"{self.digest()}"')] if self.embed_digest else []
        ffi.set_source(self.module_name, self.source.read_text(), extra_compile_args=list(self.compile_args),
                       libraries=list(self.libraries), define_macros=macros)
        return ffi

    def build(self, tmpdir: str | Path) -> Path:
        """Compile into `tmpdir`; return the shared object's path. Raises whatever the toolchain raises."""
        return Path(self.ffibuilder().compile(tmpdir=str(tmpdir), verbose=False))


class KernelLoader:
    """Loads one kernel once per process. `load()` returns the module (`.ffi`, `.lib`) or raises `error(text)`;
    the failure is remembered, so a missing compiler costs one attempt and one log line."""

    def __init__(self, spec: KernelSpec, what: str, error: Callable[[str], Exception], *,
                 digest_symbol: str | None = None) -> None:
        self.spec = spec
        self.what = what  # e.g. "C packet decode kernel", for log lines
        self.error = error
        self.digest_symbol = digest_symbol
        self._lock = threading.Lock()
        self._module: ModuleType | None = None
        self._failure: str | None = None

    def reset(self, failure: str | None = None) -> None:
        """Forget what was loaded (tests): the next `load()` tries again, or fails with `failure`."""
        with self._lock:
            self._module, self._failure = None, failure

    def installed_module(self) -> ModuleType | None:
        """A build made at install time, when its embedded digest matches the current source."""
        if self.digest_symbol is None:
            return None
        try:
            module = importlib.import_module(self.spec.module_name)
        except ImportError:
            return None
        try:
            built_from = module.ffi.string(getattr(module.lib, self.digest_symbol)()).decode()
        except (AttributeError, TypeError, UnicodeDecodeError):
            built_from = "an unknown build"
        if built_from != self.spec.digest():
            log.warning("installed %s was built from other sources (%s); ignoring it", self.what, built_from)
            return None
        return module

    def _build_into(self, target: Path) -> None:
        target.parent.mkdir(parents=True, exist_ok=True)
        log.warning("building the %s into %s (first use; needs a C compiler)", self.what, target.parent)
        with tempfile.TemporaryDirectory(dir=target.parent, prefix="build-") as tmp, warnings.catch_warnings():
            # setuptools/distutils emit deprecation warnings while compiling; they say nothing about the kernel.
            warnings.simplefilter("ignore")
            built = self.spec.build(tmp)
            # Atomic publish: concurrent first uses (processes) may both build; either result is the same file.
            os.replace(built, target)

    @staticmethod
    def _import_from(name: str, path: Path) -> ModuleType:
        spec = importlib.util.spec_from_file_location(name, path)
        if spec is None or spec.loader is None:
            raise ImportError(f"cannot load {path}")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    def load(self) -> ModuleType:
        """The compiled module, building it on first use. Raises `self.error(reason)` when unavailable."""
        with self._lock:
            if self._module is not None:
                return self._module
            if self._failure is not None:
                raise self.error(self._failure)
            installed = self.installed_module()
            if installed is not None:
                self._module = installed
                return installed
            try:
                suffix = sysconfig.get_config_var("EXT_SUFFIX") or ".so"
                leaf = self.spec.module_name.rsplit(".", 1)[-1]
                target = cache_root() / self.spec.digest() / (leaf + suffix)
                if not target.exists():
                    self._build_into(target)
                self._module = self._import_from(self.spec.module_name, target)
            except Exception as exc:  # noqa: BLE001 - any toolchain failure means "no kernel", said once
                self._failure = f"{self.what} unavailable ({type(exc).__name__}: {exc}); using pure Python"
                log.warning("%s", self._failure)
                raise self.error(self._failure) from exc
            return self._module

    def available(self) -> bool:
        """True when the kernel is (or can be) loaded."""
        try:
            self.load()
        except Exception:  # noqa: BLE001 - the error type is the caller's; any means "not available"
            return False
        return True
