"""todod with the engines people run in front of and beside PostgreSQL (CLUSTER.md
"PostgreSQL: pooling and failover"; DAEMON.md "The schema and the database
connections"):

- a real PgBouncer (Debian's 1.18) in transaction pooling mode, with a pool
  smaller than todod's connections, in front of PostgreSQL; todod runs with
  `db_prepared = off`: the API, concurrent clients and the performance test give
  answers the table agrees with, and PgBouncer's own console shows todod's traffic
  went through it;
- a real primary and a streaming standby in synchronous replication (made with
  `pg_basebackup -R`), todod given both in a multi-host `database_url` with
  `target_session_attrs=read-write`: under a load of writes (each read back) the
  primary is stopped (fast, immediate) or hangs (SIGSTOP), and the standby is
  promoted; todod writes to the new primary within 5 s, every acknowledged todo is
  in its table, and every other answer is one API.md allows; a performance test
  cut by the failover reports exactly what the new primary holds; a statement in
  progress whose backend is terminated (as a fast shutdown does) gets 503.

Every server is started by the test in a temporary directory, on loopback and
free ports, as the PostgreSQL user when run as root (PostgreSQL, pg_basebackup and
PgBouncer refuse to run as root), and stopped by PID whatever happens.
"""

import json
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time

from lib import env
from lib.env import IS_ROOT, PG_RUNNER, PGBIN, Leftovers, free_port
from lib.marks import test
from lib.pg import Postgres, get_pg
from lib.todod import Todod
from lib.load import WriteLoad, run_threads
from lib.checks import assert_json_error, wait_until

NOT_APPLIED = ("database did not answer in time", "database unavailable")
AMBIGUOUS = "database connection lost; the write may have been applied"
PERF = "/todos/performance-test"

# The columns of a todo as todod answers them (API.md "Resource: todo").
TODO_SQL = ("SELECT json_build_object('id', id, 'title', title, 'done', done, "
            "'created_at', to_char(created_at AT TIME ZONE 'UTC', "
            "'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'), "
            "'updated_at', to_char(updated_at AT TIME ZONE 'UTC', "
            "'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')) FROM todos")
NEWEST_FIRST = " ORDER BY created_at DESC, id DESC"


# --------------------------------------------------------------------------- processes

_servers = Leftovers()  # servers started here and not yet stopped


def _runner_ids():
    """(uid, gid) of the user the database servers run as (None: us)."""
    if not IS_ROOT:
        return None
    pw = pwd.getpwnam(PG_RUNNER)
    return pw.pw_uid, pw.pw_gid


def _as_runner(argv):
    """argv run as the PostgreSQL user (runuser when we are root)."""
    return ["runuser", "-u", PG_RUNNER, "--"] + list(argv) if IS_ROOT else list(argv)


def _run_as_runner(argv, timeout=60):
    """Run a short command as the PostgreSQL user; returns its output, raises on failure."""
    r = subprocess.run(_as_runner(argv), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       text=True, cwd="/", timeout=timeout)
    if r.returncode != 0:
        raise RuntimeError("%s failed (%d):\n%s" % (" ".join(argv), r.returncode, r.stdout))
    return r.stdout


def _runner_dir(prefix):
    """A new temp directory owned by the PostgreSQL user (and readable by us)."""
    path = tempfile.mkdtemp(prefix=prefix, dir=env.tmp_base())
    os.chmod(path, 0o755)
    ids = _runner_ids()
    if ids is not None:
        os.chown(path, *ids)
    return path


def _write_runner_file(path, text):
    with open(path, "w") as f:
        f.write(text)
    ids = _runner_ids()
    if ids is not None:
        os.chown(path, *ids)


def _psql(port, sql, db, timeout=30):
    """psql (unaligned, with a header row) to db on 127.0.0.1:port (port None: db is
    a whole connection string) -> list of dicts."""
    where = ["-d", db] if port is None else ["-h", "127.0.0.1", "-p", str(port),
                                             "-U", "postgres", "-d", db]
    cmd = [os.path.join(PGBIN, "psql"), "-X", "-A", "-F", "\t", "-P", "footer=off",
           "-v", "ON_ERROR_STOP=1"] + where + ["-c", sql]
    r = subprocess.run(_as_runner(cmd), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       text=True, cwd="/", timeout=timeout)
    if r.returncode != 0:
        raise RuntimeError("psql -p %d %s failed: %s" % (port, sql, r.stderr.strip()))
    lines = r.stdout.splitlines()
    if not lines:
        return []
    head = lines[0].split("\t")
    return [dict(zip(head, line.split("\t"))) for line in lines[1:]]


def _pgbouncer_bin():
    path = shutil.which("pgbouncer", path=os.pathsep.join(
        [os.environ.get("PATH", ""), "/usr/sbin", "/sbin"]))
    if path is None:
        raise AssertionError("pgbouncer is not installed (conf/dev/deps.sh installs it)")
    return path


