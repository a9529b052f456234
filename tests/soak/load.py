"""The soak's client load, in threads, every choice drawn from the seed.

Each thread draws the parameters of its k-th operation from its own generator,
random.Random("SEED:THREAD:k"), so what a thread asks for does not depend on
the answers it got before (only which of its todos it can still name does).

- owners: each creates, updates, reads and deletes todos only it writes, so
  its history is sequential and checkable exactly; some of their POSTs trickle
  in slowly, a few too slowly (cut off by request_timeout);
- hot writers: update and read a few rows everyone shares (weaker checks);
- a lister: pages of /todos and /todos/done/{done};
- a malformer: requests that must be refused (bad JSON, bad framing, bad
  values), each carrying a marker title that must never reach the table;
- the performance-test runner: one test at a time, spread over workers and
  nodes or not, paced or not, streamed or not; the rows of each counted in the
  table before and after, once nothing of any test runs anywhere;
- bursts: now and then, 16 to 32 clients at once, each POST, GET, DELETE, GET
  of its own todos back to back on one instance.
Every request goes to an instance drawn from the seed, on the client's
keep-alive connection or on a fresh one."""

import json
import random
import sys
import threading
import time
import uuid

from checker import digest_list
from client import Client, raw_exchange

PERF = "/todos/performance-test"
INSTANCES = ("a", "b", "c")

# Characters titles are drawn from: ASCII, JSON's escapes, and UTF-8 of 2, 3
# and 4 bytes (one code point each; titles are at most 255 code points).
ALPHABET = ("abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
            "  .,;:!?-_/'\"\\\t" "éßøÆ" "中文字" "€—…" "😀🚀")


def rng_for(seed, thread, k):
    return random.Random("%s:%s:%d" % (seed, thread, k))


def make_title(rng, prefix):
    n = rng.choice([0, 3, 8, 20, 40]) if rng.random() < 0.9 else rng.randint(100, 255)
    tail = "".join(rng.choice(ALPHABET) for _ in range(n))
    return sys.intern((prefix + " " + tail)[:255])   # shared with the answers that show it


class Worker(threading.Thread):
    """A load thread: step(rng) until the stop flag; think time between steps."""

    think = (0.01, 0.06)

    def __init__(self, name, seed, recorder, instances, stop, timeout):
        super().__init__(name=name, daemon=True)
        self.seed = seed
        self.client = Client(name, recorder, instances, timeout)
        self.rec = recorder
        self.instances = instances
        self.stop_flag = stop
        self.k = 0
        self.failure = None

    def run(self):
        try:
            while not self.stop_flag.is_set():
                rng = rng_for(self.seed, self.name, self.k)
                self.k += 1
                self.step(rng)
                self.stop_flag.wait(rng.uniform(*self.think))
        except Exception as e:  # noqa: BLE001 - the soak reports it
            import traceback
            self.failure = "%s: %s" % (self.name, traceback.format_exc())
            _ = e
        finally:
            self.client.close()

    def pick(self, rng):
        return rng.choice(INSTANCES), rng.random() < 0.3

    def step(self, rng):
        raise NotImplementedError


# --------------------------------------------------------------------------- owners

