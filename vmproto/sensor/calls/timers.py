"""When a call is closed and its CDR written: the reference's destroy timers and call timeouts.

Signalling arms three deadlines on a call (whole seconds of packet time, as the reference keeps them):

* `destroy_at`: BYE + 60 s; 2xx to that BYE + 5 s (`quick_save_cdr` = yes: 1 s, = 2: 0 s); CANCEL + 10 s
  (1 s / 0 s); a final 3xx-6xx to the dialog's INVITE + `response_default_timeout` (5 s; a 300 uses
  `redirect_response_300_timeout`, 300 s; a 481 180 s; 401, 407, 491 and 501 none). Closing on it gives
  the CDR its normal `bye` code.
* `destroy_at_bye`: BYE + `bye_timeout` (1200 s); `destroy_at_bye_confirmed`: 2xx to BYE +
  `bye_confirmed_timeout` (600 s). Closing on either gives `bye` = 103.

A provisional 18x clears all three; every INVITE clears them and the BYE/auth-failure state. Without a
deadline the call closes on inactivity: `rtptimeout` (300 s after its last packet, once it had RTP: `bye`
104), `sipwithoutrtptimeout` (3600 s after its first packet without RTP: 108), `absolute_timeout` (14400 s
after its first packet: 102), or as a zombie (300 s without 18x, 2xx or RTP: 107). Checks run in that order.

RTP (and RTCP) captured after the 2xx to BYE (`ignore_rtp_after_bye_confirmed`, on) or after a 403 to the
INVITE (`ignore_rtp_after_auth_failed`, on) is not attributed to the call.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["CallTimers", "BYE_ABSOLUTE_TIMEOUT", "BYE_TIMEOUT", "BYE_RTP_TIMEOUT", "BYE_SIP_WITHOUT_RTP",
           "BYE_ZOMBIE", "ZOMBIE_TIMEOUT_S"]

BYE_ABSOLUTE_TIMEOUT = 102
BYE_TIMEOUT = 103
BYE_RTP_TIMEOUT = 104
BYE_ZOMBIE = 107
BYE_SIP_WITHOUT_RTP = 108
ZOMBIE_TIMEOUT_S = 300
_FINAL_NO_TIMER = frozenset({401, 407, 491, 501})


@dataclass(slots=True)
class CallTimers:
    """The deadlines of one call in whole seconds of packet time (0 = not armed) and the RTP cut-off."""

    destroy_at: int = 0
    destroy_at_bye: int = 0
    destroy_at_bye_confirmed: int = 0
    bye_ok_us: int = 0          # first 2xx to BYE since the last INVITE (0: none)
    bye_ok_permanent: bool = False
    auth_failed_us: int = 0     # 403 to the INVITE since the last INVITE (0: none)
    rtp_cutoff_us: int = 0      # RTP after this time is ignored (0: none)

    def clear(self) -> None:
        self.destroy_at = self.destroy_at_bye = self.destroy_at_bye_confirmed = 0

    def update_cutoff(self, after_bye_ok: bool, after_auth_failed: bool) -> None:
        times = [t for t, on in ((self.bye_ok_us, after_bye_ok), (self.auth_failed_us, after_auth_failed))
                 if on and t]
        self.rtp_cutoff_us = min(times) if times else 0


def final_response_delay(code: int, response_default_timeout: int, redirect_response_300_timeout: int,
                         bye_ok_permanent: bool, enabled: bool) -> int | None:
    """Seconds until a call is destroyed after a final 3xx-6xx response `code` to its INVITE, or None when
    the response arms no timer. `enabled`: the response does not answer an in-dialog re-INVITE."""
    if code == 481:
        if enabled:
            return 180
        return 60 if bye_ok_permanent else None
    if code in _FINAL_NO_TIMER or not enabled:
        return None
    return redirect_response_300_timeout if code == 300 else response_default_timeout
