"""The sensor's spool: per-call SIP/RTP captures, their index, the size/age cleaner, path confinement."""

from .cleaner import CleanupAction, SpoolCleaner, execute_plan, plan_cleanup
from .errors import SpoolAccessError, SpoolError, SpoolOptionError
from .index import SpoolIndex, UnitUsage
from .layout import SpoolLayout, unit_of, unit_start
from .options import RtpMode, SpoolLimits, SpoolOptions, parse_savertp
from .writer import LINKTYPE_RAW, SpoolStats, SpoolWriter, pcap_file_header

__all__ = [
    "LINKTYPE_RAW",
    "CleanupAction",
    "RtpMode",
    "SpoolAccessError",
    "SpoolCleaner",
    "SpoolError",
    "SpoolIndex",
    "SpoolLayout",
    "SpoolLimits",
    "SpoolOptionError",
    "SpoolOptions",
    "SpoolStats",
    "SpoolWriter",
    "UnitUsage",
    "execute_plan",
    "parse_savertp",
    "pcap_file_header",
    "plan_cleanup",
    "unit_of",
    "unit_start",
]
