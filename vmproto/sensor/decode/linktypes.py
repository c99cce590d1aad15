"""Link-layer types the decoder understands (pcap LINKTYPE_* values)."""

from __future__ import annotations

NULL = 0  # BSD loopback: 4-byte address family in the writer's byte order
EN10MB = 1
RAW_BSD12 = 12  # DLT_RAW on OpenBSD-derived systems
RAW_BSD14 = 14  # DLT_RAW on some BSDs
RAW = 101
LOOP = 108  # OpenBSD loopback: address family in network byte order
LINUX_SLL = 113
IPV4 = 228
IPV6 = 229
LINUX_SLL2 = 276

SUPPORTED = frozenset({NULL, EN10MB, RAW_BSD12, RAW_BSD14, RAW, LOOP, LINUX_SLL, IPV4, IPV6, LINUX_SLL2})

NAMES = {NULL: "NULL", EN10MB: "EN10MB", RAW_BSD12: "RAW", RAW_BSD14: "RAW", RAW: "RAW", LOOP: "LOOP",
         LINUX_SLL: "LINUX_SLL", IPV4: "IPV4", IPV6: "IPV6", LINUX_SLL2: "LINUX_SLL2"}

# Address-family values a NULL/LOOP header may carry for IPv6 (BSD variants differ).
AF_INET6_VALUES = frozenset({10, 24, 28, 30})
