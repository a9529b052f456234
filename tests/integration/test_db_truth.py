"""Every write answer means what it says, under faults injected into a real
PostgreSQL (API.md "Writes, time-outs and lost connections"; DAEMON.md "The
schema and the database connections"): row and table locks, backends stopped
with SIGSTOP, pg_terminate_backend, a long transaction during a reload, the
schema made once, multi-host connection strings, host names, the performance
test losing its connection. Each test checks the table against every answer."""

import http.client
import json
import os
import signal
import socket
import threading
import time

from lib.env import free_port
from lib.marks import test
from lib.todod import Todod
from lib.load import run_threads
from lib.checks import assert_json_error, wait_until
from lib.metrics import metric

NOT_APPLIED = ("database did not answer in time", "database unavailable")
AMBIGUOUS = "database connection lost; the write may have been applied"


def backends(d, where="true"):
    return [int(p) for p in d.pg.psql(
        "SELECT pid FROM pg_stat_activity WHERE application_name = 'todod' "
        "AND datname = current_database() AND (%s)" % where, db=d.db).split()]


def title_count(d, title):
    return int(d.pg.psql("SELECT count(*) FROM todos WHERE title = '%s'" % title, db=d.db))


def check_post_truth(d, title, r):
    """The table agrees with the answer to POST {title}."""
    n = title_count(d, title)
    if r.status == 201:
        assert n == 1, "%s: answered 201, %d rows" % (title, n)
        return "committed"
    assert r.status == 503, (title, r)
    msg = r.json()["error"]
    if msg in NOT_APPLIED:
        assert n == 0, "%s: answered %r, yet %d rows" % (title, msg, n)
        return "not applied"
    assert msg == AMBIGUOUS, (title, msg)
    assert n <= 1, (title, n)
    return "ambiguous"


def timed_request(d, *args, **kw):
    t0 = time.monotonic()
    r = d.request(*args, **kw)
    return r, time.monotonic() - t0


@test
def writes_stalled_on_a_row_lock_are_answered_in_time_and_never_applied_later():
    rt = 1
    with Todod(workers=1, request_timeout=rt) as d:
        d.start()
        todo = d.request("POST", "/todos", {"title": "locked"}).json()
        holder = d.pg.psql_bg("BEGIN; SELECT 1 FROM todos WHERE id = '%s' FOR UPDATE; "
                              "SELECT pg_sleep(3); COMMIT;" % todo["id"], db=d.db)
        assert d.pg.wait_sleeping(d.db)

        def client(i):
            if i < 2:
                return timed_request(d, "PUT", "/todos/" + todo["id"],
                                     {"done": True, "title": "changed %d" % i}, timeout=rt + 5)
            return timed_request(d, "POST", "/todos", {"title": "beside the PUTs"}, timeout=rt + 5)

        answers = run_threads(3, client)
        for r, took in answers:
            assert took < rt + 1, "answered after %.2fs" % took
        for r, _ in answers[:2]:
            assert_json_error(r, 503, "did not answer in time")
        holder.wait(10)
        time.sleep(rt + 0.5)  # long enough for anything resent late to have run
        row = d.request("GET", "/todos/" + todo["id"]).json()
        assert row == todo, "a PUT answered 503 was applied: %r" % row
        check_post_truth(d, "beside the PUTs", answers[2][0])
        # and todod serves writes normally afterwards
        assert d.request("PUT", "/todos/" + todo["id"], {"done": True}).status == 200


@test
def a_backend_that_starts_late_costs_no_other_connection_its_writes():
    # The hung detector counts a statement's time from when it was sent: past
    # that plus request_timeout, with no answer, the server seems hung and every
    # connection to it is dropped. A backend stopped a while (SIGSTOP, as the
    # soak's stop_primary) starts the statement only when it goes on, behind a
    # lock here, so the server's own statement_timeout comes later than that.
    # The server answers on the other connections meanwhile: only the late one
    # is dropped, and a write sent afterwards on another connection gets the
    # server's verdict ("not applied"), not "may have been applied".
    rt = 3
    with Todod(workers=1, request_timeout=rt, db_write_connections=2) as d:
        d.start()
        run_threads(6, lambda i: d.request("POST", "/todos", {"title": "warm %d" % i}))
        assert wait_until(lambda: len(backends(d)) >= 3, 5), backends(d)  # a read, two writes
        holder = d.pg.lock_bg(d.db, 12, mode="EXCLUSIVE")  # writes wait, reads do not
        pids = backends(d)
        try:
            for pid in pids:
                os.kill(pid, signal.SIGSTOP)
            late = {}
            t = threading.Thread(target=lambda: late.update(r=d.request(
                "POST", "/todos", {"title": "sent while stopped"}, timeout=rt + 10)))
            t.start()
            time.sleep(2)
        finally:
            for pid in pids:
                os.kill(pid, signal.SIGCONT)
        assert d.request("GET", "/todos?limit=1").status == 200  # the server answers
        after = d.request("POST", "/todos", {"title": "sent after"}, timeout=rt + 10)
        t.join(rt + 10)
        holder.wait(15)
        assert "seems hung" not in d.log(), d.log_tail()
        assert check_post_truth(d, "sent after", after) == "not applied", after
        assert late["r"].status == 503, late
        check_post_truth(d, "sent while stopped", late["r"])
        assert d.request("POST", "/todos", {"title": "then"}).status == 201


