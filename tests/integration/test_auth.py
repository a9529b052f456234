"""Access control (API.md "Access control"; DAEMON.md auth, jwt_keys, jwt_audience,
jwt_issuer, jwt_leeway, protected_mode, perf_max_duration, `todod token`): bearer
tokens minted by an independent implementation (PyJWT, Debian's python3-jwt, over
python3-cryptography), every refusal answered as RFC 6750 says and counted, refused
requests leaving the table as it was, and protected mode tried from a real
non-loopback peer (a network namespace joined by a veth pair)."""

import base64
import hashlib
import hmac
import json
import os
import re
import signal
import socket
import subprocess
import time
import uuid

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

from lib.checks import assert_json_error, wait_until
from lib.env import free_port
from lib.marks import skip, test
from lib.metrics import metric
from lib.pg import get_pg
from lib.todod import Todod

ALL_SCOPES = "todos:read todos:write perf:run ops:read"


def b64u(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class Keys:
    """A JWK Set with one key of each family todod supports, and their private
    halves for minting tokens."""

    def __init__(self):
        self.secret = os.urandom(32)
        self.rsa = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.ec = ec.generate_private_key(ec.SECP256R1())
        self.ed = ed25519.Ed25519PrivateKey.generate()
        self.signing = {"hs": (self.secret, "HS256"), "rs": (self.rsa, "RS256"),
                        "ps": (self.rsa, "PS256"), "es": (self.ec, "ES256"),
                        "ed": (self.ed, "EdDSA")}

    def jwks(self, only=None):
        def public(kid, alg, jwk_json):
            k = json.loads(jwk_json)
            k.update(kid=kid, alg=alg)
            if k["kty"] == "EC":
                # RFC 7518 6.2.1.2: a coordinate is the curve's full size; PyJWT 2.6
                # drops leading zero bytes (1 key in 128), which todod rightly refuses
                for c in ("x", "y"):
                    raw = base64.urlsafe_b64decode(k[c] + "=" * (-len(k[c]) % 4))
                    k[c] = b64u(raw.rjust(32, b"\0"))
            return k

        keys = [{"kty": "oct", "kid": "hs", "alg": "HS256", "k": b64u(self.secret)},
                public("rs", "RS256", RSAAlgorithm.to_jwk(self.rsa.public_key())),
                public("ps", "PS256", RSAAlgorithm.to_jwk(self.rsa.public_key())),
                public("es", "ES256", ECAlgorithm.to_jwk(self.ec.public_key())),
                public("ed", "EdDSA", OKPAlgorithm.to_jwk(self.ed.public_key()))]
        return {"keys": [k for k in keys if only is None or k["kid"] in only]}

    def write(self, path, mode=0o600, only=None):
        with open(path, "w") as f:
            json.dump(self.jwks(only), f)
        os.chmod(path, mode)
        return path

    def token(self, scope=ALL_SCOPES, kid="es", sub="alice", lifetime=300, **claims):
        key, alg = self.signing[kid]
        now = int(time.time())
        body = {"sub": sub, "scope": scope, "iat": now, "exp": now + lifetime}
        body.update(claims)
        body = {k: v for k, v in body.items() if v is not None}
        return jwt.encode(body, key, algorithm=alg, headers={"kid": kid})


def bearer(token):
    return {"Authorization": "Bearer " + token}


def hand_made(header, claims, secret=None):
    """A token built by hand, for what PyJWT will not make: signed with HMAC-SHA256
    over secret when given, with an empty signature otherwise."""
    signing_input = b64u(json.dumps(header).encode()) + "." + b64u(json.dumps(claims).encode())
    sig = b""
    if secret is not None:
        sig = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return signing_input + "." + b64u(sig)


def raw_request(d, text):
    """text sent as is on a new connection; the answer's head."""
    with socket.create_connection((d.host, d.port), timeout=5) as sock:
        sock.sendall(text.encode())
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    return data.split(b"\r\n\r\n")[0].decode("latin-1")


def jwt_todod(keys, **conf):
    d = Todod(auth="jwt", **conf)
    d.write_conf(jwt_keys=keys.write(os.path.join(d.dir, "jwks.json")))
    return d


def todo_count(d):
    return int(d.pg.psql("SELECT count(*) FROM todos", db=d.db))


def assert_challenge(r, status, error=None, scope=None):
    assert r.status == status, r
    challenge = r.headers.get("www-authenticate", "")
    assert challenge.startswith('Bearer realm="todod"'), r.headers
    if error is None:
        assert "error=" not in challenge, challenge
    else:
        assert 'error="%s"' % error in challenge, challenge
    if scope is not None:
        assert 'scope="%s"' % scope in challenge, challenge
    return challenge


def wait_started(d, token):
    """d.start() polls /stats, which asks for a token here: wait for every worker."""
    d.start(wait="http")
    want = int(d.conf["workers"])

    def ready():
        r = d.request("GET", "/stats", headers=bearer(token))
        return r.status == 200 and sum(1 for w in r.json()["workers"]
                                       if w.get("ready") and w.get("db_connected")) >= want
    assert wait_until(ready, 10), d.log_tail()


# route, method, body, scope it needs, status it answers with that scope
ROUTES = [
    ("GET", "/todos", None, "todos:read", 200),
    ("GET", "/todos/done/false", None, "todos:read", 200),
    ("GET", "/todos/%s" % uuid.UUID(int=1), None, "todos:read", 404),
    ("POST", "/todos", {"title": "written with a token"}, "todos:write", 201),
    ("PUT", "/todos/%s" % uuid.UUID(int=1), {"done": True}, "todos:write", 404),
    ("DELETE", "/todos/%s" % uuid.UUID(int=1), None, "todos:write", 404),
    ("POST", "/todos/performance-test", {"message_count": 10}, "perf:run", 200),
    ("GET", "/metrics", None, "ops:read", 200),
    ("GET", "/stats", None, "ops:read", 200),
]


@test
def auth_jwt_asks_each_route_for_its_scope_and_a_refusal_changes_nothing():
    keys = Keys()
    with jwt_todod(keys) as d:
        everything = keys.token()
        wait_started(d, everything)
        # the dashboard page holds no data: it loads, then asks for a token itself
        for path in ("/health", "/live", "/ready", "/api-docs/openapi.json", "/dashboard"):
            assert d.request("GET", path).status == 200, path
        victim = d.request("POST", "/todos", {"title": "kept"}, headers=bearer(everything))
        assert victim.status == 201, victim
        victim = victim.json()["id"]
        before = todo_count(d)
        for method, path, body, scope, _ in ROUTES:
            r = d.request(method, path, body)
            assert_challenge(r, 401)
            assert_json_error(r, 401, "authentication required")
            # a scheme other than Bearer is no credential at all (RFC 6750 3.1)
            assert_challenge(d.request(method, path, body,
                                       headers={"Authorization": "Basic YWxpY2U6cHc="}), 401)
            others = " ".join(s for s in ALL_SCOPES.split() if s != scope)
            r = d.request(method, path, body, headers=bearer(keys.token(scope=others)))
            assert_challenge(r, 403, "insufficient_scope", scope)
            assert_json_error(r, 403, scope)
        # the refused writes touched nothing
        for method in ("PUT", "DELETE"):
            r = d.request(method, "/todos/" + victim, {"done": True} if method == "PUT" else None,
                          headers=bearer(keys.token(scope="todos:read")))
            assert r.status == 403, r
        assert todo_count(d) == before
        assert d.pg.psql("SELECT title || ' ' || done FROM todos WHERE id = '%s'" % victim,
                         db=d.db) == "kept false"
        # and each route answers with exactly its scope
        for method, path, body, scope, status in ROUTES:
            r = d.request(method, path, body, headers=bearer(keys.token(scope=scope)), timeout=30)
            assert r.status == status, (method, path, r)
        assert todo_count(d) == before + 1 + 10  # the POST and the performance test
        # a token in the query string is never read
        assert_challenge(d.request("GET", "/todos?access_token=" + everything), 401)


@test
def tokens_are_refused_as_rfc_8725_advises_and_every_key_type_is_accepted():
    keys = Keys()
    with jwt_todod(keys, jwt_audience="todo-api", jwt_issuer="https://idp.example",
                   jwt_leeway=30) as d:
        good = {"aud": "todo-api", "iss": "https://idp.example"}
        wait_started(d, keys.token(**good))
        for kid in ("hs", "rs", "ps", "es", "ed"):
            r = d.request("GET", "/todos", headers=bearer(keys.token(kid=kid, **good)))
            assert r.status == 200, (kid, r)
        # "aud" may be an array that contains the audience
        r = d.request("GET", "/todos", headers=bearer(keys.token(
            aud=["other", "todo-api"], iss="https://idp.example")))
        assert r.status == 200, r
        now = int(time.time())
        refused = {
            "token expired": keys.token(lifetime=-60, **good),
            "token not yet valid": keys.token(nbf=now + 600, **good),
            "token issued in the future": keys.token(iat=now + 600, **good),
            "wrong audience": keys.token(aud="someone-else", iss="https://idp.example"),
            "wrong issuer": keys.token(aud="todo-api", iss="https://evil.example"),
            "token without expiry": hand_made(
                {"alg": "HS256", "kid": "hs", "typ": "JWT"},
                {"sub": "x", "scope": ALL_SCOPES, **good}, keys.secret),
            "algorithm not allowed": hand_made(
                {"alg": "none", "typ": "JWT"},
                {"sub": "x", "scope": ALL_SCOPES, "exp": now + 300, **good}),
            "critical header parameters not supported": hand_made(
                {"alg": "HS256", "kid": "hs", "crit": ["exp"]},
                {"sub": "x", "scope": ALL_SCOPES, "exp": now + 300, **good}, keys.secret),
            "unknown key": hand_made(
                {"alg": "HS256", "kid": "nobody"},
                {"sub": "x", "scope": ALL_SCOPES, "exp": now + 300, **good}, keys.secret),
            "bad signature": keys.token(**good)[:-4] + ("AAAA" if not keys.token(**good)
                                                         .endswith("AAAA") else "BBBB"),
            "malformed token": "not.a-token",
            "token too large": keys.token(padding="x" * 9000, **good),
        }
        # base64url strictly: padded, or with a character outside the alphabet
        good_token = keys.token(kid="hs", **good)
        head, body, sig = good_token.split(".")
        refused["malformed token"] = good_token + "="
        # a truncated token (its signature cut short) no longer verifies
        truncated = head + "." + body + "." + sig[:-2]
        # JSON strictly: a duplicate member in the claims (json-c would keep the last)
        dup = (b64u(json.dumps({"alg": "HS256", "kid": "hs"}).encode()) + "." +
               b64u(('{"sub":"x","scope":"%s","exp":%d,"aud":"todo-api","iss":"https://idp.'
                     'example","exp":%d}' % (ALL_SCOPES, now - 600, now + 300)).encode()))
        dup += "." + b64u(hmac.new(keys.secret, dup.encode(), hashlib.sha256).digest())
        for token in (truncated, dup, head + "+" + "." + body + "." + sig):
            r = d.request("GET", "/todos", headers=bearer(token))
            assert_challenge(r, 401, "invalid_token")
        # the algorithm is bound to the key: an HS256 token "signed" with the RSA
        # key's public numbers as the secret is refused
        rsa_public = json.dumps(keys.jwks(["rs"])["keys"][0]).encode()
        refused["algorithm does not match the key"] = hand_made(
            {"alg": "HS256", "kid": "rs"},
            {"sub": "x", "scope": ALL_SCOPES, "exp": now + 300, **good}, rsa_public)
        for description, token in refused.items():
            r = d.request("GET", "/todos", headers=bearer(token))
            challenge = assert_challenge(r, 401, "invalid_token")
            assert 'error_description="%s"' % description in challenge, (description, challenge)
            assert_json_error(r, 401, description)
        # within the leeway, an expired token is still good
        r = d.request("GET", "/todos", headers=bearer(keys.token(lifetime=-10, **good)))
        assert r.status == 200, r
        # two Authorization headers are no one's token
        head = raw_request(d, "GET /todos HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n"
                              "Authorization: Bearer %s\r\nConnection: close\r\n\r\n"
                              % (keys.token(**good), keys.token(kid="hs", **good)))
        assert head.startswith("HTTP/1.1 401 ") and 'error="invalid_token"' in head, head


@test
def a_keycloak_shaped_key_set_and_access_token_are_accepted_as_conf_readme_says():
    # conf/README.md "Tokens from an identity provider": Keycloak's certs endpoint
    # serves an encryption key (RSA-OAEP, "use": "enc") beside its signing key,
    # both with x5c/x5t members; its access tokens carry aud as an array, a typ
    # claim, azp, jti, and the granted client scopes among OIDC's in "scope".
    signer = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    issuer = "https://kc.example.com/realms/R"

    def jwk(key, kid, alg, use):
        k = json.loads(RSAAlgorithm.to_jwk(key.public_key()))
        k.update(kid=kid, alg=alg, use=use, x5c=[b64u(b"not parsed by todod")],
                 x5t=b64u(b"t" * 20), **{"x5t#S256": b64u(b"s" * 32)})
        return k
    jwks = {"keys": [jwk(other, "enc-kid", "RSA-OAEP", "enc"), jwk(signer, "sig-kid", "RS256", "sig")]}
    with Todod(auth="jwt", jwt_issuer=issuer, jwt_audience="todo-api") as d:
        path = os.path.join(d.dir, "jwks.json")
        with open(path, "w") as f:
            json.dump(jwks, f)
        d.write_conf(jwt_keys=path)

        def token(scope, aud=("todo-api", "account")):
            now = int(time.time())
            return jwt.encode({"exp": now + 300, "iat": now, "jti": str(uuid.uuid4()),
                               "iss": issuer, "aud": list(aud), "sub": str(uuid.uuid4()),
                               "typ": "Bearer", "azp": "todo-cli", "scope": scope},
                              signer, algorithm="RS256", headers={"kid": "sig-kid"})
        good = token("openid profile todos:read todos:write email")
        wait_started(d, token("ops:read"))
        assert "1 signature keys; 1 encryption keys" in d.log(), d.log_tail()
        r = d.request("POST", "/todos", {"title": "from keycloak"}, headers=bearer(good))
        assert r.status == 201, r
        assert d.request("GET", "/todos/" + r.json()["id"], headers=bearer(good)).status == 200
        # the scopes and the audience are checked, as for any token
        assert_challenge(d.request("POST", "/todos", {"title": "no"},
                                   headers=bearer(token("openid todos:read"))),
                         403, "insufficient_scope", "todos:write")
        assert_challenge(d.request("GET", "/todos", headers=bearer(
            token("todos:read", aud=("account",)))), 401, "invalid_token")
        # a token signed with the encryption key's private half names a key todod skipped
        bad = jwt.encode({"exp": int(time.time()) + 300, "iss": issuer, "aud": "todo-api",
                          "scope": "todos:read"}, other, algorithm="RS256",
                         headers={"kid": "enc-kid"})
        assert_challenge(d.request("GET", "/todos", headers=bearer(bad)), 401, "invalid_token")
        assert todo_count(d) == 1


@test
def refusals_are_counted_by_reason_and_the_access_log_names_the_sub_never_the_token():
    keys = Keys()
    with jwt_todod(keys, access_log=True) as d:
        ops = keys.token(scope="ops:read", sub="prometheus")
        wait_started(d, ops)
        secret_token = keys.token(scope="todos:read", sub='mal"lory')
        assert d.request("GET", "/todos", headers=bearer(secret_token)).status == 200
        assert d.request("GET", "/todos").status == 401
        assert d.request("GET", "/todos").status == 401
        assert d.request("GET", "/todos", headers=bearer(keys.token(lifetime=-600))).status == 401
        assert d.request("GET", "/todos", headers=bearer("x.y.z")).status == 401
        assert d.request("POST", "/todos", {"title": "x"},
                         headers=bearer(secret_token)).status == 403
        text = d.request("GET", "/metrics", headers=bearer(ops)).text
        got = {reason: metric(text, "todod_auth_refusals_total", {"reason": reason})
               for reason in ("missing", "invalid", "expired", "scope", "protected")}
        assert got == {"missing": 2, "invalid": 1, "expired": 1, "scope": 1, "protected": 0}, got
        stats = d.request("GET", "/stats", headers=bearer(ops)).json()
        assert stats["totals"]["auth_refusals"] == got, stats["totals"]
        assert metric(text, "todod_http_requests_total",
                      {"route": "/todos", "method": "GET", "code": "401"}) == 4
        assert wait_until(lambda: "prometheus" in d.log(), 5)
        log = d.log()
        assert re.search(r'127\.0\.0\.1 - mal\\x22lory \[.*\] "GET /todos HTTP/1\.1" 200', log), log
        assert re.search(r'127\.0\.0\.1 - - \[.*\] "GET /todos HTTP/1\.1" 401', log), log
        assert secret_token not in log and secret_token.split(".")[2] not in log
        assert ops not in log


@test
def todod_token_mints_a_token_todod_accepts_and_readable_secrets_are_refused():
    keys = Keys()
    with jwt_todod(keys, jwt_audience="todo-api") as d:
        path = d.conf["jwt_keys"]
        p = d.run("token", "-c", d.conf_path, "--sub", "ops-team", "--scope", "todos:read ops:read",
                  "--ttl", "120")
        assert p.returncode == 0, p.stderr
        token = p.stdout.strip()
        claims = jwt.decode(token, keys.secret, algorithms=["HS256"], audience="todo-api")
        assert claims["sub"] == "ops-team" and claims["scope"] == "todos:read ops:read", claims
        assert 115 <= claims["exp"] - claims["iat"] <= 120, claims
        assert jwt.get_unverified_header(token)["kid"] == "hs"
        wait_started(d, token)
        assert d.request("GET", "/todos", headers=bearer(token)).status == 200
        assert d.request("POST", "/todos", {"title": "x"}, headers=bearer(token)).status == 403
        for args, why in ((["--sub", "x", "--scope", "a  b"], "--scope"),
                          (["--sub", "x", "--scope", "a", "--ttl", "0"], "--ttl"),
                          (["--sub", "x", "--scope", "a", "--kid", "es"], "no oct")):
            p = d.run("token", "-c", d.conf_path, *args)
            assert p.returncode == 1 and why in p.stderr, (args, p.stderr)
        d.stop()
        # a secret others may read is refused, by -t, by a start, and by the token command
        os.chmod(path, 0o644)
        p = d.run("-t", "-c", d.conf_path)
        assert p.returncode == 1 and "jwt_keys" in p.stderr, p
        p = d.run("token", "-c", d.conf_path, "--sub", "x", "--scope", "todos:read")
        assert p.returncode == 1 and "jwt_keys" in p.stderr, p
        d.start(wait=None)
        assert d.wait(10) == 1
        assert "jwt_keys" in d.log(), d.log_tail()
        # public keys alone may be readable
        keys.write(path, mode=0o644, only=["rs", "es", "ed"])
        p = d.run("-t", "-c", d.conf_path)
        assert p.returncode == 0, p.stderr
        # auth = jwt without keys is a configuration error
        d.write_conf(jwt_keys=None)
        p = d.run("-t", "-c", d.conf_path)
        assert p.returncode == 1 and "auth = jwt needs jwt_keys" in p.stderr, p


@test
def a_reload_rereads_jwt_keys_and_a_bad_file_keeps_the_running_keys():
    old, new = Keys(), Keys()
    with jwt_todod(old, workers=1) as d:
        path = d.conf["jwt_keys"]
        wait_started(d, old.token())
        assert d.request("GET", "/todos", headers=bearer(old.token())).status == 200
        with open(path, "w") as f:
            f.write('{"keys": [')
        d.signal(signal.SIGHUP)
        assert wait_until(lambda: "reload failed" in d.log(), 5), d.log_tail()
        assert d.request("GET", "/todos", headers=bearer(old.token())).status == 200
        pids = d.worker_pids()
        new.write(path)
        d.signal(signal.SIGHUP)
        assert wait_until(lambda: d.worker_pids() and not set(d.worker_pids()) & set(pids), 10)
        assert wait_until(lambda: d.request("GET", "/todos",
                                            headers=bearer(new.token())).status == 200, 5)
        r = d.request("GET", "/todos", headers=bearer(old.token()))
        assert_challenge(r, 401, "invalid_token")


@test
def perf_max_duration_bounds_a_paced_test_and_a_spread_test_forwards_the_callers_token():
    keys = Keys()
    pg = get_pg()
    db = pg.create_database()
    b = jwt_todod(keys, pg=pg, db=db, workers=1,
                  listen="127.0.0.3:%d" % free_port("127.0.0.3"))
    a = jwt_todod(keys, pg=pg, db=db, workers=1, perf_max_duration=60,
                  listen="127.0.0.2:%d" % free_port("127.0.0.2"), perf_nodes=b.base_url)
    with b, a:
        token = keys.token(scope="perf:run ops:read")
        wait_started(b, token)
        wait_started(a, token)
        r = a.request("POST", "/todos/performance-test", {"message_count": 6100, "rate": 100},
                      headers=bearer(token))
        assert_json_error(r, 422, "perf_max_duration")
        r = a.request("POST", "/todos/performance-test",
                      {"message_count": 2000, "nodes": "all", "batch_size": 100},
                      headers=bearer(token), timeout=60)
        assert r.status == 200, r
        rep = r.json()
        assert rep["success_count"] == 2000 and rep["error_count"] == 0, rep
        assert all(n["success_count"] > 0 for n in rep["per_node"]), rep["per_node"]
        assert int(pg.psql("SELECT count(*) FROM todos", db=db)) == 2000
        # the node saw the caller's token: it counted no refusal
        text = b.request("GET", "/metrics", headers=bearer(token)).text
        assert metric(text, "todod_auth_refusals_total", {"reason": "missing"}) == 0


class Veth:
    """A network namespace joined to this one by a veth pair: a peer that is not
    loopback. Made and removed by the test."""

    def __init__(self):
        tag = "%05d" % (os.getpid() % 100000)
        self.ns, self.here, self.there = "tdns" + tag, "tdv" + tag + "a", "tdv" + tag + "b"
        n = os.getpid() % 200 + 20
        self.host_ip, self.peer_ip = "10.%d.77.1" % n, "10.%d.77.2" % n

    def _ip(self, *args, ns=None):
        cmd = (["ip", "netns", "exec", ns] if ns else []) + ["ip", *args]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def __enter__(self):
        try:
            self._ip("netns", "add", self.ns)
        except (OSError, subprocess.CalledProcessError) as e:
            skip("cannot make a network namespace here: %s" % e)
        try:
            self._ip("link", "add", self.here, "type", "veth", "peer", "name", self.there)
            self._ip("link", "set", self.there, "netns", self.ns)
            self._ip("addr", "add", self.host_ip + "/30", "dev", self.here)
            self._ip("link", "set", self.here, "up")
            self._ip("addr", "add", self.peer_ip + "/30", "dev", self.there, ns=self.ns)
            self._ip("link", "set", self.there, "up", ns=self.ns)
            self._ip("link", "set", "lo", "up", ns=self.ns)
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc):
        subprocess.run(["ip", "link", "del", self.here], stderr=subprocess.DEVNULL)
        subprocess.run(["ip", "netns", "del", self.ns], stderr=subprocess.DEVNULL)

    def curl(self, url, *args):
        """GET url from the other namespace: (status, body)."""
        p = subprocess.run(["ip", "netns", "exec", self.ns, "curl", "-s", "-m", "5", "-o", "-",
                            "-w", "\n%{http_code}", *args, url], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True, timeout=15)
        body, _, status = p.stdout.rpartition("\n")
        return int(status or 0), body


