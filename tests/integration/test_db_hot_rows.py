"""Many clients writing to a few rows (todod(8), DATABASE; API.md
"Writes, time-outs and lost connections"): todod's own write transactions never
deadlock each other, whatever the mix of POST, PUT and DELETE and however many
workers and instances send them; a deadlock that another session causes rolls
todod's transaction back whole, and todod sends it again within its requests'
deadline, or answers 503 "did not answer in time" once that is spent. Every
answer is checked against the table (an audit trigger records every committed
change) and PostgreSQL's log."""

import http.client
import json
import os
import random
import time

from lib.marks import test
from lib.todod import Todod
from lib.load import run_threads
from lib.checks import wait_until

# Every committed change to todos, in the order it was made (a row's changes
# are made under its lock, so its records are in the order they took effect).
AUDIT_SQL = """
CREATE TABLE audit (seq bigserial PRIMARY KEY, op char(1) NOT NULL, id uuid NOT NULL,
                    title text, done boolean);
CREATE FUNCTION audit() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP = 'DELETE' THEN
    INSERT INTO audit (op, id) VALUES ('D', OLD.id);
  ELSE
    INSERT INTO audit (op, id, title, done) VALUES (left(TG_OP, 1), NEW.id, NEW.title, NEW.done);
  END IF;
  RETURN NULL;
END $$;
CREATE TRIGGER audit AFTER INSERT OR UPDATE OR DELETE ON todos
  FOR EACH ROW EXECUTE FUNCTION audit();
"""

DEADLOCK = "ERROR:  deadlock detected"


def pg_log_lines(pg, db, since):
    """PostgreSQL's log lines about database db, written after offset since."""
    with open(pg.log_path, "rb") as f:
        f.seek(since)
        text = f.read().decode("utf-8", "replace")
    return [line for line in text.splitlines() if "@%s " % db in line]


def audit_rows(d):
    out = d.pg.psql("SELECT op, id, coalesce(title, ''), coalesce(done::text, '') FROM audit "
                    "ORDER BY seq", db=d.db)
    rows = []
    for line in out.splitlines():
        op, id_, title, done = line.split("|", 3)
        rows.append((op, id_, title, {"true": True, "false": False}.get(done)))
    return rows


def table_rows(d):
    out = d.pg.psql("SELECT id, title, done FROM todos", db=d.db)
    return {i: (t, dn == "t") for i, t, dn in (line.split("|") for line in out.splitlines())}


def check_counts(d):
    exact, kept = d.pg.psql("SELECT (SELECT count(*) FROM todos), "
                            "(SELECT coalesce(sum(n), 0) FROM todod_todo_count)",
                            db=d.db).split("|")
    assert exact == kept, "count(*) = %s, trigger-kept count = %s" % (exact, kept)
    return int(exact)