@test
def a_stopped_backend_gets_answers_within_the_deadline_that_the_table_agrees_with():
    rt = 1
    with Todod(workers=1, request_timeout=rt, db_write_connections=1) as d:
        d.start()
        assert d.request("POST", "/todos", {"title": "warm up"}).status == 201
        pids = backends(d)
        assert pids, "no todod backends"
        for pid in pids:
            os.kill(pid, signal.SIGSTOP)
        try:
            answers = run_threads(8, lambda i: (i, *timed_request(
                d, "POST", "/todos", {"title": "stopped %d" % i}, timeout=rt + 5)))
            read, read_took = timed_request(d, "GET", "/todos", timeout=rt + 5)
        finally:
            time.sleep(0.5)
            for pid in pids:
                os.kill(pid, signal.SIGCONT)
        for _, r, took in answers:
            assert took < rt + 1, "answered after %.2fs: %r" % (took, r)
        assert read_took < rt + 1 and read.status == 503, (read, read_took)
        # The stopped backend runs what it had received once it continues.
        time.sleep(1)
        kinds = [check_post_truth(d, "stopped %d" % i, r) for i, r, _ in answers]
        print("    (answers: %s)" % ", ".join("%s %d" % (k, kinds.count(k))
                                                 for k in sorted(set(kinds))))
        assert wait_until(lambda: d.request("POST", "/todos", {"title": "after"}).status == 201, 5)


@test
def terminating_the_backend_of_a_waiting_write_gives_a_truthful_answer():
    with Todod(workers=1, request_timeout=5) as d:
        d.start()
        todo = d.request("POST", "/todos", {"title": "locked"}).json()
        holder = d.pg.psql_bg("BEGIN; SELECT 1 FROM todos WHERE id = '%s' FOR UPDATE; "
                              "SELECT pg_sleep(4); COMMIT;" % todo["id"], db=d.db)
        assert d.pg.wait_sleeping(d.db)
        result = {}
        t = threading.Thread(target=lambda: result.update(
            r=d.request("PUT", "/todos/" + todo["id"], {"done": True}, timeout=10)))
        t.start()
        found = {}

        def waiting():
            found["pids"] = backends(d, "wait_event_type = 'Lock'")
            return found["pids"]
        # the pid seen waiting, not a second look (the holder may be done by then)
        assert wait_until(waiting, 5), "PUT not waiting"
        (victim,) = found["pids"]
        d.pg.psql("SELECT pg_terminate_backend(%d)" % victim, db=d.db)
        t.join(10)
        r = result["r"]
        assert r.status == 503, r
        assert r.json()["error"] in NOT_APPLIED + (AMBIGUOUS,), r.json()
        holder.wait(10)
        time.sleep(0.5)
        # terminated while waiting for the lock: its transaction was rolled back
        assert d.request("GET", "/todos/" + todo["id"]).json() == todo
        assert wait_until(lambda: d.request("PUT", "/todos/" + todo["id"],
                                            {"done": True}).status == 200, 5)


def lock_todos(d, seconds):
    """Another session holds todos in ACCESS EXCLUSIVE mode (reads wait) for
    `seconds` from when the lock is granted; returns its psql process."""
    return d.pg.lock_bg(d.db, seconds)


def read_response(sock):
    """One HTTP response from sock -> (status, its JSON body, or its text)."""
    r = http.client.HTTPResponse(sock)
    r.begin()
    body = r.read()
    if r.getheader("Content-Type", "").startswith("application/json"):
        return r.status, json.loads(body)
    return r.status, body.decode()


