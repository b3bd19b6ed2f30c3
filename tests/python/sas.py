"""IoT Hub SAS tokens for the test suites, signed as the Azure SDKs and CLI sign them
(HMAC-SHA256 over the URL-encoded resource and the expiry, with the base64 key)."""

import base64
import hashlib
import hmac
import time
import urllib.parse


def sign(resource, key, ttl=600, policy=None):
    """A token for `resource` (`{host}` or `{host}/devices/{id}`), valid for `ttl` seconds,
    signed with `key`; `policy` names a shared access policy (`skn`), none for a device key."""
    sr = urllib.parse.quote(resource, safe="")
    se = int(time.time()) + ttl
    sig = hmac.new(base64.b64decode(key), f"{sr}\n{se}".encode(), hashlib.sha256).digest()
    token = f"SharedAccessSignature sr={sr}&sig={urllib.parse.quote(base64.b64encode(sig), safe='')}&se={se}"
    return f"{token}&skn={policy}" if policy else token


def owner_token(connection_string):
    """A token for the whole hub from an owner connection string."""
    parts = dict(p.split("=", 1) for p in connection_string.split(";"))
    return sign(parts["HostName"], parts["SharedAccessKey"], policy=parts.get("SharedAccessKeyName", "iothubowner"))
