#!/usr/bin/env python3
"""Verifies a Longhaul webhook delivery as docs/WEBHOOKS.md describes.

Usage: verify_webhook.py SECRET SIGNATURE_HEADER BODY_FILE SEEN_IDS_FILE [NOW]
Prints "ok" (and remembers the event id) or why the delivery is refused;
exits 0 only for "ok". NOW (unix seconds) defaults to the clock.
"""
import hashlib
import hmac
import json
import sys
import time

TOLERANCE = 300


def verify(secret, header, body, seen, now):
    timestamp, signatures = None, []
    for part in header.split(","):
        name, _, value = part.strip().partition("=")
        if name == "t":
            timestamp = value
        elif name == "v1":
            signatures.append(value)
    if timestamp is None or not signatures:
        return "malformed"
    expected = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    if not any(hmac.compare_digest(expected, s) for s in signatures):
        return "mismatch"
    if abs(now - int(timestamp)) > TOLERANCE:
        return "stale"
    event_id = json.loads(body)["id"]
    if event_id in seen:
        return "replayed"
    seen.add(event_id)
    return "ok"


def main():
    secret, header, body_file, seen_file = sys.argv[1:5]
    now = int(sys.argv[5]) if len(sys.argv) > 5 else int(time.time())
    with open(body_file, "rb") as f:
        body = f.read()
    try:
        with open(seen_file) as f:
            seen = set(f.read().split())
    except FileNotFoundError:
        seen = set()
    verdict = verify(secret, header, body, seen, now)
    with open(seen_file, "w") as f:
        f.write("\n".join(sorted(seen)))
    print(verdict)
    sys.exit(0 if verdict == "ok" else 1)


if __name__ == "__main__":
    main()
