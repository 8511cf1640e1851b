"""
Reconcile before report: what the registry (L{callapi.interfaces.IDialogRegistry})
says about a transfer's new call when no E_CALL_TRANSFER named it.

After the NOTIFY race (baresip's first NOTIFY before its INVITE, callops
answers it 480 and raises no C{start}, 3.4 README "the NOTIFY race"), or
after an OpenSIPS restart, the transfer may go on and connect while the
command never learns the new Call-ID.  The registry sees every dialog's
E_DLG_STATE_CHANGED, so the new call is looked for there: a dialog created
after OpenSIPS accepted the transfer, live, owned by no command, not one of
the transfer's own dialogs, whose C{to_uri} is the transfer destination
(the REFER's C{Refer-To}, which the transferee puts in the new INVITE's
R-URI and To).  URIs not known yet are learnt with L{IDialogRegistry.check}
(C{dlg_list callid=}), for at most L{MAX_LOOKUPS} dialogs.

Limits (docs/protocol.md): two transfers to the same destination within the
same window make the match ambiguous (then nothing is claimed and the
command reports the failure, naming the candidates); a transferee that puts
another URI in To (a rewritten Refer-To) is not found.
"""

from __future__ import annotations

from typing import Any

import attrs

from callapi.interfaces import IDialogRegistry
from callapi.opensips.dialog import DialogRecord, DialogState
from callapi.validation import same_address

#: Most dialogs whose URIs are looked up (C{dlg_list callid=}) per search.
MAX_LOOKUPS = 8


@attrs.frozen
class Found:
    """
    The result of L{find_new_call}.

    @ivar record: the one matching dialog, or C{None}.
    @ivar candidates: the Call-IDs of every matching dialog (more than one:
        ambiguous, C{record} is C{None}).
    """

    record: DialogRecord | None
    candidates: tuple[str, ...] = ()


def _matches(record: DialogRecord, destination: str) -> bool:
    try:
        return record.to_uri is not None and same_address(record.to_uri.strip("<>"), destination)
    except Exception:
        return False


async def find_new_call(
    registry: IDialogRegistry, since: float, exclude: set[str], destination: str
) -> Found:
    """
    Look for a transfer's new call in the registry.

    @param since: clock seconds when OpenSIPS accepted the transfer; older
        dialogs are not it.
    @param exclude: Call-IDs that are not it (the transferred dialogs).
    @param destination: the transfer target URI.
    @return: L{Found}.  Lookup failures (MI timeouts) count as "not found".
        When the registry holds no candidate (the new call's events may
        have been lost), it is swept once (a full paged C{dlg_list}) and
        searched again.
    """
    found = await _search(registry, since, exclude, destination)
    if found.record is None and not found.candidates:
        await registry.sweep()
        found = await _search(registry, since, exclude, destination)
    return found


async def _search(registry: IDialogRegistry, since: float, exclude: set[str], destination: str) -> Found:
    """One pass of L{find_new_call} over what the registry holds."""
    candidates: list[DialogRecord] = []
    lookups = 0
    records: list[Any] = list(registry.dialogs())
    for record in records:
        if (
            record.callid in exclude
            or record.created_at < since
            or record.state is DialogState.DELETED
            or registry.owner(record.callid) is not None
        ):
            continue
        if record.to_uri is None and lookups < MAX_LOOKUPS:
            lookups += 1
            try:
                fresh = await registry.check(record.callid)
            except Exception:
                continue
            if fresh is None:
                continue
            record = fresh
        if _matches(record, destination):
            candidates.append(record)
    if len(candidates) == 1:
        return Found(candidates[0], (candidates[0].callid,))
    return Found(None, tuple(r.callid for r in candidates))