@test
def protected_mode_refuses_a_peer_that_is_not_loopback_until_auth_or_trust_is_configured():
    with Veth() as v:
        port = free_port("0.0.0.0")
        with Todod(workers=1, listen="0.0.0.0:%d" % port) as d:
            d.start()
            outside = "http://%s:%d" % (v.host_ip, port)
            status, body = v.curl(outside + "/todos")
            assert status == 403, (status, body)
            assert json.loads(body) == {"error": "protected mode: set auth = jwt, or "
                                                 "protected_mode = off for a trusted network"}
            for path in ("/health", "/live", "/ready"):
                assert v.curl(outside + path)[0] == 200, path
            for path in ("/metrics", "/stats", "/dashboard", "/api-docs/openapi.json"):
                assert v.curl(outside + path)[0] == 403, path
            status, _ = v.curl(outside + "/todos", "-X", "POST", "-H",
                               "Content-Type: application/json", "-d", '{"title":"from outside"}')
            assert status == 403
            assert d.pg.psql("SELECT count(*) FROM todos", db=d.db) == "0"
            # loopback peers are served
            assert d.request("GET", "/todos").status == 200
            assert d.log().count("protected mode") == 1, d.log_tail()
            text = d.metrics()
            assert metric(text, "todod_auth_refusals_total", {"reason": "protected"}) == 6
            # a trusted network: protected_mode = off, after a reload
            d.write_conf(protected_mode=False)
            pids = d.worker_pids()
            d.signal(signal.SIGHUP)
            assert wait_until(lambda: d.worker_pids() and not set(d.worker_pids()) & set(pids), 10)
            assert wait_until(lambda: v.curl(outside + "/todos")[0] == 200, 5)
        # auth = jwt: the token decides, not the address
        keys = Keys()
        with jwt_todod(keys, workers=1, listen="0.0.0.0:%d" % port) as d:
            wait_started(d, keys.token())
            outside = "http://%s:%d" % (v.host_ip, port)
            assert v.curl(outside + "/todos")[0] == 401
            status, _ = v.curl(outside + "/todos", "-H", "Authorization: Bearer " + keys.token())
            assert status == 200
            assert "protected mode" not in d.log()