@test
def reads_aborted_behind_a_read_answered_at_its_deadline_run_again_never_answered_empty():
    # Two reads of an existing todo share one transaction on the only read
    # connection: A, whose request began 2 s earlier (its deadline comes
    # first), then B. Both wait for a lock. A is answered 503 at its deadline;
    # then its statement is cancelled, which aborts B without running it, and
    # the lock goes. B must run again, within its deadline: 200 with the todo,
    # never a 404 made of the aborted result.
    rt = 3
    with Todod(workers=1, db_connections=1, request_timeout=rt) as d:
        d.start()
        todo = d.request("POST", "/todos", {"title": "there"}).json()
        (worker,) = d.worker_pids()
        get = ("GET /todos/%s HTTP/1.1\r\nHost: todod\r\n" % todo["id"]).encode()
        a = socket.create_connection((d.host, d.port), timeout=10)
        b = socket.create_connection((d.host, d.port), timeout=10)
        holder = lock_todos(d, 60)
        try:
            b.sendall(b"GET /live HTTP/1.1\r\nHost: todod\r\n\r\n")  # accepted, kept alive
            assert read_response(b)[0] == 200
            a.sendall(get)  # A's first bytes: its deadline counts from now
            t0 = time.monotonic()
            time.sleep(2)
            # The rest of A and all of B reach the worker in one turn of its loop.
            os.kill(worker, signal.SIGSTOP)
            try:
                a.sendall(b"\r\n")
                b.sendall(get + b"\r\n")
                time.sleep(0.05)
            finally:
                os.kill(worker, signal.SIGCONT)
            status, body = read_response(a)
            assert (status, body) == (503, {"error": "database did not answer in time"}), body
            assert time.monotonic() - t0 < rt + 0.5
            # A's statement (todod's one read waiting for the lock) is cancelled
            assert d.pg.psql("SELECT count(pg_cancel_backend(pid)) FROM pg_stat_activity "
                             "WHERE application_name = 'todod' AND datname = "
                             "current_database() AND wait_event_type = 'Lock'", db=d.db) == "1"
            time.sleep(0.1)
            assert d.pg.psql("SELECT pg_cancel_backend(%d)" % holder.backend_pid, db=d.db) == "t"
            status, body = read_response(b)
            took = time.monotonic() - t0
        finally:
            a.close()
            b.close()
            holder.kill()
        holder.wait(10)
        assert (status, body) == (200, todo), "B answered %d %r after %.2fs" % (status, body, took)
        assert "canceling statement due to user request" in d.log(), d.log_tail()


@test
def slow_reads_queued_behind_a_lock_never_make_todod_drop_its_connections():
    # Two reads wait for a lock on one read connection: the second one's
    # statement_timeout starts when the first is cancelled, after its own
    # deadline. The server answers all along (each cancel is an answer): no
    # connection is dropped, and the writes sent meanwhile are rolled back by
    # the server and answered "not applied", never "may have been applied".
    rt = 1
    with Todod(workers=1, db_connections=1, request_timeout=rt) as d:
        d.start()
        todo = d.request("POST", "/todos", {"title": "there"}).json()
        reconnects = metric(d.metrics(), "todod_db_reconnects_total")
        holder = lock_todos(d, 3)
        t0 = time.monotonic()

        def client(i):
            if i < 2:
                return timed_request(d, "GET", "/todos/" + todo["id"], timeout=rt + 5)
            posts = []
            while time.monotonic() - t0 < 2.6:
                title = "during the lock %d.%d" % (i, len(posts))
                posts.append((title,) + timed_request(d, "POST", "/todos", {"title": title},
                                                      timeout=rt + 5))
                time.sleep(0.1)
            return posts

        answers = run_threads(4, client)
        holder.wait(10)
        for r, took in answers[:2]:
            assert_json_error(r, 503, "did not answer in time")
            assert took < rt + 1, took
        posts = answers[2] + answers[3]
        kinds = [check_post_truth(d, title, r) for title, r, _ in posts]
        assert "ambiguous" not in kinds, [(t, r.json()) for t, r, _ in posts]
        assert all(took < rt + 1 for _, _, took in posts), [took for _, _, took in posts]
        assert "seems hung" not in d.log(), d.log_tail()
        assert metric(d.metrics(), "todod_db_reconnects_total") == reconnects
        assert d.request("GET", "/todos/" + todo["id"]).json() == todo
        print("    (%d writes during the lock: %s)" % (len(posts), ", ".join(
            "%s %d" % (k, kinds.count(k)) for k in sorted(set(kinds)))))


