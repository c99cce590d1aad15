"""SIP/RTP call analysis: DecodedPacket records in, CDR records out (see `CallAnalyzer`)."""

from vmproto.sensor.calls.analyzer import AnalyzerConfig, CallAnalyzer
from vmproto.sensor.calls.errors import CallAnalysisError, SdpParseError, SipParseError

__all__ = ["AnalyzerConfig", "CallAnalyzer", "CallAnalysisError", "SdpParseError", "SipParseError"]