@test
def a_write_storm_on_a_few_rows_from_two_instances_never_deadlocks_and_every_answer_is_true():
    # Two instances (3 and 2 workers) on one database; 24 clients, each on its own
    # keep-alive connection, for 5 s: PUTs of 5 hot rows, and POSTs whose rows
    # the clients then PUT and DELETE while they are fresh (a few at a time, so
    # that these rows are hot too, and a PUT or DELETE may find one deleted).
    nclients, seconds, nhot, nfresh = 24, 5.0, 5, 6
    with Todod(workers=3, request_timeout=20) as a:
        with Todod(pg=a.pg, db=a.db, workers=2, request_timeout=20) as b:
            a.start()
            b.start()
            a.pg.psql(AUDIT_SQL, db=a.db)
            log_from = os.path.getsize(a.pg.log_path)
            answers = []  # (method, id, title, done, status, body)
            hot = []
            for i in range(nhot):
                r = a.request("POST", "/todos", {"title": "hot %d" % i})
                assert r.status == 201, r
                hot.append(r.json()["id"])
                answers.append(("POST", hot[-1], "hot %d" % i, False, 201, r.json()))
            fresh = []  # ids of todos POSTed during the storm, newest last
            end = time.monotonic() + seconds

            def client(k):
                rnd = random.Random(k)
                c = (a if k % 2 == 0 else b).Client(timeout=30, retry=False)
                mine = []
                seq = 0
                with c:
                    while time.monotonic() < end:
                        seq += 1
                        title, done = "storm %d.%d" % (k, seq), rnd.random() < 0.5
                        pick = rnd.random()
                        recent = fresh[-nfresh:]
                        if pick < 0.15 or not recent:
                            method, id_ = "POST", None
                            r = c.request("POST", "/todos", {"title": title, "done": done})
                        elif pick < 0.3:
                            method, id_, title, done = "DELETE", rnd.choice(recent), None, None
                            r = c.request("DELETE", "/todos/" + id_)
                        else:
                            method = "PUT"
                            id_ = rnd.choice(recent) if pick < 0.45 else rnd.choice(hot)
                            r = c.request("PUT", "/todos/" + id_, {"title": title, "done": done})
                        body = r.json() if r.body else None
                        if method == "POST" and r.status == 201:
                            id_ = body["id"]
                            fresh.append(id_)  # list.append is atomic under the GIL
                        mine.append((method, id_, title, done, r.status, body))
                return mine

            for mine in run_threads(nclients, client, timeout=seconds + 60):
                assert isinstance(mine, list), "a client failed: %r" % (mine,)
                answers.extend(mine)
            storm_log = pg_log_lines(a.pg, a.db, log_from)
            audit = audit_rows(a)
            table = table_rows(a)
            total = check_counts(a)

            kinds = {}
            for method, id_, title, done, status, body in answers:
                kinds["%s %d" % (method, status)] = kinds.get("%s %d" % (method, status), 0) + 1
            print("    (%d answers: %s; %d rows at the end)" % (
                len(answers), ", ".join("%s %d" % kv for kv in sorted(kinds.items())), total))

            # No deadlock, and nothing but the answers the API gives to these writes.
            assert not [line for line in storm_log if DEADLOCK in line], \
                "deadlocks in PostgreSQL's log:\n" + "\n".join(storm_log[:20])
            for log in (a.log(), b.log()):
                assert "deadlock" not in log, log[-3000:]
            unexpected = [x for x in answers if (x[0], x[4]) not in (
                ("POST", 201), ("PUT", 200), ("PUT", 404), ("DELETE", 204), ("DELETE", 404))]
            assert not unexpected, "unexpected answers: %r" % unexpected[:10]

            # Every committed change is one answered 2xx, and every 2xx is one change.
            inserts = {title: (id_, done) for op, id_, title, done in audit if op == "I"}
            updates = {title: (id_, done) for op, id_, title, done in audit if op == "U"}
            deletes = [id_ for op, id_, _, _ in audit if op == "D"]
            assert len(inserts) + len(updates) + len(deletes) == len(audit), \
                "a title committed twice: a statement ran twice"
            assert len(set(deletes)) == len(deletes), "a row deleted twice"
            for method, id_, title, done, status, body in answers:
                if method == "POST":
                    assert inserts.pop(title, None) == (id_, done), (method, title, body)
                    assert body["title"] == title and body["done"] == done, body
                elif method == "PUT" and status == 200:
                    assert updates.pop(title, None) == (id_, done), (method, id_, title)
                    assert (body["id"], body["title"], body["done"]) == (id_, title, done), body
                elif method == "DELETE" and status == 204:
                    deletes.remove(id_)
                else:  # 404: the row was deleted, by a DELETE answered 204
                    assert id_ in [x[1] for x in answers if x[0] == "DELETE" and x[4] == 204], \
                        (method, id_, status)
            assert not inserts and not updates and not deletes, \
                "committed without a 2xx: %r %r %r" % (inserts, updates, deletes)

            # The table holds each row's last change.
            last = {}
            for op, id_, title, done in audit:
                last[id_] = None if op == "D" else (title, done)
            assert table == {i: v for i, v in last.items() if v is not None}
            assert b.stop() == 0
        assert a.stop() == 0


def lock_waiters(d):
    """How many of todod's backends wait for a lock."""
    return int(d.pg.psql("SELECT count(*) FROM pg_stat_activity WHERE application_name = "
                         "'todod' AND wait_event_type = 'Lock'", db=d.db))


class Pending:
    """A keep-alive connection to d, opened (and its first request answered) at
    once, so that the worker has accepted it; send() writes a request whose
    answer() is read later. Once send() returns, the request is in the worker's
    socket buffer."""

    def __init__(self, d):
        self.conn = http.client.HTTPConnection(d.host, d.port, timeout=60)
        self.conn.request("GET", "/health")
        r = self.conn.getresponse()
        assert r.status == 200 and r.read() == b"ok", r.status

    def send(self, method, path, body=None):
        self.conn.request(method, path, body=json.dumps(body) if body is not None else None,
                          headers={"Content-Type": "application/json"})

    def answer(self):
        r = self.conn.getresponse()
        body = r.read()
        self.conn.close()
        return r.status, json.loads(body) if body else None