@test
def the_read_connections_statement_timeout_is_request_timeout_to_the_unit():
    # Guard for the read connections' server-side statement_timeout (a session
    # setting with db_prepared = on, set per transaction with off): a read
    # behind a lock held a little shorter than request_timeout is served; held
    # longer, the server itself cancels the read's statement at about
    # request_timeout, rather than leave its backend waiting for the lock.
    rt = 2
    for prepared in (True, False):
        with Todod(workers=1, db_connections=1, request_timeout=rt, db_prepared=prepared) as d:
            d.start()
            todo = d.request("POST", "/todos", {"title": "there"}).json()
            holder = lock_todos(d, 1.0)
            r, took = timed_request(d, "GET", "/todos/" + todo["id"], timeout=rt + 5)
            holder.wait(10)
            mode = "db_prepared = %s" % ("on" if prepared else "off")
            assert r.status == 200 and r.json() == todo and took > 0.5, \
                "%s: a read %.2fs behind a lock: %r" % (mode, took, r)

            holder = lock_todos(d, 6)
            try:
                t0 = time.monotonic()
                r = d.request("GET", "/todos/" + todo["id"], timeout=rt + 5)
                assert_json_error(r, 503, "did not answer in time")
                assert wait_until(lambda: not backends(d, "wait_event_type = 'Lock'"),
                                  t0 + rt + 1.5 - time.monotonic(), interval=0.05), \
                    "%s: the read's backend still waits for the lock %.1fs after it was " \
                    "sent" % (mode, time.monotonic() - t0)
                cancelled = time.monotonic() - t0
            finally:
                d.pg.psql("SELECT pg_terminate_backend(%d)" % holder.backend_pid, db=d.db)
                holder.wait(10)
            assert cancelled > rt - 0.5, cancelled
            assert "canceling statement due to statement timeout" in d.log(), d.log_tail()
            print("    (%s: served after %.2fs behind the lock; cancelled by the server after "
                  "%.2fs)" % (mode, took, cancelled))


@test
def a_reload_during_another_sessions_long_write_transaction_fails_no_request():
    with Todod(workers=2, request_timeout=5) as d:
        d.start()
        holder = d.pg.psql_bg("BEGIN; INSERT INTO todos (title) VALUES ('held'); "
                              "SELECT pg_sleep(4); COMMIT;", db=d.db)
        assert d.pg.wait_sleeping(d.db)
        stop = threading.Event()
        answers = []
        unsent = []  # POSTs whose keep-alive connection a retiring worker closed first
        errors = []
        lock = threading.Lock()

        def client(i):
            with d.Client(timeout=10) as c:
                n = 0
                while not stop.is_set():
                    n += 1
                    t0 = time.monotonic()
                    title = "c%d-%d" % (i, n)
                    reused = c.conn is not None and c.used
                    try:
                        r = c.request("POST", "/todos", {"title": title})
                    except (BrokenPipeError, ConnectionResetError,
                            http.client.RemoteDisconnected) as e:
                        # Idle keep-alive connections close at once when a worker
                        # drains; a POST sent in that instant is not retried.
                        with lock:
                            unsent.append((title, reused, repr(e)))
                        continue
                    except Exception as e:
                        with lock:
                            errors.append(repr(e))
                        return
                    try:  # idempotent: the client sends it again on a new connection
                        g = c.request("GET", "/todos?limit=1")
                    except Exception as e:
                        with lock:
                            errors.append(repr(e))
                        return
                    with lock:
                        answers.append((r.status, g.status, time.monotonic() - t0))

        threads = [threading.Thread(target=client, args=(i,)) for i in range(3)]
        for th in threads:
            th.start()
        try:
            time.sleep(0.3)
            old = d.worker_pids()
            d.signal(signal.SIGHUP)
            assert wait_until(lambda: d.worker_pids() and not set(old) & set(d.worker_pids()),
                              10), "reload did not complete"
            time.sleep(0.5)
        finally:
            stop.set()
            for th in threads:
                th.join(15)
        holder.wait(10)
        assert not errors, "failed during the reload: %r" % errors[:5]
        # only an idle keep-alive connection may be closed under a request, and
        # what was sent on it was never applied
        assert all(reused for _, reused, _ in unsent), "a new connection was dropped: %r" % unsent
        for title, _, _ in unsent:
            assert d.pg.psql("SELECT count(*) FROM todos WHERE title = '%s'" % title,
                             db=d.db) == "0", title
        bad = [a for a in answers if a[0] != 201 or a[1] != 200]
        assert not bad, "failed during the reload: %r" % bad[:5]
        slowest = max(a[2] for a in answers)
        assert slowest < 1.0, "a POST+GET took %.2fs: stalled behind the open transaction" % slowest
        assert d.pg.psql("SELECT count(*) FROM todos", db=d.db) == str(len(answers) + 1)
        total = d.request("GET", "/todos").json()["pagination"]["total"]
        assert total == len(answers) + 1, total
        assert "making sure of it" not in d.log().split("reloading", 1)[-1], \
            "a reload ran the schema DDL"


