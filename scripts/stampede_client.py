"""What the Python scripts (chaos, bench, browser test) say to a Stampede api: HS256 tokens
exactly like the `token` CLI's, and one HTTP request on a fresh connection.

k6 scripts cannot import Python; k6/lib/jwt.js is their one copy of the minting.
"""

import base64
import hashlib
import hmac
import http.client
import json
import time
import urllib.parse


def _b64url(raw):
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _encode(value):
    return _b64url(json.dumps(value, separators=(",", ":")).encode())


def mint_token(secret, subject, role, ttl_seconds=3600):
    """An HS256 JWT for `subject` with `role` (`admin` or `user`), valid for `ttl_seconds`."""
    now = int(time.time())
    signing_input = f'{_encode({"alg": "HS256", "typ": "JWT"})}.' + _encode(
        {"sub": subject, "role": role, "iat": now, "exp": now + ttl_seconds})
    signature = hmac.new(secret.encode(), signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_b64url(signature)}"


def request(method, url, token=None, body=None, headers=None, timeout=10):
    """One request on a fresh connection: (status, response headers, raw body bytes).

    `body` is sent as JSON when given. Connection failures raise OSError (e.g.
    ConnectionRefusedError) or http.client.HTTPException; a 4xx or 5xx is an answer, not
    an exception.
    """
    parts = urllib.parse.urlsplit(url)
    connection_class = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    connection = connection_class(parts.hostname, parts.port, timeout=timeout)
    try:
        all_headers = dict(headers or {})
        if token:
            all_headers["Authorization"] = f"Bearer {token}"
        payload = None
        if body is not None:
            payload = json.dumps(body)
            all_headers["Content-Type"] = "application/json"
        path = parts.path or "/"
        if parts.query:
            path += "?" + parts.query
        connection.request(method, path, body=payload, headers=all_headers)
        response = connection.getresponse()
        return response.status, response.headers, response.read()
    finally:
        connection.close()


def json_or_none(raw):
    """The parsed JSON of a body, or None when it is empty or not JSON."""
    try:
        return json.loads(raw) if raw else None
    except ValueError:
        return None
