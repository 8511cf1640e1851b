"""Test helpers shipped with callapi.

  - L{callapi.testing.fakes}: verified fakes of the seams (MI client,
    notification sink) and synchronous Deferred helpers.
  - L{callapi.testing.evi}: builders of OpenSIPS EVI events, shaped as on the wire.
  - L{callapi.testing.scenario}: one command run against the fakes, and the
    end-of-command check.
  - L{callapi.testing.daemon}: the real daemon in-process on loopback, against
    the emulator or any OpenSIPS MI address, and its stop-and-check.
  - L{callapi.testing.wsclient}: a WebSocket JSON-RPC client.

Everything here stands in for a real OpenSIPS or client; anything a user sees
from it is labelled as such."""