@test
def the_schema_is_made_once_and_a_reload_waits_for_no_open_transaction():
    with Todod(workers=2, db_connections=2) as d:
        d.start()
        assert d.log().count("created the todod schema") == 1, d.log()
        # A long write transaction of another session: DDL (even CREATE INDEX IF
        # NOT EXISTS) would wait for it; a reload's new connections must not.
        holder = d.pg.psql_bg("BEGIN; INSERT INTO todos (title) VALUES ('held'); "
                              "SELECT pg_sleep(4); COMMIT;", db=d.db)
        assert d.pg.wait_sleeping(d.db)
        old = d.worker_pids()
        t0 = time.monotonic()
        d.signal(signal.SIGHUP)
        assert wait_until(lambda: d.worker_pids() and not set(old) & set(d.worker_pids()), 10)

        def all_connected():
            ws = d.stats()["workers"]
            return len(ws) == 2 and all(w["db_connected"] and w["ready"] for w in ws)

        assert wait_until(all_connected, 5, interval=0.01), d.stats()
        took = time.monotonic() - t0
        assert took < 1.5, "the reload took %.2fs: its connections waited on todos" % took
        assert d.request("GET", "/health").status == 200
        assert not backends(d, "wait_event_type = 'Lock'"), "a todod connection waits for a lock"
        holder.wait(10)
        assert d.log().count("created the todod schema") == 1
        assert "making sure of it" not in d.log().split("reloading", 1)[-1]


@test
def first_time_schema_creation_waits_briefly_for_a_lock_and_retries():
    with Todod(workers=1) as d:
        # The replaced service's table exists, and a session holds a write lock on it.
        d.pg.psql("CREATE TABLE todos (id uuid PRIMARY KEY DEFAULT gen_random_uuid(), "
                  "title varchar(255) NOT NULL, done boolean NOT NULL DEFAULT false, "
                  "created_at timestamptz DEFAULT now(), updated_at timestamptz DEFAULT now())",
                  db=d.db)
        holder = d.pg.psql_bg("BEGIN; INSERT INTO todos (title) VALUES ('old'); "
                              "SELECT pg_sleep(3.5); COMMIT;", db=d.db)
        assert d.pg.wait_sleeping(d.db)
        d.start(wait="http")
        assert wait_until(lambda: "lock timeout" in d.log(), 5), d.log_tail()
        holder.wait(10)
        assert wait_until(lambda: d.request("GET", "/health").status == 200, 5), d.log_tail()
        r = d.request("GET", "/todos")
        assert r.status == 200 and r.json()["pagination"]["total"] == 1, r


@test
def a_missing_index_is_made_again_waiting_briefly_for_a_lock_like_the_first_time():
    with Todod(workers=1, request_timeout=2) as d:
        d.start()
        for i in range(3):
            assert d.request("POST", "/todos", {"title": "before %d" % i}).status == 201
        d.pg.psql("DROP INDEX todod_todos_created_at_id", db=d.db)
        # Another session's long write transaction: CREATE INDEX waits for it.
        holder = d.pg.psql_bg("BEGIN; INSERT INTO todos (title) VALUES ('held'); "
                              "SELECT pg_sleep(8); COMMIT;", db=d.db)
        assert d.pg.wait_sleeping(d.db)
        t_held = time.monotonic()
        # todod's connections start again, and each asks what is missing.
        for pid in backends(d):
            d.pg.psql("SELECT pg_terminate_backend(%d)" % pid, db=d.db)
        assert wait_until(lambda: "lock timeout" in d.log(), 6), d.log_tail()
        # While todod's CREATE INDEX waits, a third session's write queues behind
        # it; lock_timeout bounds that, far below the holder's 8 s.
        t0 = time.monotonic()
        d.pg.psql("INSERT INTO todos (title) VALUES ('third')", db=d.db)
        took = time.monotonic() - t0
        assert took < 3.5, "another session's INSERT waited %.2fs behind todod's DDL" % took
        assert time.monotonic() - t_held < 7, "the holder's lock was over before the check"
        holder.wait(15)
        body, _ = list_until_served(d)
        assert body["pagination"]["total"] == 5 == int(d.pg.psql(
            "SELECT count(*) FROM todos", db=d.db)), body
        assert d.pg.psql("SELECT count(*) FROM pg_indexes WHERE indexname = "
                         "'todod_todos_created_at_id'", db=d.db) == "1"
        assert "made the todod schema whole again (it missed" in d.log(), d.log_tail()
        print("    (another session's INSERT waited %.2f s behind the re-making)" % took)


