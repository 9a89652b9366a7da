"""Drives the unmodified ibind 0.2.2 `IbkrWsClient` (OAuth 1.0a) against an ibauth sandbox,
configured only by IBIND_* variables (IBIND_CACERT names the sandbox CA for the socket,
REQUESTS_CA_BUNDLE for REST): it must receive the `system` and `sts` messages. Prints one JSON
line of what it saw."""

import json
import threading

from ibind import IbkrClient, IbkrWsClient
from ibind.ibkr_ws.ibkr_events import AuthenticationStatus, System
from ibind.ws.ws_sinks import CallbackSink

seen = {}
done = threading.Event()


def record(name):
    def callback(event):
        seen[name] = event.model_dump(mode="json")
        if "system" in seen and "sts" in seen:
            done.set()

    return callback


sink = CallbackSink()
sink.on(System, record("system"))
sink.on(AuthenticationStatus, record("sts"))
client = IbkrClient(use_oauth=True)
ws = IbkrWsClient(ibkr_client=client, sink=sink, synchronous_output_events=True)
ws.start()
received = done.wait(timeout=15)
ws.shutdown()
client.oauth_shutdown()
print(json.dumps({"received": received, "events": seen}, default=str))
