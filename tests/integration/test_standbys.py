"""Read consistency (API.md "Read consistency (with standbys)"; DAEMON.md
"Standbys for reads"): every answer of a database-backed route carries `Todod-Lsn`,
for a write a WAL position at or past its commit record (pg_walinspect finds the
record), for a read one its data is at least as new as; `Server-Timing` says who
served it; a malformed `Todod-After` is 400 and reaches no server.

With a real primary and two streaming standbys (`pg_basebackup -R`, as the
PostgreSQL user, on free loopback ports) named by `database_read_url`: reads spread
over both standbys (Server-Timing, `todod_db_reads_total`, each standby's own scan
counts); a standby whose replay is paused (`pg_wal_replay_pause()`) while the
primary moves serves no read once `max_replica_lag` has passed, and serves again
once resumed; a client that sends back each POST's `Todod-Lsn` as `Todod-After`
never gets a 404 for the todo it just created, over hundreds of rounds with replay
paused and resumed at random moments on random standbys; a standby killed under
load costs no request; a promoted standby serves no read; a list's `total` served
by a standby is exact for that standby's snapshot. The same contract holds through
the shipped HAProxy configuration with two instances reading from both standbys."""

import os
import random
import re
import signal
import threading
import time

from lib.marks import test
from lib.client import Client, _encode_body, _http_connection, _read_response
from lib.pg import Postgres
from lib.todod import Todod
from lib.checks import assert_json_error, wait_until
from lib.metrics import metric
from lib.env import PGBIN
from test_cluster import Cluster
from test_db_engines import _make_standby, _run_as_runner

LSN = re.compile(r"^([0-9A-F]{1,8})/([0-9A-F]{1,8})$")
TIMING = re.compile(r'^db;dur=\d+\.\d{3};desc="(primary|standby)", total;dur=\d+\.\d{3}$')


def lsn(text):
    m = LSN.match(text or "")
    assert m, text
    return int(m.group(1), 16) << 32 | int(m.group(2), 16)


def answer_lsn(r):
    return lsn(r.headers.get("todod-lsn"))


def served_by(r):
    m = TIMING.match(r.headers.get("server-timing", ""))
    assert m, (r, r.headers.get("server-timing"))
    return m.group(1)


def _reads_its_write(r, created, after, served, i):
    """r, the GET of the todo `created` with Todod-After `after`, found it, from data
    at or past that position; counted in served by the server that answered."""
    assert r.status == 200, (i, after, r, served)
    assert r.json() == created.json(), (r.json(), created.json())
    assert answer_lsn(r) >= lsn(after), (r.headers, after)
    served[served_by(r)] += 1


def sql(d, text):
    return d.pg.psql(text, db=d.db)


def commit_end(d, todo_id, since):
    """The end of the commit record of the transaction that last wrote todo_id,
    found in the WAL from `since` on (pg_walinspect)."""
    xid = sql(d, "SELECT xmin FROM todos WHERE id = '%s'" % todo_id)
    end = sql(d, "SELECT end_lsn FROM pg_get_wal_records_info('%s', pg_current_wal_flush_lsn())"
                 " WHERE xid = %s AND record_type = 'COMMIT'" % (since, xid))
    assert end, "no commit record of xid %s since %s" % (xid, since)
    return lsn(end)