# The replaced service's migration (API.md "Schema").
OLD_MIGRATION = (
    "create table if not exists todos (id uuid primary key default gen_random_uuid(), "
    "title varchar(255) not null, done boolean not null default false, "
    "created_at timestamptz default now(), updated_at timestamptz default now()); "
    "create index if not exists idx_todos_done on todos (done); "
    "create index if not exists idx_todos_created_at on todos (created_at);")

COUNT_TRIGGERS = ("SELECT count(*) FROM pg_trigger WHERE tgrelid = 'todos'::regclass "
                  "AND tgname LIKE 'todod_count_%'")


def list_until_served(d, seconds=10, path="/todos?limit=1"):
    """GET path (a list) until it is answered 200; every other answer must be 503
    "database unavailable". Returns (the 200's body, the answers before it)."""
    before = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        r = d.request("GET", path)
        if r.status == 200:
            return r.json(), before
        assert_json_error(r, 503, "database unavailable")
        before.append(r)
        time.sleep(0.05)
    raise AssertionError("GET /todos not served again within %ds: %r; log:\n%s"
                         % (seconds, before[-1:], d.log_tail()))


@test
def dropping_the_table_under_a_running_todod_gets_503s_then_the_table_made_again():
    with Todod(workers=2, request_timeout=2) as d:
        d.start()
        for i in range(5):
            assert d.request("POST", "/todos", {"title": "before %d" % i}).status == 201
        d.pg.psql("DROP TABLE todos", db=d.db)
        answers = []
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            title = "after the drop %d" % len(answers)
            r = d.request("POST", "/todos", {"title": title})
            answers.append((title, r))
            if r.status == 201:
                break
            # not applied: it never ran
            assert_json_error(r, 503, "database unavailable")
            time.sleep(0.05)
        assert answers[-1][1].status == 201, "no write served again: %r\n%s" % (
            answers[-1], d.log_tail())
        for title, r in answers:
            assert check_post_truth(d, title, r) in ("committed", "not applied")
        body, _ = list_until_served(d)
        assert body["pagination"]["total"] == 1 == int(d.pg.psql(
            "SELECT count(*) FROM todos", db=d.db)), body
        assert d.pg.psql(COUNT_TRIGGERS, db=d.db) == "3"
        assert "made the todod schema whole again" in d.log(), d.log_tail()
        assert d.request("DELETE", "/todos/" + answers[-1][1].json()["id"]).status == 204
        body, _ = list_until_served(d)
        assert body["pagination"]["total"] == 0, body
        print("    (%d POSTs answered 503 \"database unavailable\" before the table was made "
              "again)" % (len(answers) - 1))


@test
def a_table_replaced_by_the_old_migration_is_counted_again_and_totals_come_right():
    with Todod(workers=2, request_timeout=2) as d:
        d.start()
        for i in range(3):
            assert d.request("POST", "/todos", {"title": "todod's %d" % i}).status == 201
        assert d.request("GET", "/todos").json()["pagination"]["total"] == 3
        # The replaced service's migration, run against an emptied database, and
        # its rows: todod's index, triggers and count are gone with the old
        # table; its schema marker and count table remain.
        d.pg.psql("BEGIN; DROP TABLE todos; " + OLD_MIGRATION +
                  " INSERT INTO todos (title, done) SELECT 'old ' || i, i % 2 = 0"
                  " FROM generate_series(1, 2000) i; COMMIT;", db=d.db)
        assert d.pg.psql(COUNT_TRIGGERS, db=d.db) == "0"
        body, refused = list_until_served(d)
        assert body["pagination"]["total"] == 2000, body
        assert d.pg.psql(COUNT_TRIGGERS, db=d.db) == "3"
        assert d.pg.psql("SELECT count(*) FROM pg_indexes WHERE indexname = "
                         "'todod_todos_created_at_id'", db=d.db) == "1"
        # every worker serves the right total, and the triggers keep it
        for _ in range(6):
            assert d.request("GET", "/todos?limit=1").json()["pagination"]["total"] == 2000
        made = d.request("POST", "/todos", {"title": "after"}).json()
        assert d.request("GET", "/todos/done/false?limit=1").json()[0] == made
        assert d.request("GET", "/todos?limit=1").json()["pagination"]["total"] == 2001
        assert d.request("DELETE", "/todos/" + made["id"]).status == 204
        total = d.request("GET", "/todos?limit=1").json()["pagination"]["total"]
        assert total == 2000 == int(d.pg.psql("SELECT count(*) FROM todos", db=d.db)), total
        assert "counted todos anew: 2000 rows" in d.log(), d.log_tail()
        print("    (%d lists answered 503 before the count was kept again)" % len(refused))


