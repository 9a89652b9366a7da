#!/usr/bin/env python3
"""Writes the committed seed corpus, fuzz/corpus/<target>/, from the tests' own material: the
test vectors (crates/ibauth/tests/vectors, the same as ../shared/spec/vectors), the PEM
fixtures (throwaway test keys), the README's config files, the sandbox's answers and token and
ledger files as ibauth writes them. Run from the repository root: python3 fuzz/seeds.py
"""

import base64
import json
import os
import re
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CORPUS = os.path.join(ROOT, "fuzz", "corpus")
FIXTURES = os.path.join(ROOT, "crates", "ibauth", "tests", "fixtures")
V1 = json.load(open(os.path.join(ROOT, "crates", "ibauth", "tests", "vectors", "oauth1a.json")))
V2 = json.load(open(os.path.join(ROOT, "crates", "ibauth", "tests", "vectors", "oauth2.json")))


def put(target, name, data):
    folder = os.path.join(CORPUS, target)
    os.makedirs(folder, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(folder, name), "wb") as f:
        f.write(data)


def pem_der(text):
    body = "".join(l for l in text.splitlines() if l and not l.startswith("-----") and ":" not in l)
    return base64.b64decode(body)


def der_int(n):
    raw = n.to_bytes(max(1, (n.bit_length() + 8) // 8), "big")
    return der(0x02, raw)


def der(tag, body):
    n = len(body)
    if n < 0x80:
        length = bytes([n])
    else:
        raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
        length = bytes([0x80 | len(raw)]) + raw
    return bytes([tag]) + length + body


def pem(label, data):
    b64 = base64.b64encode(data).decode()
    lines = [b64[i : i + 64] for i in range(0, len(b64), 64)]
    return "-----BEGIN %s-----\n%s\n-----END %s-----\n" % (label, "\n".join(lines), label)


# --- pem_keys: mode 0 + PEM text; modes 1/4/13/19 + DER under RSA PRIVATE KEY / PRIVATE KEY /
# PUBLIC KEY / CERTIFICATE (see fuzz_targets/pem_keys.rs).
for name in sorted(os.listdir(FIXTURES)):
    if name.endswith(".pem"):
        text = open(os.path.join(FIXTURES, name), "rb").read()
        put("pem_keys", "text-" + name, b"\x00" + text)
for mode, name in [(1, "rsa2048_pkcs1.pem"), (4, "rsa2048_pkcs8.pem"), (1, "rsa1024_pkcs1.pem"),
                   (4, "ec_p256_pkcs8.pem"), (13, "rsa2048_public.pem"), (19, "certificate.pem")]:
    der_bytes = pem_der(open(os.path.join(FIXTURES, name)).read())
    put("pem_keys", "der-%d-%s" % (mode, name.replace(".pem", "")), bytes([mode]) + der_bytes)
put("pem_keys", "text-vector-signature", b"\x00" + V1["signature_key_pem"].encode())
put("pem_keys", "text-vector-encryption", b"\x00" + V1["encryption_key_pem"].encode())
put("pem_keys", "text-vector-oauth2-pkcs1", b"\x00" + V2["private_key_pkcs1_pem"].encode())

# --- dh_params: mode, generator, then hex (0), DER (1) or PEM (2).
primes = [("rfc3526", V1["dh_prime_hex"])]
for name in sorted(os.listdir(os.path.join(ROOT, "crates", "ibauth-sandbox", "src", "dh_primes")))[:2]:
    text = open(os.path.join(ROOT, "crates", "ibauth-sandbox", "src", "dh_primes", name)).read().strip()
    primes.append(("sandbox-" + name.replace(".hex", ""), text))
for label, hexp in primes:
    p = int(hexp, 16)
    put("dh_params", "hex-" + label, b"\x00\x02" + hexp.encode())
    param = der(0x30, der_int(p) + der_int(2))
    put("dh_params", "der-" + label, b"\x01\x02" + param)
    put("dh_params", "pem-" + label, b"\x02\x02" + pem("DH PARAMETERS", param).encode())
hexp = V1["dh_prime_hex"]
put("dh_params", "hex-colons", b"\x00\x05" + ":".join(hexp[i : i + 2] for i in range(0, len(hexp), 2)).encode())
put("dh_params", "hex-spaced", b"\x00\x02" + "\n  ".join(hexp[i : i + 64] for i in range(0, len(hexp), 64)).encode())
put("dh_params", "der-with-length", b"\x01\x00" + der(0x30, der_int(int(hexp, 16)) + der_int(2) + der_int(1024)))

# --- config_yaml: the README's files, and the tests' shapes.
readme = open(os.path.join(ROOT, "README.md")).read()
for i, block in enumerate(re.findall(r"```yaml\n(.*?)```", readme, re.S)):
    put("config_yaml", "readme-%d.yaml" % i, block)
put("config_yaml", "oauth1a-inline.yaml", (
    "auth: oauth1a\ntimeout: 2.5\noauth1a:\n  consumer_key: ABCDEFGHI\n  realm: limited_poa\n"
    "  access_token: \"0123456789abcdef0123\"\n  access_token_secret: \"%s\"\n"
    "  dh_prime: %s\n  dh_generator: 2\n  rest_url: https://127.0.0.1:5000/v1/api/\n"
    "  ws_url: wss://127.0.0.1:5000/v1/api/ws\n  timeout: 3\n  timout: 3\n"
) % (V1["access_token_secret"], V1["dh_prime_hex"]))
put("config_yaml", "third-party.yaml",
    "oauth1a:\n  consumer_key: TESTCONS\n  realm: test_realm\n  access_token: \"\"\n"
    "  callback_url: https://127.0.0.1:8443/ibauth/callback\n"
    "  authorize_url: https://www.interactivebrokers.com/authorize\n")
put("config_yaml", "oauth2-full.yaml",
    "client_id: TESTCLIENT\nclient_key_id: main\ncredential: \"00123\"\nprivate_key_file: k.pem\n"
    "base_url: http://127.0.0.1:5000\npublic_ip: 203.0.113.7\ntimeout: 10s\n"
    "ip_lookup_urls: https://api.ipify.org\ncompete: no\npublish: on\ncliend_id: x\n")
put("config_yaml", "policy-ibind.yaml",
    "maintain_oauth: false\nshutdown_oauth: \"0\"\ntickle_interval: 0.5\nrenew_margin: 0\n"
    "max_body: 64KiB\nfailover_hosts: https://1.api.ibkr.com\n"
    "pacing:\n  enabled: true\n  profile: gateway\n  max_wait: 1.5s\n  margin_ms: 0\n"
    "  endpoints:\n    - { path: /iserver/marketdata/history, limit: 5 concurrent }\n"
    "    - { path: /pa/summary, method: POST, limit: 1/15min }\n")
put("config_yaml", "empty.yaml", "# nothing\n---\n")
put("config_yaml", "anchors.yaml", "base: &b {client_id: X}\nother: *b\nauth: oauth2\n")

# --- replies: step byte (see fuzz_targets/replies.rs), status byte (0: 200; >= 192 others).
ok = b"\x00"
def reply(step, name, body, status=ok):
    put("replies", name, bytes([step]) + status + (body if isinstance(body, bytes) else json.dumps(body).encode()))
reply(0, "token", {"access_token": "a" * 32, "token_type": "Bearer", "scope": "sso-sessions.write", "expires_in": 86399})
reply(0, "token-string-expiry", {"access_token": "x", "expires_in": "8.6e4"})
reply(1, "sso-session", {"access_token": "b" * 32, "active": True, "token_type": "Bearer"})
reply(2, "validate", {"USER_NAME": "alice", "USER_ID": 123456, "EXPIRES": 86000000, "RESULT": True,
                      "IP": "127.0.0.1", "AUTH_TIME": 1700000000000, "CREDENTIAL": "alice"})
status_body = {"authenticated": True, "competing": False, "connected": True, "message": "", "fail": "",
               "MAC": "00:11:22:33:44:55", "serverInfo": {"serverName": "ibauth-sandbox", "serverVersion": "0.1.0"}}
reply(3, "ssodh-init", status_body)
reply(4, "auth-status", dict(status_body, authenticated="true", connected=1))
reply(5, "tickle", {"session": "0123456789abcdef", "ssoExpires": 86000000, "collission": False, "userId": 123456,
                    "hmds": {"error": "no bridge"}, "iserver": {"authStatus": status_body, "tickle": True}})
reply(6, "logout", {"status": True})
for case in V1["lst_cases"]:
    reply(7, "lst-" + case["name"], {"diffie_hellman_response": case["diffie_hellman_response"],
                                      "live_session_token_signature": case["live_session_token_signature"],
                                      "live_session_token_expiration": (1700000000 + 86400) * 1000})
reply(8, "request-token", {"oauth_token": V1["access_token_request_token"]})
reply(9, "access-token", {"is_paper": True, "oauth_token": V1["access_token"], "oauth_token_secret": V1["access_token_secret"]})
reply(10, "error-ibkr", {"error": "id: 1, error: invalid consumer", "statusCode": 401}, b"\xc3")
reply(10, "error-problem", {"type": "about:blank", "title": "Unauthorized", "status": 401, "detail": "invalid_client: unknown kid `x`"}, b"\xc3")
reply(10, "error-unauthenticated", {"authenticated": False}, ok)
reply(10, "error-no-bridge", b"{\"error\":\"no bridge\",\"statusCode\":400}", b"\xc2")
reply(11, "public-ip", b"203.0.113.7\n")
reply(12, "retry-after-seconds", b"120")
reply(12, "retry-after-date", b"Wed, 21 Oct 2015 07:28:00 GMT")

# --- ws_answer: shape byte, then the server's bytes (101 for RFC 6455's sample key).
def frame(opcode, payload, fin=True):
    head = bytes([(0x80 if fin else 0) | opcode])
    n = len(payload)
    if n < 126:
        head += bytes([n])
    elif n < 65536:
        head += bytes([126]) + n.to_bytes(2, "big")
    else:
        head += bytes([127]) + n.to_bytes(8, "big")
    return head + payload
upgrade = (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
           b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n")
messages = [b'{"topic":"system","success":"alice","isFT":false,"isPaper":true}',
            b'{"topic":"sts","args":{"authenticated":true,"competing":false,"connected":true}}',
            b'{"topic":"tic","alive":true}', b'{"message":"waiting for session"}']
put("ws_answer", "ibkr-messages", b"\x00" + upgrade + b"".join(frame(1, m) for m in messages) + frame(8, b"\x03\xe8bye"))
put("ws_answer", "fragmented-ping", b"\x05" + upgrade + frame(1, b'{"topic":', fin=False) + frame(9, b"p") + frame(0, b'"x"}') + frame(2, b"\x00\x01"))
put("ws_answer", "over-cap", b"\x03" + upgrade + frame(1, b"x" * 200))
put("ws_answer", "refused-401", b"\x00HTTP/1.1 401 Unauthorized\r\nContent-Length: 27\r\nRetry-After: 5\r\n\r\n{\"error\":\"not authorized\"}\n")
put("ws_answer", "no-upgrade", b"\x00HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\n\r\n")

# --- token_file: as FileStore writes it (schema 2, pretty JSON), schema 1, and a broken one.
lst = V1["lst_cases"][0]["live_session_token"]
oauth2 = {"schema": 2, "method": "oauth2", "identity": "oauth2:3f2a", "created_at": 1700000000, "updated_at": 1700000100,
          "api_base": "https://api.ibkr.com/", "session_id": "0123456789abcdef",
          "access_token": {"token": "a" * 32, "token_type": "Bearer", "scope": "sso-sessions.write", "obtained_at": 1700000000, "expires_at": 1700086399},
          "bearer": {"token": "b" * 32, "ip": "1.2.3.4", "obtained_at": 1700000001, "expires_at": 1700086400}}
oauth1a = {"schema": 2, "method": "oauth1a", "identity": "oauth1a:9c1d", "created_at": 1700000000, "updated_at": 1700000000,
           "api_base": "https://api.ibkr.com/v1/api/", "live_session_token": {"token": lst, "obtained_at": 1700000000, "expires_at_ms": 1700086400000}}
third = dict(oauth1a, method="third_party", identity="third_party:77aa",
             grant={"consumer_key": "TESTCONS", "access_token": V1["access_token"], "access_token_secret": V1["access_token_secret"], "is_paper": True, "granted_at": 1699990000})
put("token_file", "schema2", json.dumps({"schema": 2, "sessions": {d["identity"]: d for d in (oauth2, oauth1a, third)}}, indent=2) + "\n")
put("token_file", "schema2-one", json.dumps({"schema": 2, "sessions": {oauth2["identity"]: oauth2}}, indent=2) + "\n")
put("token_file", "schema1", json.dumps(dict(oauth1a, schema=1), indent=2) + "\n")
put("token_file", "schema-newer", '{"schema": 3, "sessions": {}}\n')
put("token_file", "torn", json.dumps({"schema": 2, "sessions": {oauth2["identity"]: oauth2}})[:150])

# --- pacing_ledger: {"v":1,"ids":{identity:{bucket:{"w","t":[[ms,n]],"p"}}}} around now.
now = int(time.time() * 1000)
ledger = {"v": 1, "ids": {"me": {"global": {"w": 1100, "t": [[now - 500, 3], [now, 1]], "p": 0},
                                 "GET /tickle": {"w": 1100, "t": [[now, 1]], "p": now + 60000}},
                          "other": {"GET /portfolio/accounts": {"w": 5100, "t": [[now - 100, 1]], "p": 0}}}}
put("pacing_ledger", "ledger", json.dumps(ledger, separators=(",", ":")))
put("pacing_ledger", "future", json.dumps({"v": 1, "ids": {"me": {"GET /iserver/marketdata/snapshot": {"w": 18446744073709551615, "t": [[18446744073709551615, 4294967295], [0, 0]], "p": 18446744073709551615}}}}))
put("pacing_ledger", "empty", b"")
put("pacing_ledger", "other-version", '{"v":2,"ids":{}}')

# --- verifier: request token, newline, what was pasted (or the callback's query).
tok, ver = V1["access_token_request_token"], V1["access_token_verifier"]
put("verifier", "redirect", "%s\nhttps://127.0.0.1:8443/ibauth/callback?oauth_token=%s&oauth_verifier=%s" % (tok, tok, ver))
put("verifier", "query", "%s\noauth_token=%s&oauth_verifier=%s" % (tok, tok, ver))
put("verifier", "bare", "%s\n%s" % (tok, ver))
put("verifier", "denied", "%s\noauth_token=%s&denied=1" % (tok, tok))
put("verifier", "other-token", "%s\n?oauth_token=ffff&oauth_verifier=%s" % (tok, ver))

# --- sandbox_oauth_header: every Authorization the vectors hold.
n = 0
for key, value in list(V1.items()) + list(V1["signed_requests_with_lst"].items()):
    if isinstance(value, str) and value.startswith("OAuth "):
        put("sandbox_oauth_header", "vector-%02d" % n, value)
        n += 1
put("sandbox_oauth_header", "duplicate", 'OAuth oauth_nonce="a", oauth_nonce="b"')

# --- sandbox_jwt: tokens of the vectors (mode 1: as sent), and header\0claims to sign (mode 0).
put("sandbox_jwt", "client-assertion", b"\x01" + V2["client_assertion"].encode())
put("sandbox_jwt", "sso-session-request", b"\x01" + V2["sso_session_request"]["body"].encode())
put("sandbox_jwt", "signed-assertion", b"\x00" + V2["jose_header_json"].encode() + b"\x00" + V2["client_assertion_payload_json"].encode())
put("sandbox_jwt", "signed-sso", b"\x00" + V2["jose_header_json"].encode() + b"\x00" + V2["sso_session_payload_json"].encode())
put("sandbox_jwt", "signed-crit", b"\x00" + b'{"alg":"RS256","kid":"main","crit":["exp"]}' + b"\x00{}")