@test
def every_database_answer_names_its_wal_position_and_server():
    with Todod(workers=2) as d:
        d.start()
        sql(d, "CREATE EXTENSION IF NOT EXISTS pg_walinspect")
        since = sql(d, "SELECT pg_current_wal_insert_lsn()")
        created = d.request("POST", "/todos", {"title": "t"})
        assert created.status == 201, created
        tid = created.json()["id"]
        assert served_by(created) == "primary"
        # a write's position is at or past its commit record: a standby that has
        # replayed it sees the todo
        end = commit_end(d, tid, since)
        assert answer_lsn(created) >= end, (created.headers["todod-lsn"], end)
        since = sql(d, "SELECT pg_current_wal_insert_lsn()")
        updated = d.request("PUT", "/todos/" + tid, {"done": True})
        assert updated.status == 200 and served_by(updated) == "primary", updated
        assert answer_lsn(updated) >= commit_end(d, tid, since) > answer_lsn(created)
        # reads: a position their data is at least as new as (so past the update)
        d.request("POST", "/todos", {"title": "u"})
        cursor = d.request("GET", "/todos?limit=1").json()["pagination"]["next_cursor"]
        for path in ("/todos/" + tid, "/todos", "/todos?limit=1&after=" + cursor,
                     "/todos/done/true", "/todos/done/false", "/todos/done/true?page=9",
                     "/todos/00000000-0000-0000-0000-000000000000"):
            r = d.request("GET", path)
            assert r.status in (200, 404), (path, r)
            assert served_by(r) == "primary", (path, r)
            assert answer_lsn(r) >= answer_lsn(updated), (path, r.headers)
        assert d.request("GET", "/todos/00000000-0000-0000-0000-000000000000").status == 404
        deleted = d.request("DELETE", "/todos/" + tid)
        assert deleted.status == 204 and served_by(deleted) == "primary", deleted
        assert answer_lsn(deleted) > answer_lsn(updated)
        assert answer_lsn(deleted) <= lsn(sql(d, "SELECT pg_current_wal_insert_lsn()"))
        # not answered by a server: no position, no desc
        bad = d.request("GET", "/todos/not-a-uuid")
        assert bad.status == 400 and "todod-lsn" not in bad.headers, bad
        assert re.match(r"^db;dur=0\.000, total;dur=", bad.headers["server-timing"]), bad.headers


@test
def a_malformed_todod_after_is_400_and_reaches_no_server():
    with Todod(workers=1) as d:
        d.start()
        tid = d.request("POST", "/todos", {"title": "t"}).json()["id"]
        for bad in ("", "0", "0/", "/0", "x/0", "0/0/0", "123456789/0", "0/123456789", "-1/0",
                    "0/1 junk", "0x1/0"):
            for path in ("/todos/" + tid, "/todos", "/todos/done/false"):
                r = d.request("GET", path, headers={"Todod-After": bad})
                assert_json_error(r, 400, "Todod-After")
                assert "todod-lsn" not in r.headers, r.headers
        # well formed, either case, any value: served (by the primary, which has all)
        for good in ("0/0", "0/16b3748", "FFFFFFFF/FFFFFFFF"):
            r = d.request("GET", "/todos/" + tid, headers={"Todod-After": good})
            assert r.status == 200 and served_by(r) == "primary", (good, r)


# --------------------------------------------------------------------------- standbys

def _cluster(nstandbys=2):
    """A primary with a todod database and nstandbys streaming standbys of it
    (asynchronous, so a paused replay holds up no commit). Returns (primary,
    [standby, ...], db)."""
    primary = Postgres(settings={"wal_level": "replica", "max_wal_senders": "8",
                                 "hot_standby": "on", "wal_sender_timeout": "5s"})
    primary.start()
    db = primary.create_database("standbys")
    standbys = [_make_standby(primary, {"hot_standby": "on"}) for _ in range(nstandbys)]
    assert wait_until(lambda: primary.psql(
        "SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'") == str(nstandbys),
        20), primary.psql("SELECT * FROM pg_stat_replication")
    return primary, standbys, db


def _read_url(standbys, db):
    return "host=%s port=%s dbname=%s user=postgres connect_timeout=2" % (
        ",".join("127.0.0.1" for _ in standbys), ",".join(str(s.port) for s in standbys), db)


def _todod(primary, standbys, db, **conf):
    conf.setdefault("workers", 2)
    conf.setdefault("max_replica_lag", 1)
    return Todod(pg=primary, db=db, database_read_url=_read_url(standbys, db), **conf)


def _states(d):
    """{host: [state of each worker]} from /stats."""
    out = {}
    for w in d.stats()["workers"]:
        for s in w.get("standbys", []):
            out.setdefault(s["host"], []).append(s["state"])
    return out


def _host(standby):
    return "127.0.0.1:%d" % standby.port


def _all(d, standby, state, workers=2):
    st = _states(d).get(_host(standby), [])
    return len(st) == workers and all(x == state for x in st)


def _scans(standby, db):
    """Scans of todos on this server (its own statistics, a standby's too)."""
    return int(standby.psql("SELECT coalesce(sum(seq_scan + idx_scan), 0) FROM"
                            " pg_stat_user_tables WHERE relname = 'todos'", db=db) or 0)


def _flush_stats(standby, db):
    # a backend sends its table statistics at the end of a transaction, at most
    # every second (PostgreSQL 15): read them once they are in
    time.sleep(1.2)
    standby.psql("SELECT pg_stat_clear_snapshot()", db=db)


