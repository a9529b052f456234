"""Checks for the tests: a JSON error answer, polling until something holds."""

import time

def assert_json_error(r, status, *fragments):
    """r is a JSON error with that status whose message contains every fragment
    (case-insensitive). Returns the message."""
    assert r.status == status, "want %d, got %r" % (status, r)
    ctype = r.headers.get("content-type", "")
    assert ctype.startswith("application/json"), "error Content-Type: %r (%r)" % (ctype, r)
    body = r.json()
    assert isinstance(body, dict) and set(body) == {"error"}, "error body: %r" % r.body
    msg = body["error"]
    assert isinstance(msg, str) and msg, "error message: %r" % r.body
    for f in fragments:
        assert f.lower() in msg.lower(), "error message %r does not say %r" % (msg, f)
    return msg

def wait_until(fn, timeout, interval=0.02):
    """Call fn until it returns something true (returned as True) or timeout seconds pass
    (False). Exceptions from fn count as false."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if fn():
                return True
        except Exception:
            pass
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)
