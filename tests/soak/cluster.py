"""What the soak runs against, all on loopback, every process started here and
stopped here by PID:

- a PostgreSQL primary and a streaming standby of it (pg_basebackup -R);
- PgBouncer 1.18 in transaction pooling in front of the primary;
- three todod instances, each with two workers:
    a  127.0.0.2  release build, database_url naming the primary and the standby
                  (target_session_attrs=read-write), workers run as `nobody`
    b  127.0.0.3  ASan+UBSan build, straight to the primary; its perf_nodes also
                  name the fake peer
    c  127.0.0.4  release build, through PgBouncer with db_prepared = off
  each with perf_nodes naming the other two, and an OTLP endpoint;
- the OTLP collector stub and the fake peer (peers.py), threads of this process.

PostgreSQL and PgBouncer run as the PostgreSQL user (tests/integration/lib/pg.py does that)."""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "integration"))

from lib import env  # noqa: E402
from lib.env import PGBIN, free_port  # noqa: E402
from lib.pg import Postgres  # noqa: E402
from lib.todod import Todod  # noqa: E402
from test_db_engines import PgBouncer, _make_standby, _run_as_runner  # noqa: E402

from peers import FakePeer, OtlpSink  # noqa: E402

SAN_ENV = {
    "ASAN_OPTIONS": "abort_on_error=1:halt_on_error=1:detect_leaks=1:print_summary=1",
    "UBSAN_OPTIONS": "print_stacktrace=1:halt_on_error=1:abort_on_error=1",
    "LSAN_OPTIONS": "print_suppressions=0",
}

REQUEST_TIMEOUT = 3
POOL_SIZE = 6            # PgBouncer's server connections: fewer than c's own
WORKERS = 2
DB_WRITE_CONNECTIONS = 4  # todod's default; a worker holds at most 1 + this + 1


class Bouncer(PgBouncer):
    """The integration tests' PgBouncer, retrying a failed server login after 1 s
    instead of its default 15 (server_login_retry): a PostgreSQL restart or
    freeze then costs todod's clients behind it about as long as those that
    reach PostgreSQL directly, and the soak can tell PgBouncer's back-off from
    todod's."""

    def _write_config(self):
        super()._write_config()
        with open(self.ini, "a") as f:
            f.write("server_login_retry = 1\n")


class Instance:
    """One todod instance: its Todod (tests/integration/lib/todod.py), what build it runs, and the
    lock that keeps two lifecycle faults (kill, stop, reload) off it at once."""

    def __init__(self, name, d, build, path):
        self.name = name
        self.d = d
        self.build = build    # "release" or "asan+ubsan"
        self.path = path      # how it reaches the database
        self.lock = threading.Lock()
        self.env = dict(SAN_ENV) if build != "release" else None
        self.killed = set()   # pids the fault schedule killed
        self.masters = []     # every master pid it ran

    @property
    def addr(self):
        return (self.d.host, self.d.port)

    def start(self, wait="ready", timeout=30):
        self.d.start(wait=wait, env=self.env, timeout=timeout)
        self.masters.append(self.d.pid)

    def worker_pids(self):
        return self.d.worker_pids()

    def running(self):
        return self.d.running()