def _kill(pg):
    """SIGKILL a server's postmaster and every process of it, at once."""
    pm = pg.postmaster_pid()
    with open("/proc/%d/task/%d/children" % (pm, pm)) as f:
        children = [int(x) for x in f.read().split()]
    for pid in [pm] + children:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    pg.running = False


def _start(d, standbys):
    d.start()
    assert wait_until(lambda: all(_all(d, s, "fit") for s in standbys), 20), _states(d)


def _pause_replay_at_random(standbys, stop, rng):
    """Until stop is set: pause or resume replay on a random standby, at random
    moments; then resume every standby it left paused."""
    paused = set()
    while not stop.is_set():
        s = rng.choice(standbys)
        if s in paused:
            s.psql("SELECT pg_wal_replay_resume()")
            paused.discard(s)
        else:
            s.psql("SELECT pg_wal_replay_pause()")
            paused.add(s)
        time.sleep(rng.uniform(0, 0.3))
    for s in paused:
        s.psql("SELECT pg_wal_replay_resume()")


@test
def reads_spread_over_both_standbys_and_say_so():
    primary, standbys, db = _cluster()
    with _todod(primary, standbys, db) as d:
        _start(d, standbys)
        ids = [d.request("POST", "/todos", {"title": "t%d" % i}).json()["id"] for i in range(10)]
        d.request("POST", "/todos", {"title": "last"})
        for s in standbys:
            assert wait_until(lambda: s.psql("SELECT count(*) FROM todos", db=db) == "11", 10)
        assert wait_until(lambda: all(_all(d, s, "fit") for s in standbys), 10), _states(d)
        before = [_scans(s, db) for s in standbys]
        m0 = d.metrics()
        served = {"primary": 0, "standby": 0}
        with d.Client() as c:
            for i in range(300):
                r = c.request("GET", ["/todos/" + ids[i % 10], "/todos?limit=3",
                                      "/todos/done/false"][i % 3])
                assert r.status == 200, r
                served[served_by(r)] += 1
        m1 = d.metrics()
        _flush_stats(standbys[0], db)
        after = [_scans(s, db) for s in standbys]
        grew = [a - b for a, b in zip(after, before)]
        print("    (300 reads: %s; scans on each standby: %s)" % (served, grew))
        # the primary serves a read only while a standby is judged unfit (none is here)
        assert served["standby"] >= 295, served
        assert all(g >= 50 for g in grew), grew
        reads = lambda m, server: metric(m, "todod_db_reads_total", {"server": server}, 0)
        assert reads(m1, "standby") - reads(m0, "standby") >= 295, m1
        assert reads(m1, "primary") - reads(m0, "primary") <= 5
        for s in standbys:
            lag = metric(m1, "todod_db_standby_lag_seconds", {"host": _host(s)})
            assert 0 <= lag <= 1, lag


@test
def a_standby_paused_past_max_replica_lag_serves_no_read_until_resumed():
    primary, standbys, db = _cluster()
    paused, other = standbys
    with _todod(primary, standbys, db, max_replica_lag=0.5) as d:
        _start(d, standbys)
        tid = d.request("POST", "/todos", {"title": "t"}).json()["id"]
        paused.psql("SELECT pg_wal_replay_pause()")
        stop = threading.Event()

        def write():
            while not stop.is_set():
                d.request("POST", "/todos", {"title": "w"})
                time.sleep(0.02)
        writer = threading.Thread(target=write)
        writer.start()
        try:
            assert wait_until(lambda: _all(d, paused, "lagging"), 10), _states(d)
            assert _all(d, other, "fit"), _states(d)
            _flush_stats(paused, db)
            before = _scans(paused, db)
            with d.Client() as c:
                for _ in range(100):
                    r = c.request("GET", "/todos/" + tid)
                    assert r.status == 200 and served_by(r) == "standby", r
            _flush_stats(paused, db)
            assert _scans(paused, db) == before, "a lagging standby served reads"
            paused.psql("SELECT pg_wal_replay_resume()")
            assert wait_until(lambda: _all(d, paused, "fit"), 10), _states(d)
            with d.Client() as c:
                for _ in range(100):
                    assert c.request("GET", "/todos/" + tid).status == 200
            _flush_stats(paused, db)
            assert _scans(paused, db) >= before + 20, "a resumed standby serves no read"
        finally:
            stop.set()
            writer.join()


