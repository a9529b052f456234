"""The dashboard, GET /dashboard, in a real browser: Debian's chromium, headless,
driven by playwright-core (installed into tests/.tools from the npm registry at an
exact version; it never downloads a browser of its own) through
dashboard_browser.js, against a real todod and PostgreSQL.

It checks that the page loads with no console error and no failed request, that
its figures agree with the GET /stats answers it received (exactly) and with a
GET /stats fetched right after it drew them (exactly for what did not move,
within the page's own polling for the request total), that its rates and
percentiles are those of the histogram and counter deltas over the window it
names, and that a performance test started from its form inserts exactly those
rows and that the page draws the progress and the report. Screenshots at
1280x800 and 390x844 go to a temp directory (kept, and its path printed, with
TODOD_KEEP_SCREENSHOTS=1).
"""

import base64
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time

from lib.env import ROOT
from lib.marks import test
from lib.todod import Todod

TOOLS = os.path.join(ROOT, "tests", ".tools")
DRIVER = os.path.join(ROOT, "tests", "integration", "dashboard_browser.js")
AUTH_DRIVER = os.path.join(ROOT, "tests", "integration", "dashboard_auth_browser.js")
PW_PKG = "playwright-core"
PW_VERSION = "1.65.1"   # exact; needs Node.js >= 20

PERF_DESKTOP = {"count": 20000, "batch": 500}
# The phone run fills in workers and rate too: a daemon that spreads and paces the
# test streams progress for about a second; one that does not still inserts the rows.
PERF_PHONE = {"count": 10000, "batch": 250, "workers": "all", "rate": 10000}
# ... and then one that todod refuses (message_count over perf_max_messages)
REFUSED = {"count": 2000000, "batch": 10}


def _ensure_playwright():
    assert shutil.which("node"), "node not found (conf/dev/deps.sh test installs nodejs)"
    pkg_json = os.path.join(TOOLS, "node_modules", PW_PKG, "package.json")
    try:
        with open(pkg_json, encoding="utf-8") as f:
            if json.load(f).get("version") == PW_VERSION:
                return
    except (OSError, ValueError):
        pass
    assert shutil.which("npm"), "npm not found (conf/dev/deps.sh test installs npm)"
    os.makedirs(TOOLS, exist_ok=True)
    env = dict(os.environ, PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD="1")
    r = subprocess.run(["npm", "install", "--prefix", TOOLS, "--no-audit", "--no-fund",
                        "--save-exact", f"{PW_PKG}@{PW_VERSION}"], stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, text=True, env=env, timeout=600)
    assert r.returncode == 0, f"npm install {PW_PKG}@{PW_VERSION} failed:\n{r.stdout}"


def _num(text):
    """A number as the page prints it ("20,000", "3.6"); None for "–"."""
    text = text.strip()
    if text in ("–", "-", ""):
        return None
    return float(text.replace(",", ""))


def _quantile(q, bounds, counts):
    """Prometheus' histogram_quantile on non-cumulative counts (last bucket +Inf)."""
    total = sum(counts)
    if total <= 0:
        return None
    rank = q * total
    cum = 0
    for i, c in enumerate(counts):
        if c > 0 and cum + c >= rank:
            if i >= len(bounds):
                return bounds[-1]
            lo = 0.0 if i == 0 else bounds[i - 1]
            return lo + (bounds[i] - lo) * (rank - cum) / c
        cum += c
    return bounds[-1]


def _buckets(a, b, route=None):
    """Bucket deltas b - a of one route, or summed over every route."""
    ra, rb = a["totals"]["http_duration"]["routes"], b["totals"]["http_duration"]["routes"]
    out = None
    for name in ([route] if route else list(rb)):
        if name not in rb:
            continue
        cur = rb[name]["buckets"]
        old = ra[name]["buckets"] if name in ra else [0] * len(cur)
        d = [x - y for x, y in zip(cur, old)]
        out = d if out is None else [x + y for x, y in zip(out, d)]
    return out


def _codes(s, lo, hi):
    return sum(n for c, n in s["totals"]["requests_by_code"].items() if c.isdigit() and lo <= int(c) <= hi)