class PgBouncer:
    """A real PgBouncer in front of `pg`, in transaction pooling mode with a pool of
    `pool_size` server connections per database and user, listening on 127.0.0.1
    on a free port, no unix socket, its files in a temp dir of its own."""

    def __init__(self, pg, pool_size=2):
        self.pg = pg
        self.pool_size = pool_size
        self.dir = _runner_dir("todod-pgbouncer-")
        self.ini = os.path.join(self.dir, "pgbouncer.ini")
        self.log_path = os.path.join(self.dir, "pgbouncer.log")
        self.out_path = os.path.join(self.dir, "pgbouncer.out")
        self.port = None
        self.proc = None

    def _write_config(self):
        _write_runner_file(os.path.join(self.dir, "userlist.txt"), '"postgres" ""\n')
        _write_runner_file(self.ini, "\n".join([
            "[databases]",
            "* = host=127.0.0.1 port=%d" % self.pg.port,
            "[pgbouncer]",
            "listen_addr = 127.0.0.1",
            "listen_port = %d" % self.port,
            "unix_socket_dir =",
            "auth_type = trust",
            "auth_file = %s" % os.path.join(self.dir, "userlist.txt"),
            "admin_users = postgres",
            "pool_mode = transaction",
            "default_pool_size = %d" % self.pool_size,
            "min_pool_size = 0",
            "reserve_pool_size = 0",
            "max_client_conn = 500",
            # todod's libpq sends only user, database and application_name (which
            # PgBouncer tracks); other clients' drivers send these two
            "ignore_startup_parameters = extra_float_digits,options",
            "pidfile = %s" % os.path.join(self.dir, "pgbouncer.pid"),
            "logfile = %s" % self.log_path,
            "log_connections = 1",
            "log_disconnections = 1",
            "stats_period = 60",
            "",
        ]))

    def start(self, timeout=10):
        binary = _pgbouncer_bin()
        for attempt in range(3):
            self.port = free_port()
            self._write_config()
            ids = _runner_ids()
            kw = {}
            if ids is not None:
                kw = {"user": ids[0], "group": ids[1], "extra_groups": []}
            with open(self.out_path, "ab") as out:
                self.proc = subprocess.Popen([binary, self.ini], stdout=out,
                                             stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                             cwd=self.dir, start_new_session=True, **kw)
            _servers.add(self.proc)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and self.proc.poll() is None:
                try:
                    self.show("VERSION")
                    return self
                except Exception:
                    time.sleep(0.05)
            self.stop()
            if attempt < 2 and "Address already in use" in self.log():
                continue  # someone took the port meanwhile: another one
            raise RuntimeError("pgbouncer did not start; its log:\n%s" % self.log()[-3000:])
        return self

    def url(self, db):
        return "postgresql://postgres@127.0.0.1:%d/%s" % (self.port, db)

    def show(self, what):
        """SHOW <what> on the admin console -> list of dicts."""
        return _psql(self.port, "SHOW %s" % what, "pgbouncer", timeout=10)

    def log(self):
        """Its log file; its own output when it stopped before opening that."""
        for p in (self.log_path, self.out_path):
            try:
                with open(p, "rb") as f:
                    text = f.read().decode("utf-8", "replace")
            except OSError:
                continue
            if text:
                return text
        return ""

    def stop(self):
        if self.proc is None:
            return
        if self.proc.poll() is None:
            try:
                os.kill(self.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        _servers.discard(self.proc)

    def cleanup(self, keep=False):
        self.stop()
        if not keep:
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        failed = exc_type is not None
        if failed:
            print("--- pgbouncer log (%s), last lines:\n%s"
                  % (self.log_path, "\n".join(self.log().splitlines()[-25:])))
        self.cleanup(keep=failed)
        return False


# --------------------------------------------------------------------------- table

def table_rows(pg, db, where="", order=NEWEST_FIRST, limit=None):
    """Todos straight from the table (not through todod), as todod renders them."""
    sql = TODO_SQL + ((" WHERE " + where) if where else "") + order
    if limit is not None:
        sql += " LIMIT %d" % limit
    out = pg.psql(sql, db=db)
    return [json.loads(line) for line in out.splitlines()] if out else []


def table_count(pg, db, where="true"):
    return int(pg.psql("SELECT count(*) FROM todos WHERE %s" % where, db=db))


def ok(r, status):
    assert r.status == status, "want %d, got %r" % (status, r)
    return r.json() if r.body else None


# --------------------------------------------------------------------------- PgBouncer

def _bouncer_todod(bouncer, pg, db, **conf):
    conf.setdefault("workers", 2)
    return Todod(pg=pg, db=db, database_url=bouncer.url(db), db_prepared=False, **conf)


def _bouncer_stats(bouncer, db):
    """PgBouncer's totals for db: (transactions, bytes received from its clients)."""
    for s in bouncer.show("STATS"):
        if s["database"] == db:
            return int(s["total_xact_count"]), int(s["total_received"])
    return 0, 0


def _assert_through_bouncer(bouncer, pg, db, d, before=(0, 0), min_bytes=1, shared=True):
    """PgBouncer's console shows todod's connections as its clients (more of them
    than its pool, unless not `shared`), the database's backends of db are exactly
    PgBouncer's server connections (no more than its pool), and PgBouncer received
    at least min_bytes from its clients since `before` (_bouncer_stats). Returns
    figures to print."""
    # Client backends only: an autovacuum worker of the database shows there too.
    backends = _psql(pg.port, "SELECT pid, application_name, client_port FROM pg_stat_activity "
                     "WHERE datname = current_database() AND pid <> pg_backend_pid() "
                     "AND backend_type = 'client backend'", db)
    clients = [c for c in bouncer.show("CLIENTS") if c["database"] == db]
    servers = [s for s in bouncer.show("SERVERS") if s["database"] == db]
    # todod's connections are PgBouncer's clients: at least one per worker.
    workers = int(d.conf["workers"])
    todod_clients = [c for c in clients if c["application_name"] == "todod"]
    assert len(todod_clients) >= workers, "PgBouncer sees %d todod clients: %r" % (
        len(todod_clients), clients)
    assert not shared or len(todod_clients) > bouncer.pool_size, \
        "todod has no more connections than the pool: it proves no sharing (%r)" % clients
    assert len(servers) <= bouncer.pool_size, servers
    # Every backend of the database is one of PgBouncer's server connections.
    server_pids = {s["remote_pid"] for s in servers}
    backend_pids = {b["pid"] for b in backends}
    assert backend_pids <= server_pids, \
        "backends %r are not PgBouncer's server connections %r" % (backends, servers)
    xacts, received = _bouncer_stats(bouncer, db)
    assert received - before[1] >= min_bytes, \
        "PgBouncer received %d bytes from its clients, want at least %d" % (
            received - before[1], min_bytes)
    return {"clients": len(todod_clients), "servers": len(servers), "backends": len(backend_pids),
            "xacts": xacts - before[0], "bytes": received - before[1]}


def _assert_no_database_errors(d):
    """todod's log shows no failed query, statement or connection: nothing went
    wrong behind the answers (a failure retried or hidden would show here)."""
    bad = [line for line in d.log().splitlines()
           if re.search(r"(query \S+ failed|connection \d+ (lost|failed)|statements failed|"
                        r"the schema failed):", line)]
    assert not bad, "database errors in the todod log:\n" + "\n".join(bad[:10])


def _assert_no_session_state(bouncer, db):
    """The server connections todod used through PgBouncer carry no session state
    of todod's: clients holding every one of them at once see the defaults."""
    rows = run_threads(bouncer.pool_size, lambda i: _psql(
        bouncer.port, "SELECT pg_backend_pid() AS pid, current_setting('statement_timeout') "
        "AS statement_timeout, pg_sleep(0.3)", db), timeout=30)
    assert not [r for r in rows if isinstance(r, BaseException)], rows
    rows = [r[0] for r in rows]
    assert len({r["pid"] for r in rows}) == bouncer.pool_size, rows
    for r in rows:
        assert r["statement_timeout"] == "0", \
            "a server connection left with statement_timeout %r" % r["statement_timeout"]


@test
def behind_pgbouncer_in_transaction_pooling_the_api_answers_what_the_table_holds():
    pg = get_pg()
    db = pg.create_database("bouncer")
    with PgBouncer(pg, pool_size=2) as bouncer:
        bouncer.start()
        with _bouncer_todod(bouncer, pg, db, workers=2, db_connections=1) as d:
            d.start()
            # the schema was made through PgBouncer
            assert pg.psql("SELECT todod_schema_version()", db=db) == "2"
            c = d.Client(timeout=10)

            # POST: 201, Location, the row as answered
            r = c.request("POST", "/todos", {"title": "through the pooler"})
            t = ok(r, 201)
            assert r.headers.get("location") == "/todos/" + t["id"], r.headers
            assert t["title"] == "through the pooler" and t["done"] is False, t
            assert table_rows(pg, db, "id = '%s'" % t["id"]) == [t]
            t2 = ok(c.request("POST", "/todos", {"title": "done one", "done": True}), 201)
            assert t2["done"] is True and table_rows(pg, db, "id = '%s'" % t2["id"]) == [t2]

            # GET by id; unknown id; bad id
            assert ok(c.request("GET", "/todos/" + t["id"]), 200) == t
            assert_json_error(c.request("GET", "/todos/" + "0" * 8 + "-0000-4000-8000-" + "0" * 12),
                              404, "not found")
            assert_json_error(c.request("GET", "/todos/not-a-uuid"), 400)

            # PUT: partial updates, each bumps updated_at; unknown id 404
            u = ok(c.request("PUT", "/todos/" + t["id"], {"done": True}), 200)
            assert u["done"] is True and u["title"] == t["title"], u
            assert u["updated_at"] > t["updated_at"] and u["created_at"] == t["created_at"], u
            u = ok(c.request("PUT", "/todos/" + t["id"], {"title": "renamed"}), 200)
            assert u["title"] == "renamed" and u["done"] is True, u
            assert table_rows(pg, db, "id = '%s'" % t["id"]) == [u]
            assert_json_error(c.request("PUT", "/todos/" + "1" * 8 + "-1111-4111-8111-" + "1" * 12,
                                        {"done": True}), 404, "not found")

            # DELETE: 204 then 404, and the row is gone
            r = c.request("DELETE", "/todos/" + t2["id"])
            assert r.status == 204 and r.body == b"", r
            assert table_count(pg, db, "id = '%s'" % t2["id"]) == 0
            assert_json_error(c.request("DELETE", "/todos/" + t2["id"]), 404, "not found")
            assert_json_error(c.request("GET", "/todos/" + t2["id"]), 404, "not found")

            # error cases: nothing reaches the table
            before = table_count(pg, db)
            assert_json_error(c.request("POST", "/todos", "{\"title\": ", {
                "Content-Type": "application/json"}), 400)
            assert_json_error(c.request("POST", "/todos", {"title": ""}), 422)
            assert_json_error(c.request("POST", "/todos", {"title": "x" * 256}), 422)
            assert_json_error(c.request("POST", "/todos", {"done": True}), 422)
            assert_json_error(c.request("POST", "/todos", "title=x", {
                "Content-Type": "text/plain"}), 415)
            assert_json_error(c.request("GET", "/nowhere"), 404)
            assert_json_error(c.request("GET", "/todos?page=abc"), 400)
            assert_json_error(c.request("GET", "/todos/done/maybe"), 400)
            assert table_count(pg, db) == before

            # 35 more rows, a third of them done, some sharing one transaction
            titles = ["row %02d" % i for i in range(35)]
            made = run_threads(5, lambda k: [ok(d.request("POST", "/todos", {
                "title": titles[i], "done": i % 3 == 0}), 201) for i in range(k, 35, 5)])
            assert not [m for m in made if isinstance(m, BaseException)], made

            # lists with pagination and total, page by page, against the table
            rows = table_rows(pg, db)
            assert len(rows) == 36, len(rows)
            seen = []
            for page in range(1, 6):
                body = ok(c.request("GET", "/todos?page=%d&limit=10" % page), 200)
                want = rows[(page - 1) * 10:page * 10]
                assert body["data"] == want, (page, body["data"], want)
                cursor = body["pagination"].pop("next_cursor", None)
                assert body["pagination"] == {
                    "page": page, "limit": 10, "total": 36, "total_pages": 4,
                    "has_next": page < 4, "has_prev": page > 1}, body["pagination"]
                assert (cursor is not None) == (page < 4), body["pagination"]
                seen += [x["id"] for x in body["data"]]
            assert sorted(seen) == sorted(x["id"] for x in rows)
            # and by cursor (its binary parameters, unnamed statements through the pooler)
            path, seen = "/todos?limit=7", []
            while path:
                r = c.request("GET", path)
                body = ok(r, 200)
                seen += body["data"]
                link = r.headers.get("link")
                path = link[1:link.index(">")] if link else None
                assert (path is not None) == body["pagination"]["has_next"], body["pagination"]
            assert seen == rows, "a walk by cursor through the pooler is not the table's order"
            body = ok(c.request("GET", "/todos"), 200)  # defaults: page 1, limit 10
            assert body["data"] == rows[:10] and body["pagination"]["total"] == 36, body

            # the done filter, newest first, bounded by limit and page
            for flag in ("true", "false"):
                want = table_rows(pg, db, "done = %s" % flag)
                assert ok(c.request("GET", "/todos/done/" + flag), 200) == want
                assert ok(c.request("GET", "/todos/done/%s?limit=3&page=2" % flag), 200) \
                    == want[3:6]
            c.close()

            _assert_no_session_state(bouncer, db)
            figures = _assert_through_bouncer(bouncer, pg, db, d, min_bytes=36 * 40)
            print("    (through PgBouncer: %(clients)d todod clients, %(servers)d server "
                  "connections, %(backends)d backends; it counted %(xacts)d transactions and "
                  "received %(bytes)d bytes from its clients)" % figures)
            _assert_no_database_errors(d)


def _check_answers_against_table(pg, db, state):
    """state: id -> the todo as last answered (None: deleted)."""
    rows = {r["id"]: r for r in table_rows(pg, db, order="")}
    for tid, want in state.items():
        if want is None:
            assert tid not in rows, "%s answered deleted, still in the table: %r" % (tid, rows[tid])
        else:
            assert rows.get(tid) == want, "%s: answered %r, table has %r" % (tid, want,
                                                                          rows.get(tid))
    return rows


@test
def behind_pgbouncer_concurrent_clients_each_get_their_own_right_answer():
    pg = get_pg()
    db = pg.create_database("bouncer")
    nthreads, rounds = 8, 25
    with PgBouncer(pg, pool_size=2) as bouncer:
        bouncer.start()
        with _bouncer_todod(bouncer, pg, db, workers=2, db_connections=2,
                            db_write_connections=3) as d:
            d.start()
            before = _bouncer_stats(bouncer, db)

            def client(k):
                """Creates, reads, updates, deletes its own todos, checking each answer
                against what it knows; returns its final view and its request count."""
                state = {}
                n = 0
                with d.Client(timeout=15) as c:
                    for i in range(rounds):
                        title = "t%d-%d %s" % (k, i, "\u00e9\u2603'\"\\")
                        t = ok(c.request("POST", "/todos", {"title": title, "done": i % 2 == 0}),
                               201)
                        assert t["title"] == title and t["done"] is (i % 2 == 0), (title, t)
                        state[t["id"]] = t
                        got = ok(c.request("GET", "/todos/" + t["id"]), 200)
                        assert got == t, (t, got)
                        if i % 3 == 0:
                            u = ok(c.request("PUT", "/todos/" + t["id"], {"done": not t["done"]}),
                                   200)
                            assert u["id"] == t["id"] and u["done"] is not t["done"], (t, u)
                            assert u["title"] == title, (t, u)
                            state[t["id"]] = u
                        if i % 5 == 4:
                            r = c.request("DELETE", "/todos/" + t["id"])
                            assert r.status == 204, r
                            state[t["id"]] = None
                            assert_json_error(c.request("GET", "/todos/" + t["id"]), 404)
                        # reads of the list meanwhile: well-formed and consistent
                        page = ok(c.request("GET", "/todos?limit=5"), 200)
                        assert len(page["data"]) == min(5, page["pagination"]["total"]), page
                        n += 5
                return state, n

            results = run_threads(nthreads, client, timeout=120)
            errors = [r for r in results if isinstance(r, BaseException)]
            assert not errors, "client errors: %r" % errors[:3]
            state = {}
            requests = 0
            for s, n in results:
                state.update(s)
                requests += n
            rows = _check_answers_against_table(pg, db, state)
            alive = [tid for tid, v in state.items() if v is not None]
            assert sorted(rows) == sorted(alive), "table rows differ from the answers"
            total = ok(d.request("GET", "/todos?limit=1"), 200)["pagination"]["total"]
            assert total == len(alive) == table_count(pg, db), (total, len(alive))
            _assert_no_database_errors(d)
            _assert_no_session_state(bouncer, db)
            figures = _assert_through_bouncer(bouncer, pg, db, d, before,
                                              min_bytes=nthreads * rounds * 40)
            print("    (%d requests from %d clients through PgBouncer: %d todod clients on %d "
                  "server connections, %d transactions, %d bytes)" % (
                      requests, nthreads, figures["clients"], figures["servers"],
                      figures["xacts"], figures["bytes"]))


@test
def behind_pgbouncer_pipelined_reads_on_one_connection_each_get_their_own_answer():
    # One worker, one read connection, one server connection: the reads of many
    # clients go pipelined (several transactions in flight, one Sync each) through
    # PgBouncer to a server connection it shares with the writes.
    pg = get_pg()
    db = pg.create_database("bouncer")
    with PgBouncer(pg, pool_size=1) as bouncer:
        bouncer.start()
        with _bouncer_todod(bouncer, pg, db, workers=1, db_connections=1) as d:
            d.start()
            todos = run_threads(8, lambda k: [ok(d.request("POST", "/todos", {
                "title": "read %d.%d" % (k, i), "done": i % 2 == 0}), 201) for i in range(8)])
            assert not [t for t in todos if isinstance(t, BaseException)], todos
            todos = [t for batch in todos for t in batch]
            assert table_rows(pg, db, order=" ORDER BY title") == sorted(
                todos, key=lambda t: t["title"])
            by_done = {flag: table_rows(pg, db, "done = %s" % flag, limit=5)
                       for flag in ("true", "false")}
            before = _bouncer_stats(bouncer, db)

            def reader(k):
                wrong = []
                with d.Client(timeout=10) as c:
                    for j in range(150):
                        want = todos[(k * 7 + j) % len(todos)]
                        r = c.request("GET", "/todos/" + want["id"])
                        if r.status != 200 or r.json() != want:
                            wrong.append((want["id"], r))
                        if j % 10 == 0:
                            flag = ("true", "false")[j % 20 // 10]
                            r = c.request("GET", "/todos/done/%s?limit=5" % flag)
                            if r.status != 200 or r.json() != by_done[flag]:
                                wrong.append((flag, r))
                return wrong

            t0 = time.monotonic()
            results = run_threads(16, reader, timeout=120)
            took = time.monotonic() - t0
            errors = [r for r in results if isinstance(r, BaseException)]
            assert not errors, errors[:3]
            wrong = [w for r in results for w in r]
            assert not wrong, "%d wrong answers, e.g. %r" % (len(wrong), wrong[:3])
            xacts, received = _bouncer_stats(bouncer, db)
            _assert_no_database_errors(d)
            assert len(todos) == table_count(pg, db) == 64
            print("    (%d reads from 16 clients in %.2fs through one server connection, all "
                  "right; PgBouncer counted %d transactions)" % (
                      16 * 165, took, xacts - before[0]))


@test
def behind_pgbouncer_the_performance_test_commits_exactly_what_it_reports():
    pg = get_pg()
    db = pg.create_database("bouncer")
    n, b = 20000, 500
    with PgBouncer(pg, pool_size=2) as bouncer:
        bouncer.start()
        with _bouncer_todod(bouncer, pg, db, workers=2) as d:
            d.start()
            # an ordinary client beside it, through the same pool
            side = {}

            def beside():
                with d.Client(timeout=15) as c:
                    side["posts"] = [c.request("POST", "/todos", {"title": "beside %d" % i})
                                     for i in range(20)]

            th = threading.Thread(target=beside)
            th.start()
            t0 = time.monotonic()
            r = d.request("POST", PERF, {"message_count": n, "batch_size": b}, timeout=120)
            took = time.monotonic() - t0
            th.join(60)
            rep = ok(r, 200)
            rows = table_count(pg, db, "title LIKE 'Performance Test Todo #%'")
            assert rep["success_count"] == rows == n, (rep, rows)
            assert rep["error_count"] == 0 and rep.get("unknown_count", 0) == 0, rep
            assert rep["batches"] == n // b, rep
            assert table_count(pg, db, "title LIKE 'Performance Test Todo #%' AND done") == n // 2
            distinct = int(pg.psql("SELECT count(DISTINCT title) FROM todos "
                                   "WHERE title LIKE 'Performance Test Todo #%'", db=db))
            assert distinct == n, distinct
            for p in side["posts"]:
                assert p.status == 201, p
            assert table_count(pg, db, "title LIKE 'beside %'") == 20
            total = ok(d.request("GET", "/todos?limit=1"), 200)["pagination"]["total"]
            assert total == n + 20 == table_count(pg, db), total
            _assert_no_database_errors(d)
            # each row's 16-byte id and its title went through PgBouncer
            figures = _assert_through_bouncer(bouncer, pg, db, d, min_bytes=n * (16 + 25))
            print("    (%d todos in batches of %d through PgBouncer in %.2fs, %.0f todos/s; "
                  "%d todod clients on %d server connections, %d bytes received by PgBouncer)"
                  % (n, b, took, rep["messages_per_second"], figures["clients"],
                     figures["servers"], figures["bytes"]))


@test
def behind_pgbouncer_a_write_stalled_on_a_lock_is_answered_in_time_and_never_applied():
    pg = get_pg()
    db = pg.create_database("bouncer")
    rt = 1
    with PgBouncer(pg, pool_size=2) as bouncer:
        bouncer.start()
        with _bouncer_todod(bouncer, pg, db, workers=1, request_timeout=rt) as d:
            d.start()
            todo = ok(d.request("POST", "/todos", {"title": "locked"}), 201)
            # another session (straight to PostgreSQL) holds the row
            holder = pg.psql_bg("BEGIN; SELECT 1 FROM todos WHERE id = '%s' FOR UPDATE; "
                                "SELECT pg_sleep(3); COMMIT;" % todo["id"], db=db)
            try:
                assert pg.wait_sleeping(db)

                def client(i):
                    t0 = time.monotonic()
                    if i == 0:
                        r = d.request("PUT", "/todos/" + todo["id"], {"title": "changed"},
                                      timeout=rt + 5)
                    else:  # a read beside it, through the same pool of two
                        r = d.request("GET", "/todos?limit=1", timeout=rt + 5)
                    return r, time.monotonic() - t0

                (put, put_took), (get, get_took) = run_threads(2, client)
                assert_json_error(put, 503, "did not answer in time")
                assert put_took < rt + 1, "answered after %.2fs" % put_took
                assert get.status == 200 and get_took < rt, (get, get_took)
            finally:
                holder.wait(10)
            time.sleep(0.5)  # anything resent late would have run by now
            assert table_rows(pg, db, "id = '%s'" % todo["id"]) == [todo], \
                "a PUT answered 503 was applied"
            # the server gave up on the statement itself (statement_timeout set per
            # transaction, which PgBouncer keeps on one server connection)
            assert "canceling statement due to statement timeout" in d.log(), d.log_tail()
            u = ok(d.request("PUT", "/todos/" + todo["id"], {"done": True}), 200)
            assert table_rows(pg, db, "id = '%s'" % todo["id"]) == [u]
            _assert_no_session_state(bouncer, db)


def _post_get_delete_get(d, k, seconds):
    """Client k: POST, GET, DELETE, GET of its own todos for `seconds`, on one
    keep-alive connection. Returns its history: (what, expected, answer) with
    answer (status, body), and the ids it created."""
    history, made = [], {}
    stop = time.monotonic() + seconds
    with d.Client(timeout=15, retry=False) as c:
        i = 0
        while time.monotonic() < stop:
            i += 1
            title = "client %d todo %d" % (k, i)
            r = c.request("POST", "/todos", {"title": title, "done": i % 2 == 0})
            t = r.json()
            history.append(("POST " + title, (201, title), (r.status, t)))
            if r.status != 201:
                continue
            made[t["id"]] = t
            r = c.request("GET", "/todos/" + t["id"])
            history.append(("GET after POST", (200, t), (r.status, r.json())))
            r = c.request("DELETE", "/todos/" + t["id"])
            history.append(("DELETE", (204, None), (r.status, r.json() if r.body else None)))
            if r.status == 204:
                made[t["id"]] = None
            r = c.request("GET", "/todos/" + t["id"])
            history.append(("GET after DELETE", (404, {"error": "not found"}),
                            (r.status, r.json())))
    return history, made


def _wrong_answers(history):
    """The answers of a history that are not what the client's own writes imply."""
    wrong = []
    for what, (want_status, want), (status, got) in history:
        if what.startswith("POST "):
            good = status == 201 and got.get("title") == want and set(got) == {
                "id", "title", "done", "created_at", "updated_at"}
        else:
            good = status == want_status and got == want
        if not good:
            wrong.append((what, want_status, status, got))
    return wrong


@test
def behind_pgbouncer_db_prepared_on_is_explained_once_with_what_to_set():
    # One server connection for three todod connections: each prepares its
    # statements on the server connection another one prepared them on before
    # (42P05), however often it tries. The log says so once, with the server's
    # reason and the setting to change; no line ends in an empty reason.
    pg = get_pg()
    db = pg.create_database("bouncer")
    with PgBouncer(pg, pool_size=1) as bouncer:
        bouncer.start()
        with Todod(pg=pg, db=db, database_url=bouncer.url(db), db_prepared=True, workers=1,
                   db_connections=2) as d:
            d.start(wait="http")
            assert wait_until(lambda: "set db_prepared = off" in d.log(), 10), d.log_tail()
            logins = bouncer.log().count("login attempt")
            assert wait_until(lambda: bouncer.log().count("login attempt") >= logins + 4, 10), \
                "todod did not retry"
            log = d.log()
            said = [line for line in log.splitlines() if "set db_prepared = off" in line]
            assert len(said) == 1, said
            assert "already exists" in said[0] and "42P05" in said[0], said
            assert "transaction pooling" in said[0], said
            assert log.count("already exists") <= 2, log  # and the first failure's own line
            empty = [line for line in log.splitlines() if re.search(r":\s*$", line)]
            assert not empty, "log lines with an empty reason:\n" + "\n".join(empty[:5])


class ProtocolWatch:
    """A TCP proxy in front of PostgreSQL that reads both directions of the
    protocol (v3, no TLS) on every connection through it, and records each
    frontend message that starts while a Sync (or simple Query) of that
    connection has no ReadyForQuery yet: what a pooler that hands the server
    connection on at each ReadyForQuery (PgBouncer 1.18 in transaction pooling)
    cannot survive. Also counts the statements (Execute) per Sync."""

    def __init__(self, pg_port):
        self.pg_port = pg_port
        self.lock = threading.Lock()
        self.violations = []  # (connection number, message type, Syncs outstanding)
        self.per_sync = []    # Executes of each synced transaction
        self.connections = 0
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.port = self.listener.getsockname()[1]
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def url(self, db):
        return "postgresql://postgres@127.0.0.1:%d/%s?sslmode=disable&gssencmode=disable" % (
            self.port, db)

    def _accept(self):
        while not self.closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(("127.0.0.1", self.pg_port))
            with self.lock:
                self.connections += 1
                n = self.connections
            state = {"outstanding": 0, "started": False, "executes": 0}
            threading.Thread(target=self._pump, args=(n, client, server, state, True),
                             daemon=True).start()
            threading.Thread(target=self._pump, args=(n, server, client, state, False),
                             daemon=True).start()

    @staticmethod
    def _messages(buf, first_untyped):
        """Complete messages at the head of buf -> ([(type, whole message bytes)], rest)."""
        out = []
        while True:
            if first_untyped[0]:
                if len(buf) < 4:
                    break
                n = int.from_bytes(buf[:4], "big")
                if len(buf) < n:
                    break
                out.append(("startup", buf[:n]))
                buf = buf[n:]
                first_untyped[0] = False
                continue
            if len(buf) < 5:
                break
            n = 1 + int.from_bytes(buf[1:5], "big")
            if len(buf) < n:
                break
            out.append((chr(buf[0]), buf[:n]))
            buf = buf[n:]
        return out, buf

    def _pump(self, n, src, dst, state, from_client):
        buf = b""
        first = [from_client]
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                msgs, buf = self._messages(buf + data, first)
                out = []
                for kind, raw in msgs:
                    with self.lock:
                        if from_client:
                            if (state["started"] and kind not in ("X",)
                                    and state["outstanding"] > 0):
                                self.violations.append((n, kind, state["outstanding"]))
                            if kind == "E":
                                state["executes"] += 1
                            if kind in ("S", "Q"):
                                state["outstanding"] += 1
                                if kind == "S":
                                    self.per_sync.append(state["executes"])
                                state["executes"] = 0
                        elif kind == "Z":
                            # counted before the client can see it and answer
                            if state["started"]:
                                state["outstanding"] -= 1
                            state["started"] = True
                    out.append(raw)
                dst.sendall(b"".join(out))
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self):
        self.closed = True
        self.listener.close()


@test
def pooled_a_connection_never_sends_past_a_sync_before_its_ready_for_query():
    # db_prepared = off is the setting for PgBouncer's transaction pooling: a
    # connection then has at most one transaction in flight, sent whole (reads
    # arriving meanwhile wait and go together as the next one, batches one at a
    # time), so a pooler may hand the server connection on at any
    # ReadyForQuery. A proxy reading the protocol checks it message by message
    # under concurrent reads, writes and a performance test.
    pg = get_pg()
    db = pg.create_database("watch")
    watch = ProtocolWatch(pg.port)
    try:
        with Todod(pg=pg, db=db, database_url=watch.url(db), db_prepared=False, workers=1,
                   db_connections=1) as d:
            d.start()
            todos = [ok(d.request("POST", "/todos", {"title": "seed %d" % i}), 201)
                     for i in range(8)]
            res = {}
            perf = threading.Thread(target=lambda: res.update(r=d.request(
                "POST", PERF, {"message_count": 20000, "batch_size": 1000}, timeout=60)))
            perf.start()

            def client(k):
                wrong = []
                stop = time.monotonic() + 1.5
                with d.Client(timeout=15) as c:
                    while time.monotonic() < stop:
                        want = todos[k % len(todos)]
                        r = c.request("GET", "/todos/" + want["id"])
                        if r.status != 200 or r.json() != want:
                            wrong.append(("GET", want["id"], r))
                        title = "client %d" % k
                        r = c.request("POST", "/todos", {"title": title})
                        if r.status != 201 or r.json()["title"] != title:
                            wrong.append(("POST", title, r))
                        r = c.request("GET", "/todos?limit=3")
                        if r.status != 200 or len(r.json()["data"]) != 3:
                            wrong.append(("GET list", r))
                return wrong

            results = run_threads(12, client)
            perf.join(60)
            assert not [r for r in results if isinstance(r, BaseException)], results
            wrong = [w for r in results for w in r]
            assert not wrong, "%d wrong answers, e.g. %r" % (len(wrong), wrong[:3])
            rep = ok(res["r"], 200)
            rows = table_count(pg, db, "title LIKE 'Performance Test Todo #%'")
            assert rep["success_count"] == rows == 20000, (rep, rows)
            _assert_no_database_errors(d)
        with watch.lock:
            violations = list(watch.violations)
            per_sync = list(watch.per_sync)
        assert not violations, "%d messages sent past an unanswered Sync, e.g. %r" % (
            len(violations), violations[:5])
        assert max(per_sync) > 2, "no transaction carried several reads: %r" % per_sync[-20:]
        print("    (%d transactions on %d connections, none in flight beside another; up to "
              "%d statements in one)" % (len(per_sync), watch.connections, max(per_sync)))
    finally:
        watch.close()


@test
def behind_pgbouncer_under_real_concurrency_every_client_sees_only_its_own_todos():
    # The load: two workers, a pool of 20, 32 clients each creating,
    # reading, deleting and reading again its own todos for 3 s. PgBouncer 1.18
    # hands a server connection on at a ReadyForQuery while messages of the next
    # transaction have already been forwarded: a pipeline of several transactions
    # on one pooled connection then mixes clients' answers.
    pg = get_pg()
    db = pg.create_database("bouncer")
    nclients, seconds = 32, 3
    with PgBouncer(pg, pool_size=20) as bouncer:
        bouncer.start()
        with _bouncer_todod(bouncer, pg, db, workers=2) as d:
            d.start()
            results = run_threads(nclients, lambda k: _post_get_delete_get(d, k, seconds),
                                  timeout=120)
            errors = [r for r in results if isinstance(r, BaseException)]
            assert not errors, "client errors: %r" % errors[:3]
            answers = sum(len(h) for h, _ in results)
            wrong = [w for h, _ in results for w in _wrong_answers(h)]
            assert not wrong, "%d wrong answers in %d, e.g.:\n%s" % (
                len(wrong), answers, "\n".join(repr(w) for w in wrong[:8]))
            # the table holds exactly what the answers say is left: nothing
            alive = {tid for _, made in results for tid, t in made.items() if t is not None}
            rows = {r["id"] for r in table_rows(pg, db, order="")}
            assert rows == alive, "table %d rows, answers leave %d" % (len(rows), len(alive))
            total = ok(d.request("GET", "/todos?limit=1"), 200)["pagination"]["total"]
            assert total == len(alive) == table_count(pg, db), total
            _assert_no_database_errors(d)
            figures = _assert_through_bouncer(bouncer, pg, db, d, min_bytes=answers * 20,
                                              shared=False)
            print("    (%d answers to %d clients, all right; %d todod clients on %d server "
                  "connections, %d transactions)" % (answers, nclients, figures["clients"],
                                                      figures["servers"], figures["xacts"]))


# --------------------------------------------------------------------------- failover

def _make_standby(primary, settings):
    """A streaming standby of `primary` (pg_basebackup -R, as the PostgreSQL user),
    started on a free port."""
    standby = Postgres(settings=settings)
    ids = _runner_ids()
    if ids is not None:
        os.chown(standby.dir, *ids)
    _run_as_runner([os.path.join(PGBIN, "pg_basebackup"), "-h", "127.0.0.1",
                    "-p", str(primary.port), "-U", "postgres", "-D", standby.datadir,
                    "-R", "-X", "stream", "-c", "fast", "--no-sync"], timeout=60)
    assert os.path.exists(os.path.join(standby.datadir, "standby.signal"))
    standby.start()
    return standby


def _replicated_pair():
    """A primary and a streaming standby of it in synchronous replication, with a
    todod database. Returns (primary, standby, db)."""
    primary = Postgres(settings={"wal_level": "replica", "max_wal_senders": "5",
                                 "hot_standby": "on", "wal_sender_timeout": "5s"})
    primary.start()
    db = primary.create_database("failover")
    standby = _make_standby(primary, {"hot_standby": "on"})
    assert primary.psql("SELECT pg_is_in_recovery()") == "f"
    assert standby.psql("SELECT pg_is_in_recovery()") == "t"
    assert wait_until(lambda: primary.psql(
        "SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'") == "1", 10)
    # synchronous replication from now on: a commit returns once the standby has it
    primary.psql("ALTER SYSTEM SET synchronous_standby_names = '*'")
    primary.psql("SELECT pg_reload_conf()")
    assert wait_until(lambda: primary.psql(
        "SELECT sync_state FROM pg_stat_replication") == "sync", 10), \
        primary.psql("SELECT * FROM pg_stat_replication")
    return primary, standby, db


def _freeze(pg, frozen):
    """SIGSTOP pg's postmaster (first: it forks no more), then its children; their
    pids are added to `frozen`."""
    with open(os.path.join(pg.datadir, "postmaster.pid")) as f:
        pm = int(f.readline())
    os.kill(pm, signal.SIGSTOP)
    frozen.append(pm)
    with open("/proc/%d/task/%d/children" % (pm, pm)) as f:
        for pid in (int(x) for x in f.read().split()):
            os.kill(pid, signal.SIGSTOP)
            frozen.append(pid)


def _failover(hosts, fault):
    """todod given `hosts` (the primary's, the standby's) in a multi-host
    database_url with target_session_attrs=read-write and connect_timeout=2, under
    a write load; the primary fails (fault: "immediate" or "fast", a pg_ctl stop
    mode; "freeze": its processes stopped with SIGSTOP, as a hung machine whose
    kernel still accepts connections) and the standby is promoted. Asserts the
    failover within 5 s and the new primary's table against every answer; prints
    the figures."""
    primary, standby, db = _replicated_pair()
    frozen = []
    url = ("host=%s,%s port=%d,%d dbname=%s user=postgres target_session_attrs=read-write "
           "connect_timeout=2" % (hosts[0], hosts[1], primary.port, standby.port, db))
    try:
        with Todod(pg=primary, db=db, workers=2, request_timeout=2, database_url=url) as d:
            d.start()
            # the schema was made on the primary and reached the standby
            assert wait_until(lambda: standby.psql("SELECT todod_schema_version()", db=db)
                              == "2", 5)
            _failover_under_load(d, primary, standby, db, fault, frozen)
    finally:
        if frozen:  # the old primary must not come back as a second primary
            for pid in frozen:
                try:
                    os.kill(pid, signal.SIGCONT)
                except ProcessLookupError:
                    pass
            _run_as_runner([os.path.join(PGBIN, "pg_ctl"), "-D", primary.datadir,
                            "-m", "immediate", "-w", "-t", "30", "stop"])
            primary.running = False


def _reads_on_every_worker(d, want):
    """GET want (a todo) through keep-alive connections held open at once until
    every worker holds some (todod shares them out): every worker must answer it."""
    clients = []
    try:
        for _ in range(16):
            c = d.Client(timeout=10, retry=False)
            clients.append(c)
            r = c.request("GET", "/stats")
            assert r.status == 200, r
            ws = [w for w in r.json()["workers"] if not w.get("draining")]
            if len(clients) >= 4 and all(w["open_connections"] >= 1 for w in ws):
                break
        answers = []
        for c in clients:
            t0 = time.monotonic()
            r = c.request("GET", "/todos/" + want["id"])
            answers.append((r, time.monotonic() - t0))
        bad = [(r, round(took, 2)) for r, took in answers if r.status != 200 or r.json() != want]
        assert not bad, "reads through %d connections spread over every worker: %r" % (
            len(clients), bad)
    finally:
        for c in clients:
            c.close()


def _failover_under_load(d, primary, standby, db, fault, frozen):
    # With a hung primary the load only writes: the workers' read connections sit
    # idle on the hung server, and must find the new primary all the same.
    with WriteLoad(d, nthreads=4, read_back=fault != "freeze", prefix="failover") as load:
        assert wait_until(lambda: len(load.of("POST", 201)) >= 100, 15), load.answers[-5:]
        time.sleep(0.3)
        t_fault = time.monotonic()
        if fault == "freeze":
            _freeze(primary, frozen)
        else:
            _run_as_runner([os.path.join(PGBIN, "pg_ctl"), "-D", primary.datadir,
                            "-m", fault, "-w", "-t", "30", "stop"])
            primary.running = False
        t_failed = time.monotonic()
        # todod answers while there is no primary (the standby is read-only; a hung
        # primary's answers take request_timeout)
        assert wait_until(lambda: len([a for a in load.answers if a[5] == 503 and
                                       a[1] >= t_failed]) >= 4, 8), load.answers[-5:]
        time.sleep(0.3)
        t_promote = time.monotonic()
        _run_as_runner([os.path.join(PGBIN, "pg_ctl"), "-D", standby.datadir, "-w",
                        "-t", "30", "promote"])
        t_promoted = time.monotonic()
        assert standby.psql("SELECT pg_is_in_recovery()") == "f"
        if fault == "freeze":
            # what libpq does by itself with the same URL (blocking, as psql connects):
            # gives up on the hung host after connect_timeout and takes the next one
            t0 = time.monotonic()
            (row,) = _psql(None, "SELECT pg_is_in_recovery() AS r", d.conf["database_url"])
            psql_took = time.monotonic() - t0
            assert row["r"] == "f", row
            print("    (psql with todod's database_url reached the new primary in %.2fs)"
                  % psql_took)
        written = wait_until(lambda: load.first("POST", 201, t_failed) is not None,
                             t_promote + 10 - time.monotonic())
        assert written, "no write acknowledged within 10 s of the promotion; last answers: " \
            "%r\ntodod log:\n%s" % (load.answers[-5:], d.log_tail(12))
        first = load.first("POST", 201, t_failed)
        failover = first[1] - t_promote
        # writes (and reads) flow again
        assert wait_until(lambda: len(load.of("POST", 201, first[1])) >= 100 and (
            not load.read_back or len(load.of("GET", 200, first[1])) >= 100), 15)

        def all_connected():
            ws = d.stats()["workers"]
            return ws and all(w["db_connected"] for w in ws)

        assert wait_until(all_connected, 5), d.stats()["workers"]
        # 5 s after the promotion every worker reads from the new primary
        time.sleep(max(0.0, t_promote + 5 - time.monotonic()))
        _reads_on_every_worker(d, first[6])
    assert not load.errors, "connection errors: %r" % load.errors[:5]
    assert not load.wrong, "answers that were not the todo sent or read: %r" % load.wrong[:5]

    # every answer during the failover is one API.md allows
    kinds = {}
    for t0, t1, k, method, title, status, what in load.answers:
        if status in (200, 201):
            kind = "%s %d" % (method, status)
        else:
            assert status == 503 and what in NOT_APPLIED + ((AMBIGUOUS,) if method == "POST"
                                                            else ()), \
                "answer %d %r to %s %s" % (status, what, method, title)
            kind = "%s 503 %s" % (method, what)
        kinds[kind] = kinds.get(kind, 0) + 1
    late = [a for a in load.answers if a[5] == 503 and a[0] >= t_promote + 5]
    assert not late, "503s to requests sent more than 5 s after the promotion: %r" % late[:5]

    # the table of the new primary agrees with every answer
    rows = {}
    for line in standby.psql("SELECT id || '|' || title FROM todos WHERE title LIKE "
                             "'failover %'", db=db).splitlines():
        tid, title = line.split("|", 1)
        assert title not in rows, "%s is in the table twice" % title
        rows[title] = tid
    acked = ambiguous = ambiguous_in = 0
    for t0, t1, k, method, title, status, what in load.of("POST"):
        if status == 201:
            acked += 1
            assert rows.get(title) == what["id"], \
                "acknowledged %s (%s) is not in the new primary's table" % (title, what["id"])
        elif what in NOT_APPLIED:
            assert title not in rows, "%s answered %r, yet it is in the table" % (title, what)
        else:
            ambiguous += 1
            ambiguous_in += title in rows
    assert len(rows) == acked + ambiguous_in, (len(rows), acked, ambiguous_in)
    total = ok(d.request("GET", "/todos?limit=1"), 200)["pagination"]["total"]
    assert total == table_count(standby, db) == len(rows), (total, len(rows))
    # the todos acknowledged last before the failure read back through todod
    last = [a for a in load.of("POST", 201) if a[1] < t_fault][-40:]
    assert last
    with d.Client(timeout=5) as c:
        for a in last:
            assert ok(c.request("GET", "/todos/" + a[6]["id"]), 200) == a[6], a
    # the writes go to the promoted standby, now the only primary
    t = ok(d.request("POST", "/todos", {"title": "after the failover"}), 201)
    assert table_rows(standby, db, "id = '%s'" % t["id"]) == [t]

    print("    (%s of the primary; promotion took %.2fs; first write acknowledged %.2fs "
          "after the promotion began (%.2fs after it completed))" % (
              "SIGSTOP" if fault == "freeze" else "pg_ctl stop -m " + fault,
              t_promoted - t_promote, failover, first[1] - t_promoted))
    print("    (answers: %s; %d acknowledged todos all in the new primary's table, "
          "%d ambiguous of which %d committed)" % (
              ", ".join("%s: %d" % kv for kv in sorted(kinds.items())), acked,
              ambiguous, ambiguous_in))
    assert failover < 5.0, "todod wrote to the new primary %.2fs after the promotion" % failover


@test
def a_promoted_standby_takes_the_writes_within_5s_and_keeps_every_acknowledged_todo():
    # the primary dies (immediate stop: no shutdown checkpoint, connections cut)
    _failover(("127.0.0.1", "127.0.0.1"), "immediate")


@test
def a_multi_host_url_of_host_names_follows_a_promoted_standby_too():
    # names resolved by todod (evdns) and handed to libpq as hostaddr; a clean stop
    _failover(("localhost", "localhost"), "fast")


@test
def a_hung_primary_is_given_up_on_and_the_promoted_standby_takes_the_writes_within_5s():
    # The primary's machine hangs: its kernel still completes TCP handshakes, but
    # nothing answers. A connection attempt must give up on it after
    # connect_timeout (libpq: "applies separately to each host") and go on to the
    # next host, as psql does, not retry the hung host for ever.
    _failover(("127.0.0.1", "127.0.0.1"), "freeze")


@test
def statements_in_progress_when_their_backend_is_terminated_get_503_not_500():
    # A fast shutdown of the primary (the first step of a planned switchover) or
    # pg_terminate_backend ends a backend: a statement in progress gets "FATAL:
    # terminating connection due to administrator command" (57P01), then the
    # connection closes. That is the database going away (503), not an internal
    # error (500). Another session's lock keeps the statements in progress, and
    # pg_terminate_backend (the same FATAL as a fast shutdown) ends exactly
    # todod's backends, so that none can finish first.
    pg = get_pg()
    rt = 5
    with Todod(pg=pg, workers=1, request_timeout=rt) as d:
        d.start()
        todo = ok(d.request("POST", "/todos", {"title": "before"}), 201)
        holder = pg.lock_bg(d.db, 4)
        try:
            requests = [("GET", "/todos/" + todo["id"], None), ("GET", "/todos", None),
                        ("POST", "/todos", {"title": "in flight"})]

            def client(i):
                t0 = time.monotonic()
                r = d.request(*requests[i], timeout=rt + 5)
                return r, time.monotonic() - t0

            result = {}
            th = threading.Thread(target=lambda: result.update(r=run_threads(3, client)))
            th.start()
            waiting = ("application_name = 'todod' AND wait_event_type = 'Lock' "
                       "AND datname = current_database()")
            # todod's read and write backends both wait for the lock
            assert wait_until(lambda: pg.psql(
                "SELECT count(DISTINCT pid) FROM pg_stat_activity WHERE " + waiting,
                db=d.db) == "2", 5), pg.psql("SELECT pid, application_name, state, "
                                             "wait_event_type, query FROM pg_stat_activity",
                                             db=d.db)
            pg.psql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE " + waiting,
                    db=d.db)
            th.join(rt + 10)
        finally:
            holder.wait(10)
        answers = result["r"]
        print("    (answers: %s)" % ", ".join("%s %s: %d %s" % (m, p, r.status, r.json().get(
            "error", "")) for (m, p, _), (r, _) in zip(requests, answers)))
        for (method, path, _), (r, took) in zip(requests, answers):
            assert took < rt + 1, "%s %s answered after %.2fs" % (method, path, took)
            assert r.status == 503, "%s %s in progress when its backend was terminated: %r" % (
                method, path, r)
            msg = r.json()["error"]
            assert msg in NOT_APPLIED + ((AMBIGUOUS,) if method == "POST" else ()), (path, msg)
        # terminated while waiting for the lock: the insert was rolled back
        assert table_count(pg, d.db, "title = 'in flight'") == 0
        assert table_count(pg, d.db) == 1
        assert wait_until(lambda: d.request("POST", "/todos", {"title": "after"}).status == 201,
                          5), d.log_tail()
        assert ok(d.request("GET", "/todos/" + todo["id"]), 200) == todo


