"""Cold login with the Python ibauth 0.1.6, for scripts/bench-login.sh: import, read the YAML,
connect() against the sandbox. Usage: python_connect.py CONFIG HOST:PORT

The package is used unmodified; only its instance is pointed at the sandbox (its domain is
hard-coded) and its public-IP lookup (api.ipify.org, unreachable offline) answers 127.0.0.1.
The sandbox CA is trusted through SSL_CERT_FILE, set by the caller.
"""

import asyncio
import sys

from ibauth import auth_from_yaml


async def main(config: str, domain: str) -> None:
    auth = auth_from_yaml(config)
    auth._domain = domain

    async def loopback_ip() -> str:
        auth.IP = "127.0.0.1"
        return auth.IP

    auth._check_ip = loopback_ip
    await auth.connect()
    assert auth.bearer_token


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