@test
def a_deadlock_with_another_session_is_resent_and_commits_with_its_neighbours():
    # One worker, one write connection. A PUT of z waits for the session's lock
    # on z, so that two PUTs (of a and b, a < b) queue behind it and then go
    # together as one transaction: it updates a, then waits for b, which the
    # session holds too. The session then updates a: a deadlock, which
    # PostgreSQL breaks by rolling back todod's transaction (the session waits
    # 60 s before it looks for one, todod's backend the default 1 s). todod
    # sends both PUTs again; they commit once the session has.
    with Todod(workers=1, db_write_connections=1, request_timeout=20) as d:
        d.start()
        a_id, b_id, z_id = sorted(d.request("POST", "/todos", {"title": t}).json()["id"]
                                  for t in "xyz")
        log_from = os.path.getsize(d.pg.log_path)
        put_z, put_a, put_b, reader = (Pending(d) for _ in range(4))
        with d.pg.session(d.db, "deadlocker") as s:
            s.run("BEGIN; SET LOCAL deadlock_timeout = '60s'; "
                  "SELECT 1 FROM todos WHERE id = '%s' FOR UPDATE; SAVEPOINT z; "
                  "SELECT 1 FROM todos WHERE id = '%s' FOR UPDATE;" % (b_id, z_id))
            put_z.send("PUT", "/todos/" + z_id, {"title": "todod z"})
            assert wait_until(lambda: lock_waiters(d) == 1, 10), "the PUT of z is not waiting"
            put_a.send("PUT", "/todos/" + a_id, {"title": "todod a"})
            put_b.send("PUT", "/todos/" + b_id, {"title": "todod b"})
            # a read answered after both PUTs were in its socket buffers: the
            # worker has read them (they wait behind the PUT of z)
            time.sleep(0.1)
            reader.send("GET", "/todos/" + a_id)
            assert reader.answer()[0] == 200
            s.run("ROLLBACK TO SAVEPOINT z;")  # releases z: the PUTs of a and b go
            status, body = put_z.answer()
            assert status == 200 and body["title"] == "todod z", (status, body)
            assert wait_until(lambda: lock_waiters(d) == 1, 10), "the PUTs are not waiting"
            s.send("UPDATE todos SET title = 'session a' WHERE id = '%s';" % a_id)
            s.wait(30)  # PostgreSQL broke the deadlock: todod's transaction went
            assert wait_until(lambda: lock_waiters(d) == 1, 10), "the PUTs were not sent again"
            s.run("COMMIT;")
        for name, p, id_ in (("a", put_a, a_id), ("b", put_b, b_id)):
            status, body = p.answer()
            assert status == 200 and (body["id"], body["title"]) == (id_, "todod " + name), \
                (name, status, body)
        rows = table_rows(d)
        assert [rows[i][0] for i in (a_id, b_id, z_id)] == ["todod a", "todod b", "todod z"], rows
        xmin = d.pg.psql("SELECT count(DISTINCT xmin::text) FROM todos WHERE id IN ('%s', '%s')"
                         % (a_id, b_id), db=d.db)
        assert xmin == "1", "the PUTs of a and b did not commit together"
        # PostgreSQL broke the deadlock (more than once if the session was slow to
        # take its row after the first: todod's transaction then took it first again)
        lines = pg_log_lines(d.pg, d.db, log_from)
        n = len([line for line in lines if DEADLOCK in line])
        assert n >= 1, "\n".join(lines)
        assert d.log().count("query todo_update failed: ERROR:  deadlock detected") == n, \
            d.log_tail()
        print("    (%d deadlock%s broken by rolling back todod's transaction)"
              % (n, "" if n == 1 else "s"))
        assert d.stop() == 0


@test
def a_write_rolled_back_by_a_deadlock_gets_503_once_its_deadline_is_spent():
    # The session holds todod_todo_count, which the INSERT's count trigger
    # needs, then asks for todos, which the INSERT holds: a deadlock, broken by
    # rolling back todod's transaction. todod sends the INSERT again; it waits
    # for the session, which ends after the request's deadline: 503 "did not
    # answer in time", and the todo was never created.
    rt = 3
    with Todod(workers=1, request_timeout=rt) as d:
        d.start()
        log_from = os.path.getsize(d.pg.log_path)
        post = Pending(d)
        with d.pg.session(d.db, "deadlocker") as s:
            s.run("BEGIN; SET LOCAL deadlock_timeout = '60s'; "
                  "LOCK TABLE todod_todo_count IN SHARE MODE;")
            t0 = time.monotonic()
            post.send("POST", "/todos", {"title": "deadlocked"})
            assert wait_until(lambda: lock_waiters(d) == 1, 5), "the POST is not waiting"
            s.run("LOCK TABLE todos IN SHARE MODE;")  # granted once PostgreSQL rolled todod back
            assert wait_until(lambda: lock_waiters(d) == 1, 5), "the POST was not sent again"
            answer = post.answer()
            took = time.monotonic() - t0
            s.run("COMMIT;")
        assert answer == (503, {"error": "database did not answer in time"}), answer
        assert took >= rt - 0.5, "answered 503 after %.2fs, before its deadline" % took
        time.sleep(0.5)  # anything sent late would have run by now
        assert d.pg.psql("SELECT count(*) FROM todos", db=d.db) == "0"
        check_counts(d)
        deadlocks = [line for line in pg_log_lines(d.pg, d.db, log_from) if DEADLOCK in line]
        assert len(deadlocks) == 1, deadlocks
        assert d.request("POST", "/todos", {"title": "after"}).status == 201
        assert d.stop() == 0
