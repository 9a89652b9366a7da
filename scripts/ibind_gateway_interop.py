"""Drives the unmodified ibind 0.2.2 in gateway mode (no OAuth: `IbkrClient()` and
`IbkrWsClient` as they talk to IBKR's Client Portal Gateway, certificate verification off as
ibind defaults) against an `ibauth gateway`, configured only by ibind's own variables
(IBIND_REST_URL, IBIND_WS_URL).

REST: tickle, health, auth status, ssodh/init, reauthenticate, accounts, portfolio accounts,
a market-data snapshot, live orders, logout (the gateway keeps the shared session). WebSocket:
a market-data subscription, confirmed and streaming. Then it waits for a line on standard input
`after <unix time>` — the caller has made IBKR drop the gateway's upstream socket meanwhile —
and for two more market-data messages received after that time, without subscribing again.

ibind logs to standard output; this script's own lines start with `INTEROP ` and carry JSON:
`{"phase":"subscribed"}` once streaming, then the final report."""

import json
import sys
import threading
import time

from ibind import CallbackSink, IbkrClient, IbkrWsClient, events
from ibind.ibkr_ws.ibkr_subscriptions import MarketDataSubscription

CONID = "265598"
FIELDS = ["31", "84", "86"]


def say(message):
    print("INTEROP " + json.dumps(message, default=str), flush=True)


client = IbkrClient()
rest = {
    "base_url": client.base_url,
    "tickle": client.tickle().data,
    "healthy": client.check_health(),
    "status": client.authentication_status().data,
    "init": client.initialize_brokerage_session().data,
    "reauthenticate": client.reauthenticate().data,
    "accounts": client.receive_brokerage_accounts().data,
    "portfolio_accounts": client.portfolio_accounts().data,
    "snapshot": client.live_marketdata_snapshot([CONID], FIELDS).data,
    "live_orders": client.live_orders().data,
    "logout": client.logout().data,
    # Still served after this client's logout: the session is the gateway's.
    "status_after_logout": client.authentication_status().data,
}

lock = threading.Condition()
market_data = []  # (received at, event data)
lifecycle = {"open": 0, "close": 0, "error": 0}


def on_market_data(event):
    with lock:
        market_data.append((time.time(), event.data))
        lock.notify_all()


def counter(name):
    def count(_event):
        with lock:
            lifecycle[name] += 1

    return count


sink = CallbackSink()
sink.on(events.MarketData, on_market_data)
sink.on(events.WsOpen, counter("open"))
sink.on(events.WsClose, counter("close"))
sink.on(events.WsError, counter("error"))
ws = IbkrWsClient(ibkr_client=client, sink=sink, synchronous_output_events=True)
ws.start()
subscription = MarketDataSubscription(conid=CONID, fields=FIELDS)
handle = ws.subscribe(subscription)
subscribed = handle.wait(timeout=20)
with lock:
    streaming = lock.wait_for(lambda: len(market_data) >= 2, timeout=10)
say({"phase": "subscribed", "subscribed": subscribed, "streaming": streaming})

line = sys.stdin.readline().split()
after = float(line[1]) if len(line) == 2 and line[0] == "after" else None
resumed = False
if after is not None:
    with lock:
        resumed = lock.wait_for(
            lambda: sum(1 for at, _ in market_data if at > after) >= 2, timeout=15
        )
with lock:
    received = list(market_data)
    opened_before_shutdown = dict(lifecycle)
ws.unsubscribe(subscription)
ws.shutdown()
client.close()
say(
    {
        "phase": "done",
        "rest": rest,
        "subscribed": subscribed,
        "streaming": streaming,
        "resumed": resumed,
        "received": len(received),
        "received_after": sum(1 for at, _ in received if after is not None and at > after),
        "last": received[-1][1] if received else None,
        "lifecycle": opened_before_shutdown,
    }
)
