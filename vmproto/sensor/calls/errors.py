"""Errors raised by the call analysis."""

from __future__ import annotations


class CallAnalysisError(ValueError):
    """Base class: input the call analysis cannot use."""


class SipParseError(CallAnalysisError):
    """A byte string is not a SIP message (bad start line, header block or length)."""


class SdpParseError(CallAnalysisError):
    """An SDP body cannot be read (bad line syntax or port)."""


class AnalyzerConfigError(CallAnalysisError):
    """An analysis option has a value the analysis cannot work with (the message names the option)."""
