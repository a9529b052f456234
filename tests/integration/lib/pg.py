"""PostgreSQL for the tests: a private server (conf/dev/pg.sh) run by the
unprivileged PostgreSQL user when we are root, psql (one-shot, background, or an
interactive session), and the server shared by every test of a run (get_pg;
conftest.py stops it at the end of the session)."""

import atexit
import itertools
import os
import shutil
import subprocess
import tempfile
import threading
import time

from lib import env
from lib.checks import wait_until
from lib.env import IS_ROOT, PG_RUNNER, PG_SH, PGBIN, free_port

class Postgres:
    """A private PostgreSQL server (conf/dev/pg.sh) in a temp dir, on 127.0.0.1."""

    _dbseq = itertools.count(1)

    def __init__(self, port=None, settings=None):
        self.port = port or free_port()
        self.settings = dict(settings or {})
        self.dir = tempfile.mkdtemp(prefix="todod-test-", dir=env.tmp_base())
        os.chmod(self.dir, 0o755)
        self.datadir = os.path.join(self.dir, "pgdata")
        self.log_path = os.path.join(self.dir, "postgres.log")
        self.running = False
        env.OWNED["postgres"].append(self)

    def url(self, db="postgres"):
        return "postgresql://postgres@127.0.0.1:%d/%s" % (self.port, db)

    def _pg_sh(self, *args, check=True):
        r = subprocess.run([str(PG_SH), *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           text=True)
        if check and r.returncode != 0:
            raise RuntimeError("pg.sh %s failed (%d):\n%s" % (" ".join(args), r.returncode, r.stdout))
        return r

    def start(self):
        extra = ["%s=%s" % kv for kv in self.settings.items()]
        for attempt in range(3):
            r = self._pg_sh("start", self.datadir, str(self.port), *extra, check=False)
            if r.returncode == 0:
                self.running = True
                return self
            # another process took the port in the meantime: take another one
            if attempt < 2 and ("could not bind" in r.stdout or "Address already in use" in r.stdout):
                self.port = free_port()
                continue
            raise RuntimeError("could not start PostgreSQL:\n" + r.stdout)
        return self

    def stop(self):
        if os.path.isdir(self.datadir):
            self._pg_sh("stop", self.datadir)
        self.running = False

    def postmaster_pid(self):
        """The server's PID from postmaster.pid (None when it has none)."""
        try:
            with open(os.path.join(self.datadir, "postmaster.pid")) as f:
                return int(f.readline())
        except (OSError, ValueError):
            return None

    def restart(self):
        self.stop()
        self.start()

    def status(self):
        return self._pg_sh("status", self.datadir, check=False).returncode == 0

    def _psql_cmd(self, db):
        cmd = [os.path.join(PGBIN, "psql"), "-X", "-At", "-v", "ON_ERROR_STOP=1", "-q",
               "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "-d", db, "-f", "-"]
        if IS_ROOT:
            cmd = ["runuser", "-u", PG_RUNNER, "--"] + cmd
        return cmd

    def psql(self, sql, db="postgres", timeout=60):
        """Run SQL (several statements allowed) and return stdout, stripped."""
        r = subprocess.run(self._psql_cmd(db), input=sql, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True, cwd="/", timeout=timeout)
        if r.returncode != 0:
            raise RuntimeError("psql failed (%d): %s\nSQL: %s" % (r.returncode, r.stderr.strip(), sql))
        return r.stdout.strip()

    def psql_bg(self, sql, db="postgres"):
        """Start psql on SQL in the background; returns the Popen (stdout/stderr piped)."""
        p = subprocess.Popen(self._psql_cmd(db), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, cwd="/")
        p.stdin.write(sql)
        p.stdin.close()
        return p

    def wait_sleeping(self, db, n=1, seconds=5):
        """Waits until n other sessions of db are in pg_sleep (a holder started by
        psql_bg then holds what it took before its sleep); True if they are."""
        return wait_until(lambda: self.psql(
            "SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%pg_sleep%' "
            "AND state = 'active' AND pid <> pg_backend_pid() "
            "AND datname = current_database()", db=db) == str(n), seconds)

    def lock_bg(self, db, seconds, table="todos", mode="ACCESS EXCLUSIVE"):
        """Another session holds `table` of `db` in `mode` for `seconds`; returns
        its psql Popen once that lock is granted, with the backend's pid as
        .backend_pid. Only this database's locks count: a backend of an earlier
        test whose psql was killed sleeps on (PostgreSQL does not notice the
        client is gone) and still shows as active in pg_stat_activity."""
        p = self.psql_bg("BEGIN; LOCK TABLE %s IN %s MODE; SELECT pg_sleep(%g); COMMIT;"
                         % (table, mode, seconds), db=db)
        lock = "".join(w.capitalize() for w in mode.split()) + "Lock"
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            pid = self.psql("SELECT l.pid FROM pg_locks l JOIN pg_class c ON c.oid = l.relation "
                            "WHERE c.relname = '%s' AND l.mode = '%s' AND l.granted "
                            "AND l.pid <> pg_backend_pid() AND l.database = (SELECT oid FROM "
                            "pg_database WHERE datname = current_database())" % (table, lock), db=db)
            if pid:
                p.backend_pid = int(pid.split()[0])
                return p
            if p.poll() is not None:
                break
            time.sleep(0.01)
        p.kill()
        raise AssertionError("the %s lock on %s was not taken: %r" % (mode, table, p.communicate()))

    def session(self, db="postgres", name="todod-test"):
        """An interactive psql session (PsqlSession) with application_name `name`."""
        return PsqlSession(self, db, name)

    def create_database(self, prefix="t"):
        name = "%s_%d_%d_%s" % (prefix, os.getpid(), next(self._dbseq), os.urandom(3).hex())
        self.psql('CREATE DATABASE "%s"' % name)
        return name

    def cleanup(self):
        """Stop and remove the data (used by the runner)."""
        try:
            self.stop()
        except Exception:
            pass
        shutil.rmtree(self.dir, ignore_errors=True)


class PsqlSession:
    """One psql process, one backend, kept open: send() gives it SQL and returns
    at once, wait() waits until that SQL has run (psql echoes a marker after it)
    and returns its output; run() does both. Use it as a context manager: the
    session ends (psql is stopped) with the block. psql stops at the first error
    (ON_ERROR_STOP), which wait() reports."""

    MARKER = "--- psql session: done ---"

    def __init__(self, pg, db, name):
        self.proc = subprocess.Popen(pg._psql_cmd("dbname=%s application_name=%s" % (db, name)),
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True, cwd="/")
        self.lines = []
        self.cond = threading.Condition()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        self.pid = int(self.run("SELECT pg_backend_pid();"))

    def _read(self):
        for line in self.proc.stdout:
            with self.cond:
                self.lines.append(line.rstrip("\n"))
                self.cond.notify_all()
        with self.cond:
            self.lines.append(None)  # end of output
            self.cond.notify_all()

    def send(self, sql):
        self.proc.stdin.write(sql + "\n\\echo '%s'\n" % self.MARKER)
        self.proc.stdin.flush()

    def wait(self, timeout=30):
        """The output of the oldest SQL sent and not yet waited for, once it has run."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                if self.MARKER in self.lines:
                    i = self.lines.index(self.MARKER)
                    out, self.lines = self.lines[:i], self.lines[i + 1:]
                    return "\n".join(out)
                if None in self.lines:
                    raise RuntimeError("psql session ended: %s" % "\n".join(
                        line for line in self.lines if line is not None))
                left = deadline - time.monotonic()
                if left <= 0:
                    raise RuntimeError("psql session: no answer within %gs" % timeout)
                self.cond.wait(left)

    def run(self, sql, timeout=30):
        self.send(sql)
        return self.wait(timeout)

    def close(self):
        try:
            self.proc.stdin.close()
        except Exception:
            pass
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


_shared_pg = None
_shared_lock = threading.Lock()


def get_pg():
    """The PostgreSQL shared by every test of the run (started on first use)."""
    global _shared_pg
    with _shared_lock:
        if _shared_pg is None:
            pg = Postgres()
            env.OWNED["postgres"].remove(pg)  # not owned by the current test
            try:
                pg.start()
            except Exception:
                pg.cleanup()
                raise
            _shared_pg = pg
        return _shared_pg


def shared_pg():
    """The shared server if started, else None."""
    return _shared_pg


def stop_shared_pg():
    global _shared_pg
    with _shared_lock:
        if _shared_pg is not None:
            _shared_pg.cleanup()
            _shared_pg = None


atexit.register(stop_shared_pg)