class Owner(Worker):
    """Writes only its own todos. live: ids it believes exist."""

    def __init__(self, *a, trickle=0.0, **kw):
        super().__init__(*a, **kw)
        self.live = []
        self.seq = 0
        self.trickle = trickle

    def step(self, rng):
        inst, fresh = self.pick(rng)
        op = rng.choices(["post", "put", "get", "delete", "get_absent"],
                         weights=[30, 25, 30, 12, 3])[0]
        if not self.live and op in ("put", "get", "delete"):
            op = "post"
        if len(self.live) >= 25 and op == "post":
            op = "delete"
        if op == "post":
            self.seq += 1
            title = make_title(rng, "%s.%d" % (self.name, self.seq))
            body = {"title": title}
            if rng.random() < 0.4:
                body["done"] = rng.random() < 0.5
            if rng.random() < self.trickle:
                self.post_trickled(rng, inst, body, cut=rng.random() < 0.08)
                return
            r = self.client.call(inst, "POST", "/todos", body, kind="owner", fresh=fresh,
                                 info={"title": title})
            self._learn(r)
        elif op == "put":
            tid = rng.choice(self.live)
            body = {}
            if rng.random() < 0.65:
                self.seq += 1
                body["title"] = make_title(rng, "%s.%d" % (self.name, self.seq))
            if rng.random() < 0.6 or not body and rng.random() < 0.9:
                body["done"] = rng.random() < 0.5
            r = self.client.call(inst, "PUT", "/todos/" + tid, body, kind="owner", fresh=fresh,
                                 info={"todo": tid})
            if r.status == 404:
                self.live.remove(tid)
        elif op == "get":
            tid = rng.choice(self.live)
            r = self.client.call(inst, "GET", "/todos/" + tid, kind="owner", fresh=fresh,
                                 info={"todo": tid})
            if r.status == 404:
                self.live.remove(tid)
        elif op == "delete":
            tid = rng.choice(self.live)
            r = self.client.call(inst, "DELETE", "/todos/" + tid, kind="owner", fresh=fresh,
                                 info={"todo": tid})
            if r.status in (204, 404):
                self.live.remove(tid)
        else:
            tid = str(uuid.UUID(int=rng.getrandbits(128), version=4))
            self.client.call(inst, "GET", "/todos/" + tid, kind="owner", fresh=fresh,
                             info={"absent": tid})

    def _learn(self, r):
        """Adopt the todo a POST created, when the answer is the todo sent."""
        a = r.ans
        if (r.status == 201 and isinstance(a, dict) and isinstance(a.get("id"), str) and
                a.get("title") == r.body["title"] and a["id"] not in self.live):
            r.info["todo"] = a["id"]
            self.live.append(a["id"])

    def post_trickled(self, rng, inst, body, cut):
        """A POST sent in pieces over about a second (the head and the body
        alike), or, cut, over longer than request_timeout."""
        if cut:   # a title that marks it: it must never be stored
            body = dict(body, title="soak-cut %s.%d" % (self.name, self.seq))
        data = json.dumps(body, ensure_ascii=False).encode("utf-8")
        raw = (b"POST /todos HTTP/1.1\r\nHost: soak\r\nContent-Type: application/json\r\n"
               b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(data)) + data
        cuts = sorted(rng.sample(range(1, len(raw)), min(len(raw) - 1, rng.randint(3, 12))))
        total = rng.uniform(4.5, 6.0) if cut else rng.uniform(0.3, 1.2)
        pieces = []
        prev = 0
        for i, c in enumerate(cuts + [len(raw)]):
            pieces.append((raw[prev:c], 0 if i == 0 else total / len(cuts)))
            prev = c
        host, port = self.instances[inst]
        r = self.rec.new(self.name, "slow", inst, "POST", "/todos", body)
        r.info["title"] = body["title"]
        r.info["cut"] = cut
        r.t0 = self.rec.now()
        sent = {}
        answers, closed, err = raw_exchange(host, port, None, timeout=8, pieces=pieces, sent=sent)
        r.t1 = self.rec.now()
        if "first" in sent and ("last" in sent or "cut" in sent):
            # how long the request took to send, as the server saw it (a loaded
            # machine may stretch the trickle past request_timeout); "unsent":
            # the server closed before the last byte (it cannot have run it)
            r.info["sending"] = sent.get("last", sent.get("cut")) - sent["first"]
            r.info["unsent"] = "last" not in sent
        if answers:
            r.status, r.hdrs, r.raw = answers[0]
            try:
                r.ans = json.loads(r.raw.decode("utf-8"))
            except ValueError:
                r.ans = None
                r.info["bad_json"] = True
        else:
            r.err = err or ("closed" if closed else "timeout")
        if not cut:
            self._learn(r)


class BurstClient(Owner):
    """One of a burst's clients: POST, GET, DELETE, GET of its own todos, back
    to back, on one instance, on its keep-alive connection."""

    think = (0.0, 0.0)

    def __init__(self, *a, inst, **kw):
        super().__init__(*a, **kw)
        self.inst = inst
        self.last = None

    def step(self, rng):
        phase = (self.k - 1) % 4
        if phase == 0:
            self.seq += 1
            title = make_title(rng, "%s.%d" % (self.name, self.seq))
            r = self.client.call(self.inst, "POST", "/todos", {"title": title}, kind="owner",
                                 info={"title": title})
            self._learn(r)
            self.last = r.info.get("todo")
            if self.last is None:
                self.k += 3   # nothing to read: the next POST
        elif phase in (1, 3):
            r = self.client.call(self.inst, "GET", "/todos/" + self.last, kind="owner",
                                 info={"todo": self.last})
        else:
            r = self.client.call(self.inst, "DELETE", "/todos/" + self.last, kind="owner",
                                 info={"todo": self.last})
        if r.err is not None or (r.status or 0) >= 500:
            self.stop_flag.wait(0.05)   # the instance is down or failing: no busy loop


