"""
Fault injection for the OpenSIPS emulator: what goes wrong in production but
not in the reference traces (lost MI datagrams, lost event datagrams, an
OpenSIPS restart, baresip's NOTIFY race on every transfer).

L{Faults} is the configuration (all off by default); L{FaultDice} draws the
random decisions from a generator of its own, so that turning faults on
never changes the tags, Call-IDs and dialog ids the emulator generates, and
the same seed gives the same losses.  What the traces do not show (how loss
is drawn, what phones do across a restart) is listed as a guess in
C{docs/emulator.md} "Fault injection".

Sources: C{3.4/README.md} "The NOTIFY race" and
C{3.4/d_blind_transfer_caller_success.jsonl} (a transfer without any
E_CALL_TRANSFER), C{3.4/README.md} "uptime (a liveness probe ...)" (the
restart detector), C{3.4/b_click_to_dial_noanswer.jsonl} (a target that
never answers).
"""

from __future__ import annotations

import random

import attr


def _percent(instance: object, attribute: attr.Attribute[float], value: float) -> None:
    if not 0.0 <= value <= 100.0:
        raise ValueError(f"{attribute.name} must be a percentage in 0..100, got {value!r}")


def _not_negative(instance: object, attribute: attr.Attribute[float], value: float) -> None:
    if value < 0:
        raise ValueError(f"{attribute.name} must be >= 0 seconds, got {value!r}")


@attr.s(frozen=True, auto_attribs=True, kw_only=True)
class Faults:
    """
    Which faults the emulator injects; every one is off by default.

    @ivar mi_request_loss: percent (0..100) of MI request datagrams dropped
        on the way in: no reply, no effect.
    @ivar mi_reply_loss: percent of MI reply datagrams dropped on the way
        out (the request took effect); drawn per reply datagram, so each
        extra 18x reply of C{pass_provisional_replies} is drawn too.
    @ivar event_loss: percent of EVI event datagrams not sent, drawn per
        datagram (per subscriber).
    @ivar event_loss_only: when set (e.g. C{"E_DLG_STATE_CHANGED"}), only
        that event is lost; C{None}: any event.
    @ivar notify_race: percent of blind transfers (and CallStart's transfer)
        by a baresip transferee that lose the NOTIFY race: no
        E_CALL_TRANSFER at all, the old call ends, the new call connects
        with its own Call-ID (3.4/README.md "The NOTIFY race",
        3.4/d_blind_transfer_caller_success.jsonl).  Not drawn while the
        C{notify_delay_ms} knob is set (the knob is what avoids the race).
    @ivar restart_downtime: seconds OpenSIPS stays down in a restart
        (L{OpenSIPSEmulator.restart}).
    @ivar restart_forget_dialogs: whether a restart forgets every dialog
        (OpenSIPS without dialog persistence, C{db_mode=0}); C{False} keeps
        the confirmed ones.
    @ivar restart_every: seconds between automatic restarts (the first one
        C{restart_every} after the emulator starts); 0 = never.
    @ivar seed: seeds the draws; C{None}: the emulator's own C{seed}.
    """

    mi_request_loss: float = attr.ib(default=0.0, validator=_percent)
    mi_reply_loss: float = attr.ib(default=0.0, validator=_percent)
    event_loss: float = attr.ib(default=0.0, validator=_percent)
    event_loss_only: str | None = None
    notify_race: float = attr.ib(default=0.0, validator=_percent)
    restart_downtime: float = attr.ib(default=2.0, validator=_not_negative)
    restart_forget_dialogs: bool = True
    restart_every: float = attr.ib(default=0.0, validator=_not_negative)
    seed: int | None = None


class FaultDice:
    """
    The random decisions of L{Faults}, from a generator of their own (the
    emulator's tags and Call-IDs do not depend on them).  A fault whose
    percentage is 0 draws nothing.

    @ivar faults: the configuration in force; may be replaced at any time
        (e.g. a test stops the loss so that cleanup can finish).
    @ivar counts: how many of each fault happened (C{"mi_request"},
        C{"mi_reply"}, C{"event"}, C{"notify_race"}), for tests and logs.
    """

    def __init__(self, faults: Faults, seed: int | None) -> None:
        self.faults = faults
        self._rng = random.Random(faults.seed if faults.seed is not None else seed)
        self.counts: dict[str, int] = {"mi_request": 0, "mi_reply": 0, "event": 0, "notify_race": 0}

    def _draw(self, percent: float, what: str) -> bool:
        if percent <= 0.0:
            return False
        hit = self._rng.random() * 100.0 < percent
        if hit:
            self.counts[what] += 1
        return hit

    def lose_request(self) -> bool:
        """Whether this MI request datagram is lost on the way in."""
        return self._draw(self.faults.mi_request_loss, "mi_request")

    def lose_reply(self) -> bool:
        """Whether this MI reply datagram is lost on the way out."""
        return self._draw(self.faults.mi_reply_loss, "mi_reply")

    def lose_event(self, event: str) -> bool:
        """Whether this datagram of C{event} is not sent."""
        only = self.faults.event_loss_only
        if only is not None and only != event:
            return False
        return self._draw(self.faults.event_loss, "event")

    def notify_race(self) -> bool:
        """Whether this baresip transfer loses the NOTIFY race."""
        return self._draw(self.faults.notify_race, "notify_race")
