"""
The emulated OpenSIPS restart (fault injection, L{callapi.emulator.faults}):
down for a while, every transaction and subscription lost, dialogs
forgotten or kept, C{uptime}'s C{Up since} changed.  Not traced: every
consequence is a guess listed in C{docs/emulator.md} "Fault injection";
C{3.4/README.md} "uptime (a liveness probe ...)" is why C{Up since} moves.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from twisted.internet.interfaces import IDelayedCall

from callapi.logging import logger

if TYPE_CHECKING:
    from callapi.emulator.core import OpenSIPSEmulator


class Restarts:
    """
    Restarts of one emulator, by hand (L{restart}) or every
    C{Faults.restart_every} seconds, and the guards that make a down
    OpenSIPS silent.

    @param emu: the emulator whose scheduler, dialog table, subscriptions
        and fault dice it uses.
    @ivar down: OpenSIPS is down (between a restart and its coming back).
    @ivar count: restarts so far.
    """

    _log = logger()

    def __init__(self, emu: OpenSIPSEmulator) -> None:
        self._emu = emu
        self.down = False
        self.count = 0
        #: bumped by every restart: replies of requests received before it are never sent
        self._epoch = 0
        self._periodic: IDelayedCall | None = None
        self._come_up: IDelayedCall | None = None

    def restart(self, forget_dialogs: bool | None = None, downtime: float | None = None) -> None:
        """
        OpenSIPS restarts now:

          - it is down for C{downtime} seconds (default
            C{Faults.restart_downtime}): MI requests get no answer, no event
            is sent, and replies of requests received before the restart are
            never sent (the process that would send them is gone);
          - every transaction dies: ringing calls, pending C{t_uac_dlg},
            transfers and holds in progress stop where they are, without
            events;
          - subscriptions are forgotten: subscribers must C{event_subscribe}
            again once it is back;
          - dialogs: with C{forget_dialogs} (default
            C{Faults.restart_forget_dialogs}) all are forgotten, silently
            (the phones keep talking, nobody tells them); otherwise the
            confirmed ones (state 3/4) are kept as state 4 with no transfer
            pending, the others forgotten;
          - back up, C{uptime}'s C{Up since} is the time it came back.

        A restart while down is ignored (logged).
        """
        emu = self._emu
        if self.down:
            self._log.warn("restart requested while OpenSIPS is already down: ignored")
            return
        faults = emu.faults
        forget = faults.restart_forget_dialogs if forget_dialogs is None else forget_dialogs
        down_s = faults.restart_downtime if downtime is None else downtime
        self.count += 1
        self.down = True
        self._epoch += 1
        emu._sched.stop()
        emu._uac.forget()
        emu._evi.forget()
        kept = [] if forget else [d for d in emu.dialogs.values() if d.state in (3, 4)]
        emu.dialogs.clear()
        emu._by_dialog_id.clear()
        emu._ended.clear()
        for dlg in kept:
            dlg.state = 4
            dlg.transfer = None
            dlg.invite_chain = dlg.invite_final = None
            dlg.caller.reinvites_pending = dlg.callee.reinvites_pending = 0
            emu.dialogs[dlg.callid] = dlg
            emu._by_dialog_id[(dlg.h_entry, dlg.h_id)] = dlg
        self._log.warn(
            "OpenSIPS RESTART (fault injection): down for {downtime} s, subscriptions forgotten, "
            "{kept} dialog(s) kept",
            downtime=down_s,
            kept=len(kept),
        )
        self._come_up = emu.clock.callLater(down_s, self._back_up)

    def _back_up(self) -> None:
        self._come_up = None
        self.down = False
        self._emu._core.restarted()
        self._log.warn("OpenSIPS is back up after a restart (fault injection)")

    def schedule(self) -> None:
        """Arm the periodic restart if C{Faults.restart_every} asks for one."""
        every = self._emu.faults.restart_every
        if every > 0 and self._periodic is None:
            self._periodic = self._emu.clock.callLater(every, self._periodic_restart)

    def reschedule(self) -> None:
        """The faults changed: re-arm the periodic restart from now."""
        if self._periodic is not None and self._periodic.active():
            self._periodic.cancel()
        self._periodic = None
        self.schedule()

    def _periodic_restart(self) -> None:
        self._periodic = None
        self.restart()
        self.schedule()

    def stop(self) -> None:
        """Cancel the timers (the emulator stops)."""
        for timer in (self._periodic, self._come_up):
            if timer is not None and timer.active():
                timer.cancel()
        self._periodic = self._come_up = None

    def lose_event(self, event: str) -> bool:
        """Whether this event datagram is not sent: OpenSIPS is down, or
        C{Faults.event_loss} drew it."""
        return self.down or self._emu._dice.lose_event(event)

    def guard_reply(self, reply: Callable[[bytes], None]) -> Callable[[bytes], None]:
        """C{reply} that drops datagrams lost to C{Faults.mi_reply_loss} or to
        a restart since the request arrived."""
        epoch = self._epoch
        dice = self._emu._dice

        def guarded(data: bytes) -> None:
            if self.down or self._epoch != epoch:
                self._log.debug("MI reply dropped: OpenSIPS restarted since the request")
                return
            if dice.lose_reply():
                self._log.debug("MI reply LOST (fault injection)")
                return
            reply(data)

        return guarded