@test
def a_cursor_page_over_a_replaced_table_never_serves_the_stale_total():
    # A cursor page carries the exact total too: over a table replaced under a
    # running todod (its count triggers gone, todod's count table kept), it is
    # refused until the count is kept again, never served from the old count.
    with Todod(workers=1, request_timeout=2) as d:
        d.start()
        for i in range(3):
            assert d.request("POST", "/todos", {"title": "todod's %d" % i}).status == 201
        cursor = d.request("GET", "/todos?limit=1").json()["pagination"]["next_cursor"]
        d.pg.psql("BEGIN; DROP TABLE todos; " + OLD_MIGRATION +
                  " INSERT INTO todos (title, done) SELECT 'old ' || i, i % 2 = 0"
                  " FROM generate_series(1, 2000) i; COMMIT;", db=d.db)
        body, _ = list_until_served(d, path="/todos?limit=1&after=" + cursor)
        assert body["pagination"]["total"] == 2000, body["pagination"]


@test
def an_open_insert_of_another_session_never_holds_up_todods_writes():
    with Todod(workers=1, db_write_connections=4, request_timeout=5) as d:
        d.start()
        # Many sessions each hold an open insert (each holds a count row locked).
        holders = [d.pg.psql_bg("BEGIN; INSERT INTO todos (title) VALUES ('held %d'); "
                                "SELECT pg_sleep(3); COMMIT;" % i, db=d.db) for i in range(4)]
        assert d.pg.wait_sleeping(d.db, 4)
        took = []
        for i in range(20):
            r, t = timed_request(d, "POST", "/todos", {"title": "free %d" % i})
            assert r.status == 201, r
            took.append(t)
        assert max(took) < 0.5, "a POST waited %.2fs behind another session" % max(took)
        for h in holders:
            h.wait(10)
        assert d.request("GET", "/todos").json()["pagination"]["total"] == 24
        assert d.pg.psql("SELECT count(*) FROM todos", db=d.db) == "24"


@test
def a_multi_host_url_whose_first_host_refuses_connects_to_the_second():
    closed = free_port()
    with Todod(workers=1) as d:
        d.write_conf(database_url="host=127.0.0.1,127.0.0.1 port=%d,%d user=postgres dbname=%s "
                     "connect_timeout=2" % (closed, d.pg.port, d.db))
        d.start()
        assert d.request("GET", "/health").status == 200
        assert d.request("POST", "/todos", {"title": "via the second host"}).status == 201


@test
def a_host_name_is_resolved_without_blocking_and_used():
    with Todod(workers=1) as d:
        d.write_conf(database_url="postgresql://postgres@localhost:%d/%s" % (d.pg.port, d.db))
        d.start()
        assert d.request("GET", "/health").status == 200
        assert d.request("POST", "/todos", {"title": "by name"}).status == 201
        d.write_conf(database_url="postgresql://postgres@no-such-host.invalid:%d/%s"
                     % (d.pg.port, d.db))
        d.signal(signal.SIGHUP)
        assert wait_until(lambda: "could not resolve host name" in d.log(), 10), d.log_tail()


PERF = "/todos/performance-test"


@test
def a_performance_test_that_loses_its_connection_reports_the_truth_without_stalling():
    n, b = 1000000, 1000
    with Todod(workers=1, request_timeout=2) as d:
        d.start()
        result = {}
        t = threading.Thread(target=lambda: result.update(r=d.request(
            "POST", PERF, {"message_count": n, "batch_size": b}, timeout=120)))
        t.start()
        assert wait_until(lambda: backends(d, "query LIKE '%unnest%'"), 10), "no batch running"
        assert wait_until(lambda: int(d.pg.psql(
            "SELECT count(*) FROM todos", db=d.db)) > 20000, 30)
        worst = 0.0
        with d.Client() as c:
            for pid in backends(d, "query LIKE '%unnest%'"):
                d.pg.psql("SELECT pg_terminate_backend(%d)" % pid, db=d.db)
            deadline = time.monotonic() + 1.0
            while time.monotonic() < deadline:
                t0 = time.monotonic()
                assert c.request("GET", "/live").status == 200
                worst = max(worst, time.monotonic() - t0)
                time.sleep(0.005)
        t.join(120)
        r = result["r"]
        assert r.status == 200, r
        rep = r.json()
        rows = int(d.pg.psql("SELECT count(*) FROM todos WHERE title LIKE 'Performance Test%'",
                             db=d.db))
        assert rep["success_count"] == rows, (rep, rows)
        assert rep["success_count"] + rep["error_count"] + rep["unknown_count"] == n, rep
        assert 0 < rep["unknown_count"] <= 4 * b, rep
        assert rep["success_count"] < n
        lat = rep["batch_latency_ms"]
        assert rep["batches"] * b <= rep["success_count"] + rep["error_count"], rep
        assert lat["p50"] < lat["max"] or lat["min"] == lat["max"], lat
        assert worst < 0.2, "the event loop stalled %.3fs when the connection died" % worst
        # the worker serves on
        assert d.request("POST", "/todos", {"title": "after"}).status == 201