def _close(shown, want, what, decimals):
    """The page's figure `shown` (text) is `want` as printed with `decimals` places."""
    got = _num(shown)
    assert want is not None and got is not None, f"{what}: page shows {shown!r}, want {want!r}"
    tol = 0.5 * 10 ** -decimals + 1e-6 + abs(want) * 1e-3
    assert abs(got - want) <= tol, f"{what}: page shows {shown!r}, /stats gives {want:.4f}"


def _duration(s):
    """Seconds as the page writes a duration: 42s, 3m 7s, 5h 2m, 2d 4h."""
    s = max(0, int(s))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m {s % 60}s"
    if s < 86400:
        return f"{s // 3600}h {s % 3600 // 60}m"
    return f"{s // 86400}d {s % 86400 // 3600}h"


def _decimals_rate(v):
    return 0 if v >= 100 else 1


def _decimals_ms(v):
    return 0 if v >= 100 else 1 if v >= 10 else 2


def _check_clean(run, base_url):
    name = run["name"]
    # self-contained: every request of the page goes to todod, to these routes only
    for req in run["requests"]:
        method, url = req.split(" ", 1)
        if url.startswith("data:"):
            continue
        assert url.startswith(base_url + "/"), f"{name}: the page requested {req}"
        path = url[len(base_url):].split("?")[0]
        assert (method, path) in {("GET", "/dashboard"), ("GET", "/stats"),
                                  ("POST", "/todos/performance-test")}, f"{name}: the page requested {req}"
    assert run["dashboard_status"] == 200, f"{name}: GET /dashboard {run['dashboard_status']}"
    assert run["dashboard_type"].startswith("text/html"), run["dashboard_type"]
    # a policy that lets the page load nothing else and talk to this origin only
    headers = run["dashboard_headers"]
    csp = {d.split()[0]: d.split()[1:] for d in headers.get("content-security-policy", "").split("; ") if d}
    assert csp.get("default-src") == ["'none'"] and csp.get("connect-src") == ["'self'"] \
        and csp.get("frame-ancestors") == ["'none'"], f"{name}: {headers}"
    # inline code runs only when it is the page's own script or style, named by its
    # SHA-256 (no 'unsafe-inline')
    assert "'unsafe-inline'" not in headers.get("content-security-policy", ""), headers
    body = run["dashboard_body"].encode()
    for tag in ("script", "style"):
        texts = re.findall(b"<%s>(.*?)</%s>" % (tag.encode(), tag.encode()), body, re.S)
        assert len(texts) == 1, f"{name}: {len(texts)} <{tag}> elements"
        digest = base64.b64encode(hashlib.sha256(texts[0]).digest()).decode()
        assert csp.get(f"{tag}-src") == [f"'sha256-{digest}'"], f"{name}: {tag}-src {csp.get(f'{tag}-src')}"
    assert headers.get("x-content-type-options") == "nosniff", headers
    assert headers.get("cache-control") == "no-cache", headers
    # ... which the browser enforces (the page works under it: no console error above)
    assert run["csp_probe"]["violated"] == "connect-src", f"{name}: {run['csp_probe']}"
    inline = run["csp_probe"]["inline"]
    assert inline["violated"] == ["script-src-elem", "style-src-attr", "style-src-elem"], \
        f"{name}: {inline}"
    assert not inline["ran"] and inline["outline"] != "dotted" and inline["width"] != "123px", \
        f"{name}: injected inline code took effect: {inline}"
    assert not run["console_errors"], f"{name}: console errors {run['console_errors']}"
    assert not run["page_errors"], f"{name}: page errors {run['page_errors']}"
    assert not run["failed_requests"], f"{name}: failed requests {run['failed_requests']}"
    assert not run["bad_responses"], f"{name}: answers >= 400 to the page {run['bad_responses']}"
    for dom in (run.get("dom"), run.get("perf_dom")):
        if dom:
            assert dom["scroll_width"] <= dom["client_width"], \
                f"{name}: the page is wider ({dom['scroll_width']}px) than the viewport " \
                f"({dom['client_width']}px)"
            assert dom["text"]["conn-text"].startswith("live"), dom["text"]["conn-text"]


