"""Test helpers shipped with callapi: the OpenSIPS emulator and verified fakes.

Everything here stands in for a real OpenSIPS; anything a user sees from it is
labelled as an emulator."""