class Bursts(threading.Thread):
    """Every 15 to 45 s, a burst: 16 to 32 clients at once for 2 to 4 s on one
    instance (the one behind PgBouncer one time in two), as many concurrent
    pipelines as PgBouncer's pool must share."""

    def __init__(self, seed, recorder, instances, stop, timeout):
        super().__init__(name="bursts", daemon=True)
        self.seed, self.rec, self.instances = seed, recorder, instances
        self.stop_flag, self.timeout = stop, timeout
        self.failure = None
        self.count = 0

    def run(self):
        k = 0
        while True:
            rng = rng_for(self.seed, "bursts", k)
            k += 1
            if self.stop_flag.wait(rng.uniform(15, 45)):
                return
            inst = rng.choice(["c", "c", "a", "b"])
            end = threading.Event()
            clients = [BurstClient("burst%d.%d" % (k, j), self.seed, self.rec, self.instances,
                                   end, self.timeout, inst=inst)
                       for j in range(rng.randint(16, 32))]
            for c in clients:
                c.start()
            self.stop_flag.wait(rng.uniform(2, 4))
            end.set()
            for c in clients:
                c.join(self.timeout + 5)
                if c.failure and not self.failure:
                    self.failure = c.failure
            self.count += 1


# --------------------------------------------------------------------------- shared rows

class HotWriter(Worker):
    """Updates and reads the shared rows."""

    def __init__(self, *a, hot, **kw):
        super().__init__(*a, **kw)
        self.hot = hot
        self.seq = 0

    def step(self, rng):
        inst, fresh = self.pick(rng)
        tid = rng.choice(self.hot)
        if rng.random() < 0.55:
            body = {}
            if rng.random() < 0.8:
                self.seq += 1
                body["title"] = make_title(rng, "%s.%d" % (self.name, self.seq))
            if rng.random() < 0.5 or not body:
                body["done"] = rng.random() < 0.5
            self.client.call(inst, "PUT", "/todos/" + tid, body, kind="hot", fresh=fresh,
                             info={"todo": tid})
        else:
            self.client.call(inst, "GET", "/todos/" + tid, kind="hot", fresh=fresh,
                             info={"todo": tid})


# --------------------------------------------------------------------------- lists

