"""Drives the unmodified Python ibauth 0.1.6 against an ibauth sandbox:
connect() → tickle() → status() → logout(), then prints one JSON line of what it saw.
Usage: python_interop.py CONFIG HOST:PORT [--connect-only]
(run from the config's folder; the sandbox CA via SSL_CERT_FILE). `--connect-only` stops after
connect(): the cold login that scripts/bench-login.sh times.

Only the instance is configured: its domain is hard-coded to api.ibkr.com, and its IP lookup
(api.ipify.org) is unreachable offline, so it answers 127.0.0.1 — the address the sandbox
sees and checks against the SSO request's `ip` claim.
"""

import asyncio
import json
import sys

from ibauth import auth_from_yaml


async def main(config: str, domain: str, connect_only: bool) -> dict:
    auth = auth_from_yaml(config)
    auth._domain = domain

    async def loopback_ip() -> str:
        auth.IP = "127.0.0.1"
        return auth.IP

    auth._check_ip = loopback_ip
    await auth.connect()
    assert auth.bearer_token, "no bearer token after connect()"
    if connect_only:
        return {"connected": True}
    session = await auth.tickle()
    tickled = {"authenticated": auth.authenticated, "competing": auth.competing, "connected": auth.connected}
    status = await auth.status()
    await auth.logout()
    return {
        "session": bool(session),
        "tickle": tickled,
        "status": {"authenticated": status.authenticated, "competing": status.competing, "connected": status.connected},
        "logged_out": True,
    }


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main(sys.argv[1], sys.argv[2], "--connect-only" in sys.argv[3:]))))
