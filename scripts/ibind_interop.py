"""Drives the unmodified ibind 0.2.2 `IbkrClient(use_oauth=True)` against an ibauth sandbox,
configured only by ibind's own IBIND_* variables (set by the caller, with REQUESTS_CA_BUNDLE
naming the sandbox CA): live session token generated and validated, ssodh/init, tickle, auth
status, logout. Prints one JSON line of what it saw."""

import json

from ibind import IbkrClient

client = IbkrClient(use_oauth=True)
tickle = client.tickle().data
status = client.authentication_status().data
client.oauth_shutdown()
print(json.dumps({
    "lst_validated": client.live_session_token is not None,
    "tickle_authenticated": tickle["iserver"]["authStatus"]["authenticated"],
    "status": {k: status[k] for k in ("authenticated", "competing", "connected")},
}))