def _check_live(d, run):
    """The figures of one sample against the /stats bodies the page got and a /stats
    fetched right after."""
    dom, bodies, fetched = run["dom"], run["stats_bodies"], run["fetched"]
    k = dom["samples"]
    assert len(bodies) >= k >= 4, f"page sample {k}, {len(bodies)} /stats answers seen"
    body = bodies[k - 1]
    T, text = body["totals"], dom["text"]

    # what the page shows is the k-th answer it got, exactly
    assert _num(text["t-requests"]) == T["requests"], (text["t-requests"], T["requests"])
    shown_routes = {r["key"]: r["cells"] for r in dom["routes"]}
    want_routes = {r: n for r, n in T["requests_by_route"].items() if n > 0}
    assert set(shown_routes) == set(want_routes), (sorted(shown_routes), sorted(want_routes))
    for r, n in want_routes.items():
        assert _num(shown_routes[r][2]) == n, f"route {r}: page {shown_routes[r]}, /stats {n}"
    want_codes = {c: n for c, n in T["requests_by_code"].items() if n > 0}
    assert {c: _num(v) for c, v in dom["codes"].items()} == want_codes, (dom["codes"], want_codes)
    assert _num(text["t-4xx-total"]) == _codes(body, 400, 499)
    assert _num(text["t-5xx-total"]) == _codes(body, 500, 599)

    # the workers: the page, its /stats answer, a fresh /stats and the processes
    pids = sorted(int(r["key"]) for r in dom["workers"])
    assert pids == sorted(w["pid"] for w in body["workers"]) == \
        sorted(w["pid"] for w in fetched["workers"]) == d.worker_pids(), \
        (pids, body["workers"], fetched["workers"], d.worker_pids())
    # uptimes on the server's clock: the instance's in the header, each worker's
    assert text["build"] == "v%s · up %s" % (body["version"], _duration(body["now"] - body["started_at"])), \
        (text["build"], body["version"], body["now"], body["started_at"])
    for r in dom["workers"]:
        w = next(w for w in body["workers"] if w["pid"] == int(r["key"]))
        assert r["cells"][2] == _duration(body["now"] - w["started_at"]), (r["cells"], w, body["now"])
    assert _num(text["t-workers"]) == T["workers"] == fetched["totals"]["workers"] == 2
    assert _num(text["t-restarts"]) == fetched["totals"]["worker_restarts"] == 0
    up = sum(1 for w in fetched["workers"] if w["db_connected"])
    assert _num(text["t-db-up"]) == up == 2 and _num(text["t-db-of"]) == 2, (text, fetched["workers"])
    assert _num(text["t-perf-done"]) == fetched["totals"]["perf_tests"]
    assert _num(text["t-perf-running"]) == fetched["totals"].get("perf_tests_running", 0)

    # a /stats taken right after the page drew sample k: only the page's own polling
    # (GET /stats, counted as it is answered) ran in between; what the traffic
    # touched did not move
    F = fetched["totals"]
    extra = run["samples_after_fetch"] - k
    diff = F["requests"] - T["requests"]
    assert 1 <= diff <= 2 + extra, \
        f"/stats says {F['requests']} requests, the page {T['requests']} (its own polls since: {extra})"
    traffic = run["traffic"]
    assert F["requests_by_route"]["/todos/{id}"] == _num(shown_routes["/todos/{id}"][2]) == \
        traffic["not_found"] + traffic["bad_id"]
    assert F["requests_by_route"]["/todos"] == _num(shown_routes["/todos"][2]) == traffic["created"]
    assert F["requests_by_code"]["404"] == _num(dom["codes"]["404"]) == traffic["not_found"]
    assert F["requests_by_code"]["400"] == _num(dom["codes"]["400"]) == traffic["bad_id"]
    assert F["requests_by_code"]["201"] == _num(dom["codes"]["201"]) == traffic["created"]

    # rates and percentiles over the window the page names: from its oldest kept
    # sample (at most 10 back) to sample k
    base = bodies[max(1, k - 10) - 1]
    win = dom["window_ms"] / 1000.0
    assert 0.8 * (k - max(1, k - 10)) <= win <= 3 * (k - max(1, k - 10)), \
        f"window {win}s for {k - max(1, k - 10)} intervals"
    moved = T["requests_by_route"]["/todos/{id}"] - base["totals"]["requests_by_route"].get("/todos/{id}", 0)
    assert moved == traffic["not_found"] + traffic["bad_id"], \
        f"the traffic is not inside the page's window ({moved} requests of /todos/{{id}} in it)"
    want = (T["requests"] - base["totals"]["requests"]) / win
    _close(text["t-rps"], want, "requests/s", _decimals_rate(want))
    want = moved / win
    _close(shown_routes["/todos/{id}"][1], want, "/todos/{id} req/s", _decimals_rate(want))
    want = (_codes(body, 400, 499) - _codes(base, 400, 499)) / win
    _close(text["t-4xx"], want, "4xx/s", _decimals_rate(want))
    assert _num(text["t-5xx"]) == 0.0
    bounds = T["http_duration"]["bounds_ms"]
    for q, tid in ((0.5, "t-p50"), (0.99, "t-p99")):
        want = _quantile(q, bounds, _buckets(base, body))
        _close(text[tid], want, f"latency {tid}", _decimals_ms(want))
    route = "/todos/{id}"
    d_route = _buckets(base, body, route)
    for q, col in ((0.5, 3), (0.99, 4)):
        want = _quantile(q, bounds, d_route)
        _close(shown_routes[route][col], want, f"{route} p{int(q * 100)}", _decimals_ms(want))
    n = body["totals"]["http_duration"]["routes"][route]["count"] - \
        base["totals"]["http_duration"]["routes"].get(route, {"count": 0})["count"]
    s = body["totals"]["http_duration"]["routes"][route]["sum_ms"] - \
        base["totals"]["http_duration"]["routes"].get(route, {"sum_ms": 0})["sum_ms"]
    _close(shown_routes[route][5], s / n, f"{route} mean", _decimals_ms(s / n))
    # per worker: requests/s over the same window
    old = {w["pid"]: w for w in base["workers"]}
    for w in body["workers"]:
        row = next(r for r in dom["workers"] if r["key"] == str(w["pid"]))
        want = (w["requests"] - old[w["pid"]]["requests"]) / win
        _close(row["cells"][3], want, f"worker {w['pid']} req/s", _decimals_rate(want))
    # the chart legends name what moved
    assert any(x.startswith("/todos/{id}") for x in dom["legends"]["rps"]), dom["legends"]
    assert len(dom["legends"]["lat"]) == 2 and len(dom["legends"]["err"]) == 2, dom["legends"]


