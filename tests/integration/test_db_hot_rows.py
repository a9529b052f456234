"""Many clients writing to a few rows (README "The database connections"; API.md
"Writes, time-outs and lost connections"): todod's own write transactions never
deadlock each other, whatever the mix of POST, PUT and DELETE and however many
workers and instances send them. Every answer is checked against the table (an
audit trigger records every committed change) and PostgreSQL's log."""

import os
import random
import time

from harness import run_threads, test, Todod

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