@test
def a_batch_whose_sync_was_handed_to_libpq_counts_as_unknown_when_its_server_is_dropped():
    # Batches of 100,000 rows, four in flight: libpq holds megabytes the kernel
    # has no room for, so a batch's Sync may sit in a socket buffer (and reach
    # the server) while libpq still holds later bytes. The backends stop after
    # the first commit; a read makes todod give the server up as hung and drop
    # every connection; then the backends continue and commit what they had.
    n, b = 1000000, 100000
    with Todod(workers=1, request_timeout=2, perf_max_batch=b) as d:
        d.start()
        result = {}
        t = threading.Thread(target=lambda: result.update(r=d.request(
            "POST", PERF, {"message_count": n, "batch_size": b}, timeout=120)))
        t.start()
        pids = []
        try:
            assert wait_until(lambda: int(d.pg.psql("SELECT count(*) FROM todos",
                                                    db=d.db)) > 0, 60), "no batch committed"
            pids = backends(d)
            for pid in pids:
                os.kill(pid, signal.SIGSTOP)
            r = d.request("GET", "/todos?limit=1", timeout=10)
            assert_json_error(r, 503, "did not answer in time")
            t.join(30)
            assert not t.is_alive(), "no report while the server was stopped"
        finally:
            for pid in pids:
                os.kill(pid, signal.SIGCONT)
        assert "the server seems hung" in d.log(), d.log_tail()
        # what the stopped backends had received, they run now
        assert wait_until(lambda: not backends(d, "query LIKE '%unnest%' AND state = 'active'"),
                          60)
        rep = result["r"].json()
        rows = int(d.pg.psql("SELECT count(*) FROM todos", db=d.db))
        s, e, u = rep["success_count"], rep["error_count"], rep["unknown_count"]
        print("    (report: success %d, error %d, unknown %d; the table has %d rows)"
              % (s, e, u, rows))
        assert s + e + u == n, rep
        assert s <= rows <= s + u, \
            "%d rows, but the report says %d committed and %d unknown" % (rows, s, u)
        assert rows % b == 0, rows  # whole batches: each is one transaction
        total = d.request("GET", "/todos?limit=1").json()["pagination"]["total"]
        assert total == rows, (total, rows)


@test
def performance_batches_are_not_cancelled_by_request_timeout():
    with Todod(workers=1, request_timeout=0.5) as d:
        d.start()
        assert d.request("GET", "/todos").status == 200
        holder = d.pg.lock_bg(d.db, 1.5, mode="SHARE")
        r = d.request("POST", PERF, {"message_count": 2000, "batch_size": 500}, timeout=30)
        holder.wait(10)
        assert r.status == 200, r
        rep = r.json()
        assert rep["success_count"] == 2000 and rep["error_count"] == 0, rep
        assert rep["batch_latency_ms"]["max"] > 500, rep  # it did wait past request_timeout
        assert d.pg.psql("SELECT count(*) FROM todos", db=d.db) == "2000"


@test
def after_a_database_restart_every_worker_serves_within_a_second():
    from lib.pg import Postgres
    pg = Postgres()
    pg.start()
    with Todod(pg=pg, workers=2) as d:
        d.start()
        pg.stop()
        assert wait_until(lambda: all(not w["db_connected"] for w in d.stats()["workers"]), 5)
        pg.start()  # returns once the server accepts connections
        t0 = time.monotonic()
        assert wait_until(lambda: all(w["db_connected"] for w in d.stats()["workers"]), 5,
                          interval=0.01), d.stats()
        took = time.monotonic() - t0
        assert took < 1.0, "workers back %.2fs after PostgreSQL accepted connections" % took
        print("    (every worker connected %.2fs after PostgreSQL accepted connections)" % took)
        assert d.request("POST", "/todos", {"title": "after the restart"}).status == 201


@test
def every_503_on_a_write_says_which_kind_it_is():
    url = "postgresql://postgres@127.0.0.1:%d/x" % free_port()
    with Todod(workers=1, database_url=url) as d:
        d.start(wait="http")
        r = d.request("POST", "/todos", {"title": "x"})
        assert_json_error(r, 503)
        assert r.json()["error"] == "database unavailable"
        s = json.dumps(r.json())
        assert "lost" not in s