class Cluster:
    def __init__(self, binaries, say):
        self.binaries = binaries   # {"release": path, "asan+ubsan": path}
        self.say = say
        self.primary = self.standby = self.bouncer = None
        self.sink = self.peer = None
        self.db = None
        self.instances = {}
        self.frozen = set()        # pids stopped with SIGSTOP and not yet continued
        self.frozen_lock = threading.Lock()
        self.helpers = set()       # psql processes started in the background
        self.helpers_lock = threading.Lock()

    # ------------------------------------------------------------------ start, stop

    def start(self):
        self.primary = Postgres(settings={"wal_level": "replica", "max_wal_senders": "5",
                                          "hot_standby": "on", "wal_sender_timeout": "5s"})
        self.primary.start()
        self.db = self.primary.create_database("soak")
        self.say("postgres primary on 127.0.0.1:%d, database %s" % (self.primary.port, self.db))
        self.standby = _make_standby(self.primary, {"hot_standby": "on",
                                                    "wal_retrieve_retry_interval": "1s"})
        self.say("postgres standby on 127.0.0.1:%d (streaming)" % self.standby.port)
        self.bouncer = Bouncer(self.primary, pool_size=POOL_SIZE).start()
        self.say("pgbouncer on 127.0.0.1:%d, transaction pooling, pool %d"
                 % (self.bouncer.port, POOL_SIZE))
        self.sink = OtlpSink()
        hosts = {"a": "127.0.0.2", "b": "127.0.0.3", "c": "127.0.0.4"}
        ports = {k: free_port(h) for k, h in hosts.items()}
        url = {k: "http://%s:%d" % (hosts[k], ports[k]) for k in hosts}
        self.peer = FakePeer("127.0.0.5", (hosts["a"], ports["a"]))
        common = {"workers": WORKERS, "request_timeout": REQUEST_TIMEOUT,
                  "keepalive_timeout": 60, "max_body_size": "16k", "drain_delay": 0,
                  "otlp_endpoint": self.sink.endpoint, "trace_sample_ratio": 0.2,
                  "log_level": "info"}
        multi = ("host=127.0.0.1,127.0.0.1 port=%d,%d dbname=%s user=postgres "
                 "target_session_attrs=read-write connect_timeout=2"
                 % (self.primary.port, self.standby.port, self.db))
        specs = {
            "a": ("release", "primary or standby (multi-host)",
                  {"database_url": multi, "user": "nobody", "shutdown_timeout": 2,
                   "perf_nodes": "%s,%s" % (url["b"], url["c"])}),
            "b": ("asan+ubsan", "primary",
                  {"database_url": self.primary.url(self.db), "shutdown_timeout": 3,
                   "perf_nodes": "%s,%s,%s" % (url["a"], url["c"], self.peer.base_url)}),
            "c": ("release", "pgbouncer",
                  {"database_url": self.bouncer.url(self.db), "db_prepared": False,
                   "shutdown_timeout": 1, "perf_nodes": "%s,%s" % (url["a"], url["b"])}),
        }
        for name, (build, path, conf) in specs.items():
            conf = dict(common, **conf)
            d = Todod(pg=self.primary, db=self.db, binary=self.binaries[build],
                      listen="%s:%d" % (hosts[name], ports[name]), **conf)
            self.instances[name] = Instance(name, d, build, path)
        for inst in self.instances.values():
            inst.start(timeout=60)
            self.say("todod %s on %s:%d (%s, %s), log %s" % (
                inst.name, inst.d.host, inst.d.port, inst.build, inst.path, inst.d.log_path))
        self.say("fake peer on %s (relays to a), OTLP sink on %s"
                 % (self.peer.base_url, self.sink.endpoint))

    def stop(self, keep=False):
        """Stop everything started, by PID, whatever state it is in."""
        self.thaw_all()
        with self.helpers_lock:
            for p in list(self.helpers):
                if p.poll() is None:
                    p.kill()
                    p.wait(5)
        for inst in self.instances.values():
            try:
                inst.d.shutdown()
            except Exception as e:  # noqa: BLE001 - keep stopping the rest
                self.say("stopping todod %s: %r" % (inst.name, e))
            inst.d.keep = keep
            inst.d.cleanup(failed=keep)
        for thing in (self.peer, self.sink):
            if thing is not None:
                thing.close()
        if self.bouncer is not None:
            self.bouncer.cleanup(keep=keep)
        for pg in (self.standby, self.primary):
            if pg is None:
                continue
            try:
                pg.stop()
            except Exception:  # noqa: BLE001
                self._pg_ctl(pg, "stop", "-m", "immediate")
            if not keep:
                shutil.rmtree(pg.dir, ignore_errors=True)

    # ------------------------------------------------------------------ PostgreSQL

    def _pg_ctl(self, pg, *args, timeout=90):
        return _run_as_runner([os.path.join(PGBIN, "pg_ctl"), "-D", pg.datadir, *args,
                               "-w", "-t", "60"], timeout=timeout)

    def pg_stop(self, mode):
        self._pg_ctl(self.primary, "stop", "-m", mode)

    def pg_start(self):
        self.primary.start()

    def psql(self, sql, timeout=20):
        return self.primary.psql(sql, db=self.db, timeout=timeout)

    def psql_bg(self, sql):
        p = self.primary.psql_bg(sql, db=self.db)
        with self.helpers_lock:
            self.helpers.add(p)
        return p

    def psql_done(self, p, timeout):
        """Wait for a psql_bg (its output is a few lines: the pipes cannot fill)."""
        try:
            p.wait(timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(10)
        with self.helpers_lock:
            self.helpers.discard(p)
        text = p.stdout.read() + p.stderr.read()
        p.stdout.close()
        p.stderr.close()
        return p.returncode, text

    def postmaster_pid(self):
        with open(os.path.join(self.primary.datadir, "postmaster.pid")) as f:
            return int(f.readline())

    def backends(self):
        """todod's backends of the soak's database (application_name 'todod'; those
        of PgBouncer's server connections too, whatever name they carry; not
        ours, psql's): [(pid, application_name, state, query)]."""
        out = self.psql("SELECT pid, application_name, state, left(query, 60) FROM "
                        "pg_stat_activity WHERE datname = current_database() AND "
                        "backend_type = 'client backend' AND pid <> pg_backend_pid() AND "
                        "application_name <> 'psql' ORDER BY pid", timeout=5)
        rows = []
        for line in out.splitlines():
            pid, app, state, query = (line.split("|", 3) + ["", "", ""])[:4]
            rows.append((int(pid), app, state, query))
        return rows

    def freeze(self, pids):
        with self.frozen_lock:
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGSTOP)
                    self.frozen.add(pid)
                except ProcessLookupError:
                    pass

    def thaw(self, pids):
        with self.frozen_lock:
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGCONT)
                except ProcessLookupError:
                    pass
                self.frozen.discard(pid)

    def thaw_all(self):
        with self.frozen_lock:
            pids = list(self.frozen)
        self.thaw(pids)

    def frozen_count(self):
        with self.frozen_lock:
            return len(self.frozen)

    def perf_inserts_running(self):
        """Backends executing (or stopped inside) a performance-test batch."""
        out = self.psql("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                        "AND state <> 'idle' AND query LIKE 'INSERT INTO todos (id, title, done) "
                        "SELECT unnest%'", timeout=5)
        return int(out)

    def perf_rows(self):
        return int(self.psql("SELECT count(*) FROM todos WHERE title LIKE "
                             "'Performance Test Todo #%'", timeout=30))

    def pg_connections(self):
        """Client backends of the soak's database (ours excluded)."""
        return int(self.psql("SELECT count(*) FROM pg_stat_activity WHERE datname = "
                             "current_database() AND backend_type = 'client backend' AND "
                             "application_name <> 'psql'", timeout=5))

    def table(self):
        """Every row but the performance test's: {id: (title, done)}, and the
        list of titles (duplicates kept)."""
        out = self.psql("SELECT json_build_object('id', id, 'title', title, 'done', done) FROM "
                        "todos WHERE title NOT LIKE 'Performance Test Todo #%'", timeout=60)
        rows = {}
        titles = []
        for line in out.splitlines():
            o = json.loads(line)
            rows[o["id"]] = (o["title"], o["done"])
            titles.append(o["title"])
        return rows, titles