@test
def a_client_that_echoes_todod_lsn_reads_every_write_it_made():
    # Each round: POST, then GET /todos/{id} with the POST's Todod-Lsn as
    # Todod-After, through either worker (a new connection each time), while a
    # thread pauses and resumes replay on random standbys at random moments.
    rounds = 240
    primary, standbys, db = _cluster()
    with _todod(primary, standbys, db, max_replica_lag=30) as d:
        _start(d, standbys)
        stop = threading.Event()
        rng = random.Random(22)
        t = threading.Thread(target=_pause_replay_at_random,
                             args=(standbys, stop, random.Random(2022)))
        t.start()
        served = {"primary": 0, "standby": 0}
        try:
            for i in range(rounds):
                created = d.request("POST", "/todos", {"title": "r%d" % i})
                assert created.status == 201, created
                after = created.headers["todod-lsn"]
                # now, or once the workers may have sampled the standbys again
                if i % 2:
                    time.sleep(rng.uniform(0, 0.3))
                r = d.request("GET", "/todos/" + created.json()["id"],
                              headers={"Todod-After": after})
                _reads_its_write(r, created, after, served, i)
        finally:
            stop.set()
            t.join()
        print("    (%d read-your-writes rounds, no 404; served by %s)" % (rounds, served))
        # the standbys did serve some of them: the test exercised them
        assert served["standby"] > 0, served


@test
def a_standby_killed_under_load_fails_no_request():
    primary, standbys, db = _cluster()
    victim = standbys[1]
    with _todod(primary, standbys, db) as d:
        _start(d, standbys)
        ids = [d.request("POST", "/todos", {"title": "t%d" % i}).json()["id"] for i in range(20)]
        for s in standbys:
            assert wait_until(lambda: s.psql("SELECT count(*) FROM todos", db=db) == "20", 10)
        stop = threading.Event()
        bad, counts = [], []

        def load(k):
            n = 0
            with d.Client() as c:
                while not stop.is_set():
                    r = c.request("GET", "/todos/" + ids[(n + k) % 20] if n % 2 else
                                  "/todos?limit=5")
                    if r.status != 200:
                        bad.append(r)
                    n += 1
            counts.append(n)
        threads = [threading.Thread(target=load, args=(k,)) for k in range(4)]
        for t in threads:
            t.start()
        time.sleep(1)
        _kill(victim)
        time.sleep(2)
        stop.set()
        for t in threads:
            t.join()
        print("    (%d reads, the standby killed after 1 s)" % sum(counts))
        assert not bad, bad[:5]
        assert wait_until(lambda: _all(d, victim, "down"), 5), _states(d)
        assert _all(d, standbys[0], "fit"), _states(d)


@test
def a_promoted_standby_is_dropped_for_reads():
    primary, standbys, db = _cluster()
    promoted = standbys[1]
    with _todod(primary, standbys, db) as d:
        _start(d, standbys)
        tid = d.request("POST", "/todos", {"title": "t"}).json()["id"]
        assert wait_until(lambda: promoted.psql("SELECT count(*) FROM todos", db=db) == "1", 10)
        _run_as_runner([os.path.join(PGBIN, "pg_ctl"), "-D", promoted.datadir, "-w", "-t", "30",
                        "promote"])
        assert wait_until(lambda: promoted.psql("SELECT pg_is_in_recovery()") == "f", 10)
        assert wait_until(lambda: _all(d, promoted, "promoted"), 5), _states(d)
        # the primary moves on; the promoted server no longer follows it
        d.request("PUT", "/todos/" + tid, {"done": True})
        _flush_stats(promoted, db)
        before = _scans(promoted, db)
        with d.Client() as c:
            for _ in range(100):
                r = c.request("GET", "/todos/" + tid)
                assert r.status == 200 and r.json()["done"] is True, r
        _flush_stats(promoted, db)
        assert _scans(promoted, db) == before, "a promoted standby served reads"


