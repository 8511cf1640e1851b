"""
The dialog registry at scale: load N dialogs through paged C{dlg_list}
(as at a (re)connect), then feed one E_DLG_STATE_CHANGED per dialog, and
print the time each takes and the process' resident memory before and
after.  In-process, no sockets: the MI replies are built from a dialog of
the reference trace C{3.4/i_dlg_list} (about 1.2 KB of JSON each), so the
figures are the registry's own cost, not the network's.

Usage: C{python bench/registry.py [--dialogs 100000]}.
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import time
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from twisted.internet.task import Clock

from callapi.opensips.events import EventHub
from callapi.opensips.names import MINames
from callapi.opensips.registry import DialogRegistry
from callapi.testing.fakes import FakeMIClient


def rss_mib() -> float:
    """This process' resident set size, MiB (C{/proc/self/status} VmRSS)."""
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def dialog(n: int) -> dict[str, Any]:
    """One C{dlg_list} entry shaped as in 3.4/i_dlg_list (a confirmed call)."""
    return {
        "ID": f"{n % 4096:x}.{n:x}",
        "db_id": str(n),
        "state": 4,
        "user_flags": "",
        "timestart": 1764840000,
        "datestart": "Fri Dec  4 08:40:00 2026",
        "timeout": 1764883200,
        "dateout": "Fri Dec  4 20:40:00 2026",
        "callid": f"{n:016x}-bench",
        "from_uri": f"sip:user{n}@127.0.0.1",
        "to_uri": f"sip:peer{n}@127.0.0.1",
        "caller_tag": f"{n:08x}",
        "caller_contact": f"<sip:user{n}@127.0.0.1:5071>",
        "callee_cseq": "1",
        "caller_route_set": "",
        "caller_bind_addr": "udp:127.0.0.1:5060",
        "CALLEES": [
            {
                "callee_tag": f"{n:08x}b",
                "callee_contact": f"<sip:peer{n}@127.0.0.1:5073>",
                "caller_cseq": "2",
                "callee_route_set": "",
                "callee_bind_addr": "udp:127.0.0.1:5060",
            }
        ],
    }


def main(argv: list[str] | None = None) -> int:
    """Run the measurement and print one line per figure."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dialogs", type=int, default=100_000)
    args = parser.parse_args(argv)
    gc.collect()
    base = rss_mib()
    clock, mi, hub = Clock(), FakeMIClient(), EventHub()
    registry = DialogRegistry(clock, mi, MINames(), cap=max(200_000, args.dialogs))
    hub.observe(registry.on_event)
    pages = 0
    started = time.perf_counter()
    done = registry.sweep()
    while mi.pending:
        request = mi.find("dlg_list")
        params = request.params or {}
        index, counter = params["index"], params["counter"]
        top = min(index + counter, args.dialogs)
        mi.reply("dlg_list", {"count": args.dialogs, "Dialogs": [dialog(n) for n in range(index, top)]})
        pages += 1
    load_s = time.perf_counter() - started
    assert done.called and len(registry) == args.dialogs, len(registry)
    gc.collect()
    loaded = rss_mib()
    started = time.perf_counter()
    for n in range(args.dialogs):
        hub.dispatch(
            "E_DLG_STATE_CHANGED",
            {
                "id": f"{n % 4096:x}.{n:x}",
                "db_id": str(n),
                "callid": f"{n:016x}-bench",
                "from_tag": f"{n:08x}",
                "to_tag": f"{n:08x}b",
                "old_state": 4,
                "new_state": 5,
            },
        )
    events_s = time.perf_counter() - started
    print(f"dialogs          {args.dialogs}")
    print(f"dlg_list pages   {pages} (page size {args.dialogs // max(pages, 1)})")
    print(f"load             {load_s:.2f} s (building the replies included)")
    print(
        f"RSS              {base:.1f} MiB before, {loaded:.1f} MiB loaded "
        f"(+{loaded - base:.1f} MiB, {(loaded - base) * 1024 * 1024 / args.dialogs:.0f} B per dialog)"
    )
    print(
        f"events           {args.dialogs} E_DLG_STATE_CHANGED 4->5 in {events_s:.2f} s "
        f"({events_s / args.dialogs * 1e6:.1f} us each)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