def _parse_perf_answer(resp):
    """(progress lines, report) from the answer the page got."""
    ctype = (resp.get("content_type") or "").split(";")[0].strip()
    body = resp["body"]
    if ctype == "application/x-ndjson":
        lines = [json.loads(line) for line in body.splitlines() if line.strip()]
        assert lines and lines[-1].get("type") == "report", body[-500:]
        progress = [x for x in lines[:-1] if x.get("type") == "progress"]
        return progress, lines[-1]
    assert ctype == "application/json", resp
    return [], json.loads(body)


def _check_perf(run, want):
    req = run["perf_request"]
    assert req is not None, "the page sent no POST /todos/performance-test"
    sent = json.loads(req["body"])
    expect = {"message_count": want["count"], "batch_size": want["batch"]}
    if want.get("workers") is not None:
        expect["workers"] = want["workers"]
    if want.get("rate") is not None:
        expect["rate"] = want["rate"]
    assert {k: v for k, v in sent.items() if k != "progress_interval_ms"} == expect, sent
    assert 100 <= sent.get("progress_interval_ms", 1000) <= 60000, sent
    assert req["headers"].get("accept") == "application/x-ndjson", req["headers"]
    resp = run["perf_response"]
    assert resp and resp["status"] == 200, resp
    progress, report = _parse_perf_answer(resp)
    assert report["success_count"] == want["count"] and report["error_count"] == 0, report

    dom = run["perf_dom"]
    text = dom["text"]
    assert dom["pt_state"] == "done", (dom["pt_state"], text["pt-status"])
    assert text["pt-r-success_count"] == "%s of %s" % (f"{want['count']:,}", f"{want['count']:,}"), text
    assert _num(text["pt-r-error_count"].split()[0]) == 0, text
    assert _num(text["pt-r-duration_ms"].split()[0]) == report["duration_ms"], text
    assert abs(_num(text["pt-r-messages_per_second"].split()[0]) - report["messages_per_second"]) <= 0.5, text
    assert text["pt-r-batches"] == "%s × %s" % (f"{report['batches']:,}", f"{want['batch']:,}"), text
    if "worker_pid" in report:
        assert text["pt-r-worker_pid"] == str(report["worker_pid"]), text
    assert text["pt-status"].startswith("Finished: %s todos" % f"{want['count']:,}"), text["pt-status"]
    assert dom["pt_bar"] == "100%", dom["pt_bar"]
    # every streamed progress line is a point of the progress chart
    assert dom["pt_points"] == len(progress), (dom["pt_points"], len(progress))
    if resp["content_type"].startswith("application/x-ndjson") and want.get("rate"):
        assert progress, "a paced test of about a second streamed no progress line"
    # the tiles count the finished test: the sample the page shows
    k = dom["samples"]
    T = run["stats_bodies"][k - 1]["totals"]
    assert _num(text["t-perf-done"]) == T["perf_tests"] >= 1, (text["t-perf-done"], T["perf_tests"])
    assert _num(text["t-perf-todos"].split()[0]) == T["perf_todos_success"], text["t-perf-todos"]
    assert T["perf_todos_success"] == run["perf_fetched"]["totals"]["perf_todos_success"]
    return report, progress