@test
def a_list_total_from_a_standby_is_exact_for_its_snapshot():
    # One standby, paused: it serves the list (max_replica_lag is large), and
    # its total is the count of the rows it has, not the primary's.
    primary, standbys, db = _cluster(1)
    (standby,) = standbys
    with _todod(primary, standbys, db, max_replica_lag=3600) as d:
        _start(d, standbys)
        for i in range(30):
            assert d.request("POST", "/todos", {"title": "a%d" % i}).status == 201
        assert wait_until(lambda: standby.psql("SELECT count(*) FROM todos", db=db) == "30", 10)
        standby.psql("SELECT pg_wal_replay_pause()")
        try:
            made = [d.request("POST", "/todos", {"title": "b%d" % i}) for i in range(12)]
            assert all(r.status == 201 for r in made)
            time.sleep(0.5)
            on_standby = int(standby.psql("SELECT count(*) FROM todos", db=db))
            assert on_standby == 30, on_standby
            r = d.request("GET", "/todos?limit=7")
            assert served_by(r) == "standby", r.headers
            page = r.json()
            assert page["pagination"]["total"] == on_standby, page["pagination"]
            assert page["pagination"]["total_pages"] == 5
            # walked by cursor on the standby: exactly its rows
            seen, nxt = [t["id"] for t in page["data"]], page["pagination"].get("next_cursor")
            while nxt:
                p = d.request("GET", "/todos?limit=7&after=" + nxt)
                assert served_by(p) == "standby" and p.json()["pagination"]["total"] == 30
                seen += [t["id"] for t in p.json()["data"]]
                nxt = p.json()["pagination"].get("next_cursor")
            assert len(seen) == len(set(seen)) == 30
            # asked to be at least as new as the last write: the primary's total
            r = d.request("GET", "/todos?limit=7", headers={"Todod-After":
                                                             made[-1].headers["todod-lsn"]})
            assert served_by(r) == "primary" and r.json()["pagination"]["total"] == 42, r
        finally:
            standby.psql("SELECT pg_wal_replay_resume()")


def _via(port, method, path, body=None, headers=None):
    """One request through HAProxy on a new client connection (so to either
    instance and any of its workers), sent once -> (Response, the connection's
    client port, which HAProxy's log names)."""
    body, headers = _encode_body(body, headers)
    conn = _http_connection("127.0.0.1", port, 10)
    try:
        conn.connect()
        me = conn.sock.getsockname()[1]
        conn.request(method, path, body=body, headers=headers)
        return _read_response(conn)[0], me
    finally:
        conn.close()


def _servers_by_client_port(haproxy):
    """{client port: server} of the API requests HAProxy logged (it may drop
    log lines when its output is busy: a request may be missing)."""
    return {int(r["line"].split()[0].rsplit(":", 1)[1]): r["server"]
            for r in haproxy.requests()}