class Lister(Worker):
    think = (0.05, 0.2)

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.total = 0

    def step(self, rng):
        inst, fresh = self.pick(rng)
        limit = rng.choice([1, 5, 10, 50, 100])
        if rng.random() < 0.6:
            pages = max(1, (self.total + limit - 1) // limit)
            page = rng.choice([1, 1, 2, 3, pages, max(1, pages - 1), rng.randint(1, pages)])
            r = self.client.call(inst, "GET", "/todos?page=%d&limit=%d" % (page, limit),
                                 kind="list", fresh=fresh)
            if r.status == 200 and isinstance(r.ans, dict):
                p = r.ans.get("pagination")
                self.total = p.get("total", self.total) if isinstance(p, dict) else self.total
                self.total = self.total if isinstance(self.total, int) else 0
            digest_list(r)
        else:
            done = rng.choice(["true", "false"])
            limit = rng.choice([1, 10, 100, 500])
            page = rng.choice([1, 1, 2, 5])
            digest_list(self.client.call(inst, "GET", "/todos/done/%s?page=%d&limit=%d"
                                         % (done, page, limit), kind="list", fresh=fresh))


def deep_reads(recorder, instances):
    """For the deep-page fault: readers concurrent GETs of a deep page."""
    def run(inst, readers, page, limit):
        out = []
        threads = []
        for k in range(readers):
            c = Client("deep", recorder, instances, 15)

            def go(c=c):
                r = c.call(inst, "GET", "/todos?page=%d&limit=%d" % (page, limit),
                           kind="deep", fresh=True)
                digest_list(r)
                out.append(r)
            threads.append(threading.Thread(target=go, daemon=True))
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        return out
    return run


# --------------------------------------------------------------------------- malformed

def _post(headers, body):
    return (b"POST /todos HTTP/1.1\r\nHost: soak\r\nContent-Type: application/json\r\n" +
            headers + b"\r\n" + body)


def malformed_cases(marker):
    """[(name, bytes, statuses allowed)]; marker is a title that must never be
    stored (it appears in every body that could create a todo)."""
    m = marker.encode()
    ok = b'{"title":"' + m + b'"}'
    cl = b"Content-Length: %d\r\nConnection: close\r\n"
    smuggled = (b"POST /todos HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b"Content-Length: %d\r\n\r\n" % len(ok) + ok)

    def json_case(body):
        return _post(cl % len(body), body)
    return [
        ("trailing comma", json_case(b'{"title":"' + m + b'",}'), {400}),
        ("NaN", json_case(b'{"title":"' + m + b'","done":NaN}'), {400}),
        ("duplicate name", json_case(b'{"title":"' + m + b'","title":"' + m + b'"}'), {400}),
        ("after the value", json_case(ok + b" x"), {400}),
        ("byte-order mark", json_case(b"\xef\xbb\xbf" + ok), {400}),
        ("invalid UTF-8", json_case(b'{"title":"' + m + b'\xff"}'), {400}),
        ("lone surrogate", json_case(b'{"title":"' + m + b'\\ud800"}'), {400}),
        ("comment", json_case(b'/* c */' + ok), {400}),
        ("single quotes", json_case(b"{'title':'" + m + b"'}"), {400}),
        ("deep nesting", json_case(b'{"title":"' + m + b'","x":' + b"[" * 40 + b"]" * 40 + b"}"),
         {400}),
        ("done not a boolean", json_case(b'{"title":"' + m + b'","done":"yes"}'), {422}),
        ("title too long", json_case(b'{"title":"' + m + b"x" * 256 + b'"}'), {422}),
        ("NUL in title", json_case(b'{"title":"' + m + b'\\u0000"}'), {422}),
        ("title a number", json_case(b'{"title":5,"x":"' + m + b'"}'), {422}),
        ("no title", json_case(b'{"done":true,"x":"' + m + b'"}'), {422}),
        ("body too large", json_case(b'{"title":"' + m + b'","x":"' + b"y" * 20000 + b'"}'),
         {413}),
        ("no Content-Type", b"POST /todos HTTP/1.1\r\nHost: soak\r\n" + cl % len(ok) + b"\r\n" + ok,
         {415}),
        ("text/plain", b"POST /todos HTTP/1.1\r\nHost: soak\r\nContent-Type: text/plain\r\n" +
         cl % len(ok) + b"\r\n" + ok, {415}),
        ("Content-Length and chunked",
         _post(b"Content-Length: %d\r\nTransfer-Encoding: chunked\r\n" % len(ok),
               b"%x\r\n" % len(ok) + ok + b"\r\n0\r\n\r\n"), {400}),
        ("two Content-Lengths", _post(b"Content-Length: %d\r\nContent-Length: %d\r\n"
                                      % (len(ok), len(ok) + len(smuggled)), ok + smuggled), {400}),
        ("space before colon", _post(b"Content-Length : %d\r\n" % (len(ok) + len(smuggled)),
                                     ok + smuggled), {400}),
        ("chunk size 0x", _post(b"Transfer-Encoding: chunked\r\n",
                                b"0x%x\r\n" % len(ok) + ok + b"\r\n0\r\n\r\n" + smuggled), {400}),
        ("chunk size +", _post(b"Transfer-Encoding: chunked\r\n",
                               b"+%x\r\n" % len(ok) + ok + b"\r\n0\r\n\r\n" + smuggled), {400}),
        ("no CRLF after chunk", _post(b"Transfer-Encoding: chunked\r\n",
                                      b"%x\r\n" % len(ok) + ok + b"0\r\n\r\n" + smuggled), {400}),
        ("gzip coding", _post(b"Transfer-Encoding: gzip\r\n", ok + smuggled), {501}),
        ("chunked, (comma)", _post(b"Transfer-Encoding: chunked,\r\n",
                                   b"%x\r\n" % len(ok) + ok + b"\r\n0\r\n\r\n" + smuggled), {400}),
        ("obs-fold", b"POST /todos HTTP/1.1\r\nHost: soak\r\nX: a\r\n b\r\n" +
         b"Content-Type: application/json\r\n" + cl % len(ok) + b"\r\n" + ok, {400}),
        ("no Host", b"POST /todos HTTP/1.1\r\nContent-Type: application/json\r\n" +
         cl % len(ok) + b"\r\n" + ok, {400}),
        ("HTTP/1.9", b"POST /todos HTTP/1.9\r\nHost: soak\r\nContent-Type: application/json\r\n" +
         cl % len(ok) + b"\r\n" + ok, {505}),
        ("bad id", b"GET /todos/not-a-uuid HTTP/1.1\r\nHost: soak\r\nConnection: close\r\n\r\n",
         {400}),
        ("bad page", b"GET /todos?page=abc HTTP/1.1\r\nHost: soak\r\nConnection: close\r\n\r\n",
         {400}),
        ("page 0", b"GET /todos?page=0 HTTP/1.1\r\nHost: soak\r\nConnection: close\r\n\r\n",
         {400}),
        ("bad done", b"GET /todos/done/maybe HTTP/1.1\r\nHost: soak\r\nConnection: close\r\n\r\n",
         {400}),
        ("perf: batch 0", _perf(b'{"message_count":10,"batch_size":0}'), {422}),
        ("perf: nodes a URL", _perf(b'{"message_count":10,"nodes":"http://127.0.0.1:9"}'), {422}),
        ("perf: bad JSON", _perf(b'{"message_count":10,}'), {400}),
    ]


def _perf(body):
    return (b"POST /todos/performance-test HTTP/1.1\r\nHost: soak\r\n"
            b"Content-Type: application/json\r\nContent-Length: %d\r\nConnection: close\r\n\r\n"
            % len(body) + body)


class Malformer(Worker):
    think = (0.1, 0.4)

    def __init__(self, *a, hot, **kw):
        super().__init__(*a, **kw)
        self.hot = hot
        self.seq = 0

    def step(self, rng):
        inst = rng.choice(INSTANCES)
        self.seq += 1
        marker = "soak-bad %s.%d" % (self.name, self.seq)
        cases = malformed_cases(marker)
        if rng.random() < 0.15:
            # a PUT on a shared row with a malformed body: the row is unchanged
            tid = rng.choice(self.hot)
            body = b'{"title":"' + marker.encode() + b'","done":tru}'
            data = (b"PUT /todos/%s HTTP/1.1\r\nHost: soak\r\nContent-Type: application/json\r\n"
                    b"Content-Length: %d\r\nConnection: close\r\n\r\n" % (tid.encode(), len(body))
                    + body)
            name, expect = "PUT with bad JSON", {400}
        else:
            name, data, expect = rng.choice(cases)
        host, port = self.instances[inst]
        first = data.split(b"\r\n", 1)[0].decode("latin-1").split(" ")
        r = self.rec.new(self.name, "bad", inst, first[0], first[1] if len(first) > 1 else "?",
                         data)
        r.info.update({"case": name, "expect": expect, "marker": marker})
        r.t0 = self.rec.now()
        answers, closed, err = raw_exchange(host, port, data, timeout=6)
        r.t1 = self.rec.now()
        if answers:
            r.status, r.hdrs, r.raw = answers[0]
            try:
                r.ans = json.loads(r.raw.decode("utf-8"))
            except ValueError:
                r.ans = None
                r.info["bad_json"] = True
            r.info["answers"] = len(answers)
            r.info["closed"] = closed
        else:
            r.err = err or ("closed" if closed else "timeout")


# --------------------------------------------------------------------------- performance tests

class PerfRun:
    def __init__(self, rec, params, before):
        self.rec = rec
        self.params = params
        self.before = before
        self.after = None
        self.settled = False
        self.garbage = None      # the garbage-peer Fault this test carried
        self.peer_share = None   # what the fake peer received


class PerfRunner(Worker):
    """One performance test at a time; the table's performance-test rows are
    counted before and after each, when nothing of any test runs anywhere."""

    think = (0.2, 1.5)

    def __init__(self, *a, cluster, injector, ops, **kw):
        super().__init__(*a, **kw)
        self.c = cluster
        self.inj = injector
        self.ops = ops
        self.runs = []
        self.quiet_failures = []   # (time, what still ran)
        self.stuck = {}            # instance -> shares that never end (seen running 60 s)
        self.running = {}
        self.current = None        # the instance coordinating the test under way

    def running_anywhere(self):
        """Performance-test shares running on the instances that answer (a
        killed one runs nothing), beyond those known stuck; None: cannot tell."""
        n = 0
        for inst in INSTANCES:
            r = self.ops.call(inst, "GET", "/stats", kind="ops", fresh=True, timeout=5)
            if r.err == "refused":
                self.running[inst] = 0
                continue
            if r.status != 200 or not isinstance(r.ans, dict):
                return None
            k = int(r.ans.get("totals", r.ans).get("perf_tests_running", 0) or 0)
            self.running[inst] = k
            self.stuck[inst] = min(self.stuck.get(inst, 0), k)   # restarted: unstuck
            n += k - self.stuck[inst]
        return n

    def quiet(self, timeout=60):
        """Wait until no test runs on any instance, no batch is in PostgreSQL and
        no backend is stopped; then the table's count is final. A share still
        running after `timeout` is recorded, and from then on counted as stuck
        (it adds no rows: the counts stay exact while it does not)."""
        deadline = time.monotonic() + timeout
        calm = 0
        while time.monotonic() < deadline:
            try:
                if (self.c.frozen_count() == 0 and self.running_anywhere() == 0 and
                        self.c.perf_inserts_running() == 0):
                    calm += 1
                    if calm >= 2:
                        return True
                else:
                    calm = 0
            except Exception:  # noqa: BLE001 - the database is down: wait
                calm = 0
            time.sleep(0.25)
        still = {k: v - self.stuck.get(k, 0) for k, v in self.running.items()
                 if v > self.stuck.get(k, 0)}
        self.quiet_failures.append((self.rec.now(), still))
        for k, v in self.running.items():
            self.stuck[k] = max(self.stuck.get(k, 0), v)
        return False

    def count(self):
        deadline = time.monotonic() + 60
        while True:
            try:
                return self.c.perf_rows()
            except Exception:  # noqa: BLE001
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)

    def step(self, rng):
        if not self.quiet():
            return
        before = self.count()
        if before > 300000:
            # keep the table small enough for the deep pages to stay cheap-ish
            self.c.psql("DELETE FROM todos WHERE title LIKE 'Performance Test Todo #%'", timeout=60)
            before = self.count()
        garbage = self.inj.take_garbage()
        # every draw made whatever the test turns out to be: the same sequence
        inst = rng.choice(INSTANCES)
        n = rng.choice([1, 2, 10, 100, 1000, 3000, 10000, 30000])
        batch = rng.choice([1, 10, 100, 1000, 10000])
        w = rng.choice([None, 1, 2, "all", "all"])
        nodes = rng.random() < 0.35
        paced, seconds = rng.random() < 0.5, rng.uniform(0.5, 5.0)
        stream = rng.random() < 0.5
        interval = rng.choice([100, 250, 1000])
        floor_probe = rng.random() < 0.04 and garbage is None
        if garbage is not None:
            # from b, whose perf_nodes name the fake peer; enough rows for a share each
            inst, n, nodes = "b", max(n, 1000), True
            self.c.peer.arm(garbage.params["mode"])
        batch = max(batch, -(-n // 2000))   # at most 2000 batches: a test of seconds
        body = {"message_count": n, "batch_size": batch}
        if w is not None:
            body["workers"] = w
        if nodes:
            body["nodes"] = "all"
        if paced and n >= 10:
            body["rate"] = round(n / seconds, 1)   # the test lasts `seconds`
        if stream:
            body["progress_interval_ms"] = interval
        if floor_probe:
            # rate below 1 todo/s must be refused (422); one row, so that a
            # daemon that takes it anyway is over at once
            body = {"message_count": 1, "rate": 0.5}
        headers = {"Accept": "application/x-ndjson"} if stream else None
        duration = n / body["rate"] if body.get("rate") else 10
        shares = len(self.c.peer.shares)
        self.current = inst
        try:
            r = self.client.call(inst, "POST", PERF, body, kind="perf", fresh=True,
                                 headers=headers, stream=stream,
                                 timeout=min(600, duration * 3 + 60),
                                 info={"floor_probe": floor_probe})
        finally:
            self.current = None
        run = PerfRun(r, body, before)
        if garbage is not None:
            run.garbage = garbage
            self.c.peer.arm(None)
            got = self.c.peer.shares[shares:]
            run.peer_share = got[0] if got else None
            garbage.notes.append("test #%d on b: %s" % (r.n, r.status or r.err))
            garbage.ended = self.rec.now()
        run.settled = self.quiet()
        run.after = self.count()
        self.runs.append(run)


def make_hot_rows(recorder, instances, n):
    """The shared rows, created before the load (and checked: each POST 201)."""
    c = Client("setup", recorder, instances, 10)
    ids = []
    for k in range(n):
        r = c.call(INSTANCES[k % 3], "POST", "/todos", {"title": "hot-init %d" % k},
                   kind="setup", info={"title": "hot-init %d" % k})
        if r.status != 201:
            raise RuntimeError("could not create the shared rows: %s" % r.describe())
        r.info["todo"] = r.ans["id"]
        ids.append(r.ans["id"])
    c.close()
    return ids