# --------------------------------------------------------------------------- /proc

def proc_rss_kb(pid):
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


_TCP_STATES = {"01": "ESTABLISHED", "06": "TIME_WAIT", "08": "CLOSE_WAIT", "0A": "LISTEN"}


def tcp_sockets():
    """inode -> (local port, remote port, state) of every TCP socket."""
    out = {}
    for path in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(path) as f:
                next(f)
                for line in f:
                    p = line.split()
                    local, remote, st, inode = p[1], p[2], p[3], p[9]
                    out[inode] = (int(local.rsplit(":", 1)[1], 16),
                                  int(remote.rsplit(":", 1)[1], 16),
                                  _TCP_STATES.get(st, st))
        except OSError:
            pass
    return out


_SOCKET = re.compile(r"socket:\[(\d+)\]")


def proc_fds(pid, tcp):
    """A process's descriptors by kind: {"other": n, "db": n, "client": n,
    "tcp_other": n, "close_wait": n, "total": n}, or None when it is gone.
    tcp: tcp_sockets(); db_ports and the listening port come from the caller."""
    try:
        names = os.listdir("/proc/%d/fd" % pid)
    except OSError:
        return None
    kinds = {"total": 0, "other": 0, "tcp": [], "close_wait": 0}
    for fd in names:
        try:
            target = os.readlink("/proc/%d/fd/%s" % (pid, fd))
        except OSError:
            continue
        kinds["total"] += 1
        m = _SOCKET.match(target)
        if m and m.group(1) in tcp:
            t = tcp[m.group(1)]
            kinds["tcp"].append(t)
            if t[2] == "CLOSE_WAIT":
                kinds["close_wait"] += 1
        else:
            kinds["other"] += 1
    return kinds


def wait_gone(pids, timeout):
    """Wait until none of pids is alive (zombies count as gone); returns those
    still alive."""
    deadline = time.monotonic() + timeout
    alive = list(pids)
    while True:
        alive = [p for p in alive if _alive(p)]
        if not alive or time.monotonic() >= deadline:
            return alive
        time.sleep(0.05)


def _alive(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def ppid(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            return int(f.read().rsplit(")", 1)[1].split()[1])
    except OSError:
        return None


__all__ = ["Cluster", "Instance", "env", "free_port", "proc_rss_kb", "proc_fds", "tcp_sockets",
           "wait_gone", "ppid", "REQUEST_TIMEOUT"]