@test
def through_haproxy_two_instances_with_standbys_read_every_write_and_survive_a_killed_standby():
    # Two todod instances (2 workers each) behind the shipped HAProxy
    # configuration, both reading from the same two standbys. Every request of
    # the read-your-writes rounds is a new connection; a random extra request
    # between a round's POST and GET shifts HAProxy's round robin, so the GET goes
    # to the instance that made the write or to the other one.
    rounds, reads = 120, 300
    primary, standbys, db = _cluster()
    survivor, victim = standbys
    with Cluster(n=2, pg=primary, db=db, workers=2, database_read_url=_read_url(standbys, db),
                 max_replica_lag=30) as cl:
        cl.start()
        port = cl.haproxy.port
        for d in cl.nodes:
            assert wait_until(lambda: all(_all(d, s, "fit") for s in standbys), 20), _states(d)

        # 1. read-your-writes, replay paused and resumed at random meanwhile
        stop = threading.Event()
        rng = random.Random(23)
        t = threading.Thread(target=_pause_replay_at_random,
                             args=(standbys, stop, random.Random(2023)))
        t.start()
        made = {}
        served = {"primary": 0, "standby": 0}
        sent, pairs = 0, []   # requests through HAProxy; (POST's, GET's client port)
        try:
            for i in range(rounds):
                created, wrote = _via(port, "POST", "/todos", {"title": "h%d" % i})
                assert created.status == 201, (i, created)
                made[created.json()["id"]] = created.json()
                after = created.headers["todod-lsn"]
                sent += 2
                if rng.random() < 0.5:
                    assert _via(port, "GET", "/todos?limit=1")[0].status == 200
                    sent += 1
                if i % 2:
                    time.sleep(rng.uniform(0, 0.3))
                r, read = _via(port, "GET", "/todos/" + created.json()["id"],
                               headers={"Todod-After": after})
                pairs.append((wrote, read))
                _reads_its_write(r, created, after, served, i)
        finally:
            stop.set()
            t.join()
        # which instance made each write and which read it, from HAProxy's log
        wait_until(lambda: len(cl.haproxy.requests()) >= sent, 5)
        by_port = _servers_by_client_port(cl.haproxy)
        known = [(by_port[w], by_port[r]) for w, r in pairs if w in by_port and r in by_port]
        same = sum(1 for w, r in known if w == r)
        other = len(known) - same
        # the rounds met both instances both ways, and the standbys served some
        assert same > 0 and other > 0, (same, other, len(pairs))
        assert served["standby"] > 0, served

        # 2. reads spread over both standbys, from both instances
        for s in standbys:
            assert wait_until(lambda: s.psql("SELECT count(*) FROM todos", db=db)
                              == str(rounds), 20)
        for d in cl.nodes:
            assert wait_until(lambda: all(_all(d, s, "fit") for s in standbys), 10), _states(d)
        _flush_stats(survivor, db)
        scans0 = [_scans(s, db) for s in standbys]
        totals0 = [d.stats()["totals"] for d in cl.nodes]
        ids = list(made)
        spread = {"primary": 0, "standby": 0}
        for i in range(reads):
            r = _via(port, "GET", ["/todos/" + ids[i % rounds], "/todos?limit=3",
                                   "/todos/done/false"][i % 3])[0]
            assert r.status == 200, r
            spread[served_by(r)] += 1
        totals1 = [d.stats()["totals"] for d in cl.nodes]
        _flush_stats(survivor, db)
        grew = [b - a for a, b in zip(scans0, [_scans(s, db) for s in standbys])]
        per_instance = [b["db_reads_standby"] - a["db_reads_standby"]
                        for a, b in zip(totals0, totals1)]
        assert spread["primary"] <= reads // 20, spread
        assert all(g >= 50 for g in grew), grew
        assert all(n >= reads // 4 for n in per_instance), per_instance

        # 3. a standby killed under reads through HAProxy: no request fails
        halt = threading.Event()
        bad, counts = [], [0] * 4

        def load(k):
            # threads 0 and 1: a new connection per request; 2 and 3: keep-alive
            c = Client("127.0.0.1", port, timeout=10, retry=False)
            try:
                while not halt.is_set():
                    if k < 2:
                        c.close()
                    n = counts[k]
                    path = "/todos/" + ids[(n * 4 + k) % rounds] if n % 2 else "/todos?limit=5"
                    try:
                        r = c.request("GET", path)
                        if r.status != 200:
                            bad.append((path, r))
                    except Exception as e:  # noqa: BLE001 - every failure is one
                        bad.append((path, "%s: %s" % (type(e).__name__, e)))
                        c.close()
                    counts[k] = n + 1
            finally:
                c.close()
        threads = [threading.Thread(target=load, args=(k,)) for k in range(4)]
        for th in threads:
            th.start()
        try:
            assert wait_until(lambda: sum(counts) >= 200, 20), counts
            at_kill = sum(counts)
            _kill(victim)
            # on until every worker of both instances has found it down, and a while after
            for d in cl.nodes:
                assert wait_until(lambda: _all(d, victim, "down"), 10), _states(d)
            at_down = sum(counts)
            assert wait_until(lambda: sum(counts) >= at_down + 200, 20), counts
        finally:
            halt.set()
            for th in threads:
                th.join()
        total = sum(counts)
        assert not bad, bad[:5]
        for d in cl.nodes:
            assert _all(d, victim, "down") and _all(d, survivor, "fit"), _states(d)
        # every answer was todod's own: HAProxy retried no request it logged, and
        # saw no error
        wait_until(lambda: len(cl.haproxy.requests()) >= sent + reads + total, 5)
        logged = cl.haproxy.requests()
        retried = [r["line"] for r in logged if r["retries"].lstrip("+") != "0"]
        assert not retried, retried[:5]
        assert not cl.haproxy.problems(), cl.report()
        # the database: exactly the acknowledged writes, on the primary and the survivor
        for s in (primary, survivor):
            assert set(s.psql("SELECT id FROM todos", db=db).split()) == set(made), s.port
        print("    (%d read-your-writes rounds through HAProxy, no 404: %d read on the "
              "instance that wrote, %d on the other, %d not in HAProxy's log; served by %s)"
              % (rounds, same, other, rounds - len(known), served))
        print("    (%d reads: %s; scans on each standby: %s; standby reads per instance: %s)"
              % (reads, spread, grew, per_instance))
        print("    (%d reads, the standby killed after %d, down for all after %d: no failed "
              "request; HAProxy logged %d of all %d requests, none retried)"
              % (total, at_kill, at_down, len(logged), sent + reads + total))