def _check_refused(run):
    ref = run["refused"]
    assert json.loads(ref["request"]["body"])["message_count"] == REFUSED["count"], ref["request"]
    assert ref["dom"]["pt_state"] == "error", ref["dom"]["pt_state"]
    status = ref["dom"]["text"]["pt-status"]
    assert status.startswith("Refused (422): ") and "message_count" in status, status
    assert ref["dom"]["text"]["pt-r-success_count"] is None, "a report is still shown"
    assert len(ref["bad_responses"]) == 1 and ref["bad_responses"][0].startswith("422 POST "), ref
    assert all("422" in m for m in ref["console_errors"]), ref["console_errors"]


def _perf_rows(d):
    return int(d.pg.psql("SELECT count(*) FROM todos WHERE title LIKE 'Performance Test Todo #%'",
                         db=d.db))


def _run_driver(cfg, tmp, timeout=90):
    """Run dashboard_browser.js in its own process group (node and the browser it
    starts), with TMPDIR in the test's directory (the browser profile goes there);
    on time-out the group is killed."""
    p = subprocess.Popen(["node", DRIVER, json.dumps(cfg)], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, env=dict(os.environ, TMPDIR=tmp),
                         start_new_session=True)
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        out, err = p.communicate()
        raise AssertionError(f"dashboard_browser.js still running after {timeout}s:\n{err[-3000:]}")
    # (on its own exit, even by an error, playwright-core closes the browser it started)
    return p.returncode, out, err


@test
def dashboard_in_a_browser():
    chromium = shutil.which("chromium")
    assert chromium, "chromium not found (conf/dev/deps.sh test installs it)"
    _ensure_playwright()
    shots = tempfile.mkdtemp(prefix="todod-dashboard-")
    keep = os.environ.get("TODOD_KEEP_SCREENSHOTS", "") not in ("", "0")
    try:
        with Todod(workers=2) as d:
            d.start()
            assert _perf_rows(d) == 0
            cfg = {"url": d.base_url, "tools": TOOLS, "chromium": chromium, "outdir": shots, "runs": [
                {"name": "desktop-1280x800", "viewport": [1280, 800], "traffic": True, "perf": PERF_DESKTOP},
                {"name": "phone-390x844", "viewport": [390, 844], "mobile": True, "perf": PERF_PHONE,
                 "refuse": REFUSED},
            ]}
            rc, out, err = _run_driver(cfg, shots)
            assert rc == 0, f"dashboard_browser.js failed ({rc}):\n{err[-3000:]}"
            result = json.loads(out.strip().splitlines()[-1])
            desktop, phone = result["runs"]

            _check_clean(desktop, d.base_url)
            _check_live(d, desktop)
            _check_perf(desktop, PERF_DESKTOP)
            _check_clean(phone, d.base_url)
            _check_perf(phone, PERF_PHONE)
            _check_refused(phone)
            # exactly the rows of the two tests from the form, plus the 12 POST /todos
            assert _perf_rows(d) == PERF_DESKTOP["count"] + PERF_PHONE["count"]
            assert int(d.pg.psql("SELECT count(*) FROM todos", db=d.db)) == \
                PERF_DESKTOP["count"] + PERF_PHONE["count"] + desktop["traffic"]["created"]
            for run in (desktop, phone):
                assert run["screenshots"], run["name"]
                for p in run["screenshots"]:
                    assert os.path.getsize(p) > 10000, f"screenshot {p} is nearly empty"
    except BaseException:
        keep = True
        raise
    finally:
        if keep:
            print(f"    screenshots kept in {shots}")
        else:
            shutil.rmtree(shots, ignore_errors=True)