@test
def a_performance_test_cut_by_the_failover_reports_what_the_new_primary_holds():
    # The primary stops in the middle of a performance test: the report counts as
    # committed exactly the rows the promoted standby has (synchronous
    # replication), the batches in flight as unknown; then todod writes there.
    n, b = 1000000, 1000
    primary, standby, db = _replicated_pair()
    url = ("host=127.0.0.1,127.0.0.1 port=%d,%d dbname=%s user=postgres "
           "target_session_attrs=read-write" % (primary.port, standby.port, db))
    with Todod(pg=primary, db=db, workers=1, request_timeout=2, database_url=url) as d:
        d.start()
        result = {}
        th = threading.Thread(target=lambda: result.update(r=d.request(
            "POST", PERF, {"message_count": n, "batch_size": b}, timeout=120)))
        th.start()
        try:
            assert wait_until(lambda: table_count(primary, db) >= 5 * b, 30, interval=0.005), \
                "no batch committed"
            _run_as_runner([os.path.join(PGBIN, "pg_ctl"), "-D", primary.datadir,
                            "-m", "immediate", "-w", "-t", "30", "stop"])
            primary.running = False
            t_stopped = time.monotonic()
        finally:
            th.join(60)
        answered = time.monotonic() - t_stopped
        rep = ok(result["r"], 200)
        _run_as_runner([os.path.join(PGBIN, "pg_ctl"), "-D", standby.datadir, "-w", "-t", "30",
                        "promote"])
        t_promoted = time.monotonic()
        rows = table_count(standby, db, "title LIKE 'Performance Test Todo #%'")
        assert rep["success_count"] + rep["error_count"] + rep["unknown_count"] == n, rep
        assert 0 < rep["success_count"] < n, rep
        assert rep["unknown_count"] <= 4 * b, rep
        # every batch confirmed is on the new primary; of the unknown, maybe some
        assert rep["success_count"] <= rows <= rep["success_count"] + rep["unknown_count"], \
            (rep, rows)
        assert rows % b == 0, rows  # whole batches only: each is one transaction
        assert answered < 5, "the report came %.2fs after the primary stopped" % answered
        assert wait_until(lambda: d.request("POST", "/todos", {"title": "after"}).status == 201,
                          5), d.log_tail()
        took = time.monotonic() - t_promoted
        total = ok(d.request("GET", "/todos?limit=1"), 200)["pagination"]["total"]
        assert total == rows + 1 == table_count(standby, db), (total, rows)
        print("    (report %.2fs after the stop: %d committed, %d unknown, %d not sent; the new "
              "primary holds %d; a write acknowledged %.2fs after the promotion)" % (
                  answered, rep["success_count"], rep["unknown_count"], rep["error_count"],
                  rows, took))
