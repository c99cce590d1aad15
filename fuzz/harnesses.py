"""The registry of harness bodies: name -> callable taking one fuzz input (``bytes``)."""

from __future__ import annotations

from collections.abc import Callable

from . import codec_harnesses as codecs
from .machine_harnesses import MACHINE_HARNESSES

__all__ = ["HARNESSES"]

HARNESSES: dict[str, Callable[[bytes], None]] = {
    "block_reader": codecs.block_reader,
    "opening": codecs.opening,
    "aes": codecs.aes,
    "decompress": codecs.decompress_any,
    "vmjson": codecs.vmjson_loads,
    "store_msg": codecs.store_message,
    "query_result": codecs.query_result_decode,
    "pbstore": codecs.pbstore_container,
    **MACHINE_HARNESSES,
}