@test
def under_auth_jwt_the_dashboard_asks_for_a_token_keeps_it_for_the_tab_and_asks_again_on_401():
    """auth = jwt: the page (no data in it) loads without a token and asks for one;
    its GET /stats carry the token entered, which sessionStorage keeps for that tab
    only; when the token goes bad (here: an expired one), the 401 brings the
    question back."""
    import jwt  # Debian's python3-jwt
    chromium = shutil.which("chromium")
    assert chromium, "chromium not found (conf/dev/deps.sh test installs it)"
    _ensure_playwright()
    secret = os.urandom(32)
    tmp = tempfile.mkdtemp(prefix="todod-dashboard-auth-")
    try:
        with Todod(workers=1, auth="jwt", jwt_leeway=0) as d:
            keys = os.path.join(d.dir, "jwks.json")
            with open(keys, "w") as f:
                json.dump({"keys": [{"kty": "oct", "kid": "k", "alg": "HS256",
                                     "k": base64.urlsafe_b64encode(secret).rstrip(b"=").decode()}]},
                          f)
            os.chmod(keys, 0o600)
            d.write_conf(jwt_keys=keys)
            d.start(wait="http")
            now = int(time.time())
            token = jwt.encode({"sub": "ops", "scope": "ops:read", "iat": now, "exp": now + 600},
                               secret, algorithm="HS256", headers={"kid": "k"})
            expired = jwt.encode({"sub": "ops", "scope": "ops:read", "exp": now - 60},
                                 secret, algorithm="HS256", headers={"kid": "k"})
            assert d.request("GET", "/stats").status == 401
            cfg = {"url": d.base_url, "tools": TOOLS, "chromium": chromium, "token": token,
                   "bad_token": expired}
            p = subprocess.Popen(["node", AUTH_DRIVER, json.dumps(cfg)], stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True,
                                 env=dict(os.environ, TMPDIR=tmp), start_new_session=True)
            try:
                out, err = p.communicate(timeout=90)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                out, err = p.communicate()
            assert p.returncode == 0, f"dashboard_auth_browser.js failed:\n{err[-3000:]}"
            seen = json.loads(out.strip().splitlines()[-1])
            assert seen["page_status"] == 200 and not seen["page_errors"], seen
            assert seen["before"]["form_hidden"] is False and seen["before"]["samples"] == 0, seen
            assert seen["with_token"]["form_hidden"] is True, seen
            assert seen["with_token"]["stored"] == token, seen
            assert seen["other_tab"]["stored"] is None and not seen["other_tab"]["form_hidden"]
            assert seen["after_refusal"]["stored"] is None, seen
            assert seen["after_refusal"]["note"] == "The token was refused.", seen
            assert "Bearer " + expired in [r["authorization"] for r in seen["stats_requests"]]
            sent = [r["authorization"] for r in seen["stats_requests"]]
            assert "Bearer " + token in sent, sent
            text = d.request("GET", "/metrics", headers={"Authorization": "Bearer " + jwt.encode(
                {"sub": "t", "scope": "ops:read", "exp": int(time.time()) + 60}, secret,
                algorithm="HS256", headers={"kid": "k"})}).text
            assert 'todod_auth_refusals_total{reason="expired"}' in text
            assert not re.search(r'todod_auth_refusals_total\{reason="expired"\} 0\b', text), text
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
