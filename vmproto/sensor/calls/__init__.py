"""SIP/RTP call analysis: DecodedPacket records in, CDR records out (see `CallAnalyzer`)."""

from vmproto.sensor.calls.analyzer import AnalyzerConfig, CallAnalyzer
from vmproto.sensor.calls.errors import AnalyzerConfigError, CallAnalysisError, SdpParseError, SipParseError

__all__ = ["AnalyzerConfig", "AnalyzerConfigError", "CallAnalyzer", "CallAnalysisError", "SdpParseError",
           "SipParseError"]
