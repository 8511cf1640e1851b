"""callapi: control SIP calls running through OpenSIPS over WebSocket JSON-RPC."""
__version__ = "0.1.0"
