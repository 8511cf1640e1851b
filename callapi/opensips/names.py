"""
The MI command names of the proxy in use: OpenSIPS 3.x names, or the 4.0
C{module:cmd} names learnt from C{which} (4.0 README "MI command names").
"""

from __future__ import annotations

import attrs


@attrs.define
class MINames:
    """
    The MI command names to use.  Defaults are the 3.x names, which OpenSIPS
    4.0 keeps as aliases (4.0 README, "MI command names").
    """

    hold: str = "call_hold"
    unhold: str = "call_unhold"
    end_dialog: str = "dlg_end_dlg"
    transfer: str = "call_transfer"
    uac_dlg: str = "t_uac_dlg"
    uac_cancel: str = "t_uac_cancel"
    list_dialogs: str = "dlg_list"
    subscribe: str = "event_subscribe"
    #: the liveness probe (3.4 README "uptime"; 4.0 C{core:uptime})
    uptime: str = "uptime"
    #: the proxy's version family as detected (C{"3.x"} or C{"4.0"}), or "" when unknown
    family: str = ""
    #: callops takes C{leg} on hold/unhold (OpenSIPS 4.0, 4.0 README "callops:hold")
    per_leg_hold: bool = False

    def use(self, commands: list[str]) -> None:
        """
        Pick names from the proxy's C{which} list: 4.0 lists only
        C{module:cmd} names (4.0 README "MI command names"), so use those;
        otherwise keep the 3.x names.  Never a short unprefixed name (they
        can be ambiguous, -32001).
        """
        if any(":" in name for name in commands):
            self.hold, self.unhold = "callops:hold", "callops:unhold"
            self.end_dialog, self.transfer = "dialog:end_dlg", "callops:transfer"
            self.uac_dlg, self.uac_cancel = "tm:uac_dlg", "tm:uac_cancel"
            self.list_dialogs, self.subscribe = "dialog:list", "evi:subscribe"
            self.uptime = "core:uptime"
            self.family, self.per_leg_hold = "4.0", True
        else:
            self.family, self.per_leg_hold = "3.x", False

    def missing(self, commands: list[str]) -> list[str]:
        """
        The names in use that the proxy's C{which} list lacks (a module not
        loaded).
        """
        wanted = [self.hold, self.unhold, self.end_dialog, self.transfer, self.uac_dlg, self.subscribe]
        return [name for name in wanted if name not in commands]
