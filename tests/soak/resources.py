"""Resource samples of the todod processes and PostgreSQL, and what must hold
of them:

- every worker's (and master's) descriptors other than TCP sockets stay as
  many as its instance's workers had after warm-up (+2); at the end, with no
  load, no socket of theirs is in CLOSE_WAIT (a connection the peer closed and
  todod never did) and no worker holds more database connections than it may
  open (db_connections + db_write_connections + 1);
- the resident memory of a release-build worker that lived at least 60 s grows
  by at most max(8 MB, 50%) from its first sample after its own warm-up
  (bench-rss measures a worker flat at 9.5-9.8 MB over 1.4 million requests: a
  leak of 100 bytes a request at this soak's rate stays under that over 300 s,
  one of a few KB does not). The ASan build is left out: its quarantine of freed
  memory grows by design, and LeakSanitizer reports its leaks at exit instead;
- PostgreSQL's client backends of the soak's database never exceed what the
  instances may open (twice that during a reload or restart, when two
  generations of workers overlap), and at the end, what they may open."""

import threading

from cluster import DB_WRITE_CONNECTIONS, POOL_SIZE, proc_fds, proc_rss_kb, tcp_sockets
from checker import Violation

PER_WORKER = 1 + DB_WRITE_CONNECTIONS + 1


class Monitor(threading.Thread):
    def __init__(self, cluster, recorder, client, stop, interval=5.0):
        super().__init__(name="monitor", daemon=True)
        self.c = cluster
        self.rec = recorder
        self.client = client
        self.stop_flag = stop
        self.interval = interval
        self.samples = []     # dicts: t, inst, pid, role, rss, fds, open
        self.pg = []          # (t, client backends)
        self.lock = threading.Lock()
        self.failure = None

    def db_ports(self):
        return {self.c.primary.port, self.c.standby.port, self.c.bouncer.port}

    def sample(self):
        t = self.rec.now()
        tcp = tcp_sockets()
        out = []
        for name, inst in self.c.instances.items():
            if not inst.running():
                continue
            opens = {}
            r = self.client.call(name, "GET", "/stats", kind="ops", fresh=True, timeout=5)
            if r.status == 200 and isinstance(r.ans, dict):
                for w in r.ans.get("workers", []):
                    opens[w.get("pid")] = w.get("open_connections")
            pids = [(inst.d.pid, "master")] + [(p, "worker") for p in inst.worker_pids()]
            for pid, role in pids:
                fds = proc_fds(pid, tcp)
                if fds is None:
                    continue
                out.append({"t": t, "inst": name, "pid": pid, "role": role, "build": inst.build,
                            "rss": proc_rss_kb(pid), "fds": fds, "open": opens.get(pid)})
        try:
            pg = (t, self.c.pg_connections())
        except Exception:  # noqa: BLE001 - PostgreSQL down at that moment
            pg = None
        with self.lock:
            self.samples.extend(out)
            if pg is not None:
                self.pg.append(pg)
        return out

    def run(self):
        try:
            while not self.stop_flag.wait(self.interval):
                self.sample()
        except Exception:  # noqa: BLE001
            import traceback
            self.failure = "monitor: " + traceback.format_exc()


def check(monitor, final, warmup, t_end, reload_windows):
    """Violations from the samples; final: the samples taken at the end, idle."""
    v = []
    db_ports = monitor.db_ports()
    with monitor.lock:
        samples = list(monitor.samples)
        pg = list(monitor.pg)
    instances = monitor.c.instances
    workers = {n: max(2, int(i.d.conf["workers"])) for n, i in instances.items()}
    direct = sum(workers[n] for n, i in instances.items() if i.path != "pgbouncer")
    bound = direct * PER_WORKER + POOL_SIZE

    # descriptors that are not TCP sockets: flat
    base = {}
    for s in samples:
        if warmup <= s["t"] <= warmup + 30 and s["role"] == "worker":
            base[s["inst"]] = max(base.get(s["inst"], 0), s["fds"]["other"])
    for s in final:
        key = s["inst"]
        if s["role"] == "worker" and key in base and s["fds"]["other"] > base[key] + 2:
            v.append(Violation(t_end, "resources", "worker %d of %s holds %d descriptors that "
                               "are not sockets; its instance's workers held at most %d after "
                               "warm-up" % (s["pid"], key, s["fds"]["other"], base[key])))
        if s["fds"]["close_wait"]:
            v.append(Violation(t_end, "resources", "%s %d of %s holds %d sockets in CLOSE_WAIT "
                               "with no load (connections it never closed): %s"
                               % (s["role"], s["pid"], key, s["fds"]["close_wait"],
                                  [x for x in s["fds"]["tcp"] if x[2] == "CLOSE_WAIT"][:8])))
        db = [x for x in s["fds"]["tcp"] if x[1] in db_ports and x[2] == "ESTABLISHED"]
        if s["role"] == "worker" and len(db) > PER_WORKER:
            v.append(Violation(t_end, "resources", "worker %d of %s holds %d database "
                               "connections (at most %d)" % (s["pid"], key, len(db), PER_WORKER)))

    # resident memory of long-lived release workers
    by_pid = {}
    for s in samples + final:
        if s["role"] == "worker" and s["build"] == "release" and s["rss"]:
            by_pid.setdefault(s["pid"], []).append(s)
    for pid, ss in by_pid.items():
        first_seen = ss[0]["t"]
        later = [s for s in ss if s["t"] >= max(warmup, first_seen + 20)]
        if len(later) < 2 or later[-1]["t"] - later[0]["t"] < 60:
            continue
        a, b = later[0]["rss"], later[-1]["rss"]
        if b - a > max(8192, a // 2):
            v.append(Violation(later[-1]["t"], "resources", "worker %d of %s: RSS %d kB at "
                               "+%.0fs, %d kB at +%.0fs" % (pid, ss[0]["inst"], a, later[0]["t"],
                                                          b, later[-1]["t"])))

    # PostgreSQL connections
    for t, n in pg:
        in_reload = any(w0 <= t <= w1 for w0, w1 in reload_windows)
        if n > bound * (2 if in_reload else 1) + 2:
            v.append(Violation(t, "resources", "%d client backends of the soak's database (the "
                               "instances may open %d)" % (n, bound)))
            break
    summary = {}
    for s in final:
        if s["role"] != "worker":
            continue
        db = sum(1 for x in s["fds"]["tcp"] if x[1] in db_ports and x[2] == "ESTABLISHED")
        summary.setdefault(s["inst"], []).append(
            "%d: %d kB, %d fds (%d not sockets, %d to the database, %d CLOSE_WAIT)"
            % (s["pid"], s["rss"] or 0, s["fds"]["total"], s["fds"]["other"], db,
               s["fds"]["close_wait"]))
    return v, {"pg_bound": bound, "pg_samples": pg, "workers": summary, "base": base}
