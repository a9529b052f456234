"""The fault schedule: made from the seed before the load starts (kind, time,
parameters), then played, each fault in a thread of its own at its time, so
that faults overlap as they fall.

Every fault played leaves a Fault: when it began and ended, what it did, and
the windows in which it explains what clients saw (checker.py reads those):

    conn    connection errors on an instance (a process killed under them)
    refused connections refused by an instance (its socket closed)
    race    a request crossing an idle keep-alive close (drain, reload)
    drain   a trickled request cut because it did not fit in shutdown_timeout
    ambig   "may have been applied" answers: the database connection broke
            (PostgreSQL restarted or stopped, a backend stopped or terminated;
            up to 1 s after), or the instance stopped or reloaded (a request
            waiting on the database past shutdown_timeout)
    busy    503s that say "not applied" and read 503s: the database slow, locked
            or gone, the instance (re)starting, until SETTLE after the fault

Two lifecycle faults never run on one instance at once, nor two PostgreSQL
restarts or freezes; a fault that cannot get its turn within 10 s is skipped
(and counted as skipped)."""

import http.client
import os
import random
import signal
import threading
import time

from cluster import REQUEST_TIMEOUT, free_port, ppid, proc_fds, tcp_sockets, wait_gone
from peers import GARBAGE_MODES

# kind -> weight in the random part of the schedule
KINDS = {
    "kill_worker": 3,
    "kill_master": 2,
    "sighup": 3,
    "bad_reload": 1,
    "sigterm_restart": 2,
    "pg_restart": 1,
    "stop_backend": 2,
    "stop_primary": 1,
    "terminate_backend": 2,
    "lock_table": 2,
    "row_locks": 2,
    "deep_pages": 2,
    "garbage_peer": 2,
    "otlp_down": 1,
}

SETTLE = REQUEST_TIMEOUT + 2.0   # how long a fault's effects may outlast it
INSTANCES = ("a", "b", "c")
# The instance behind PgBouncer, whose pool is smaller than its connections:
# while locks hold every server connection, its next transactions wait in the
# pooler's queue, past their statement_timeout's reach. todod cannot tell that
# queue from a hung server: it drops the connection and answers those writes
# "may have been applied", truthfully (todod(8), conf/README.md "PgBouncer").
POOLED = "c"


class Fault:
    def __init__(self, n, t, kind, params):
        self.n, self.t, self.kind, self.params = n, t, kind, params
        self.inst = None           # the instance it was played on, if one
        self.at = None             # when its signal was sent, if one
        self.began = self.ended = None
        self.skipped = None        # why, when it was not played
        self.notes = []            # what happened, for the report
        self.windows = []          # (what, instance or None for all, t0, t1)
        self.problems = []         # violations it saw itself

    def describe(self):
        p = " ".join("%s=%s" % kv for kv in sorted(self.params.items()))
        return "%s %s" % (self.kind, p)


def make_schedule(seed, seconds, warmup, cooldown):
    """[(t, kind, params)] for a run of `seconds`: one of each kind first (when
    there is room), then more at random, about one every 5 s."""
    rng = random.Random("%s:faults" % seed)
    lo, hi = warmup, max(warmup + 1.0, seconds - cooldown)
    span = hi - lo
    kinds = list(KINDS)
    rng.shuffle(kinds)
    n = max(len(kinds), int(span / 5.0))
    picks = kinds[:n] if span >= 2.5 * len(kinds) else kinds[:max(1, int(span / 2.5))]
    while len(picks) < n:
        picks.append(rng.choices(list(KINDS), weights=list(KINDS.values()))[0])
    times = sorted(rng.uniform(lo, hi) for _ in picks)
    rng.shuffle(picks)   # the first pass is not all at the start
    out = []
    for t, kind in zip(times, picks):
        out.append((round(t, 2), kind, _params(rng, kind)))
    return out


def _params(rng, kind):
    inst = rng.choice(INSTANCES)
    if kind == "kill_worker":
        return {"inst": inst, "worker": rng.randrange(2)}
    if kind == "kill_master":
        return {"inst": inst, "down": round(rng.uniform(0.2, 2.0), 2)}
    if kind == "sighup":
        # target "perf": the instance coordinating the performance test then running
        return {"inst": inst, "target": rng.choice(["given", "given", "perf"]),
                "lock": rng.random() < 0.3,
                "trace_sample_ratio": rng.choice([0.05, 0.2, 0.5]),
                "keepalive_timeout": rng.choice([30, 60])}
    if kind == "bad_reload":
        return {"inst": inst, "how": rng.choice(["unknown key", "new listen, unknown user"])}
    if kind == "sigterm_restart":
        # lock: the shared rows locked from psql across the stop, so that writes
        # wait on the database past shutdown_timeout
        return {"inst": inst, "down": round(rng.uniform(0.2, 2.0), 2), "lock": rng.random() < 0.5}
    if kind == "pg_restart":
        return {"mode": rng.choice(["fast", "immediate"]), "down": round(rng.uniform(0.1, 2.0), 2)}
    if kind == "stop_backend":
        # target "perf": a backend inside a performance-test batch (waited for)
        return {"pick": rng.randrange(1000), "seconds": round(rng.uniform(1.0, 5.0), 2),
                "target": rng.choice(["any", "any", "perf"])}
    if kind == "stop_primary":
        return {"seconds": round(rng.uniform(1.0, 4.0), 2)}
    if kind == "terminate_backend":
        return {"which": rng.choice(["one", "one", "all"]), "pick": rng.randrange(1000)}
    if kind == "lock_table":
        return {"seconds": round(rng.uniform(1.0, 5.0), 2)}
    if kind == "row_locks":
        return {"rows": rng.randint(1, 4), "pick": rng.randrange(1000),
                "seconds": round(rng.uniform(1.0, 6.0), 2)}
    if kind == "deep_pages":
        return {"inst": inst, "readers": rng.randint(2, 4),
                "page": rng.choice([100000, 1000000, 100000000]), "limit": rng.choice([10, 100])}
    if kind == "garbage_peer":
        return {"mode": rng.choice(GARBAGE_MODES)}
    if kind == "otlp_down":
        return {"mode": rng.choice(["closed", "hang", "503"]),
                "seconds": round(rng.uniform(2.0, 8.0), 2)}
    raise ValueError(kind)


class Injector:
    """Plays a schedule against a cluster. hot_ids() and owned_ids() give the
    rows a row-lock fault may take; perf_request(mode) asks the performance
    test runner for a test through the fake peer."""

    def __init__(self, cluster, recorder, schedule, say, hot_ids, owned_ids, deep_client):
        self.perf_now = lambda: None   # the instance coordinating a test now (set by soak.py)
        self.c = cluster
        self.rec = recorder
        self.schedule = schedule
        self.say = say
        self.hot_ids = hot_ids
        self.owned_ids = owned_ids
        self.deep = deep_client
        self.faults = []
        self.threads = []
        self.pg_lock = threading.Lock()
        self.stop_flag = threading.Event()
        self.garbage_pending = []   # faults whose garbage mode waits for a test
        self.lock = threading.Lock()

    def run(self):
        """Plays the schedule until its end or stop(); returns when every
        fault started has ended."""
        for n, (t, kind, params) in enumerate(self.schedule):
            while not self.stop_flag.is_set() and self.rec.now() < t:
                self.stop_flag.wait(min(0.1, max(0.0, t - self.rec.now())))
            if self.stop_flag.is_set():
                break
            f = Fault(n, t, kind, params)
            with self.lock:
                self.faults.append(f)
            th = threading.Thread(target=self._play, args=(f,), daemon=True,
                                  name="fault-%d" % n)
            self.threads.append(th)
            th.start()
        self.join()

    def join(self, timeout=120):
        deadline = time.monotonic() + timeout
        for th in self.threads:
            th.join(max(0.1, deadline - time.monotonic()))

    def stop(self):
        self.stop_flag.set()

    def _play(self, f):
        f.began = self.rec.now()
        self.say("+%7.2fs fault %d: %s" % (f.began, f.n, f.describe()))
        try:
            getattr(self, "_" + f.kind)(f, **f.params)
        except Exception as e:  # noqa: BLE001 - a fault that failed is reported
            f.notes.append("failed: %r" % e)
            f.problems.append("the fault %s could not be played: %r" % (f.kind, e))
        finally:
            if f.ended is None:
                f.ended = self.rec.now()

    def _window(self, f, what, inst, t0, t1):
        f.windows.append((what, inst, t0, t1))

    def _turn(self, lock, f):
        if lock.acquire(timeout=10):
            return True
        f.skipped = "its target was busy with another fault"
        return False

    # ------------------------------------------------------------------ todod

    def _kill_worker(self, f, inst, worker):
        i = self.c.instances[inst]
        f.inst = inst
        if not self._turn(i.lock, f):
            return
        try:
            pids = i.worker_pids()
            if not pids:
                f.skipped = "instance down"
                return
            pid = pids[worker % len(pids)]
            t = self.rec.now()
            os.kill(pid, signal.SIGKILL)
            i.killed.add(pid)
            f.notes.append("killed worker %d of %s" % (pid, inst))
            self._window(f, "conn", inst, t - 0.05, t + 1.0)
            self._window(f, "busy", inst, t - 0.05, t + SETTLE)
            # the master starts a replacement at once
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline and len(i.worker_pids()) < len(pids):
                time.sleep(0.05)
        finally:
            i.lock.release()

    def _kill_master(self, f, inst, down):
        i = self.c.instances[inst]
        f.inst = inst
        if not self._turn(i.lock, f):
            return
        try:
            if not i.running():
                f.skipped = "instance down"
                return
            master, workers = i.d.pid, i.worker_pids()
            t = self.rec.now()
            os.kill(master, signal.SIGKILL)
            i.killed.add(master)
            i.d.proc.wait(10)
            # the workers are told (PR_SET_PDEATHSIG) and drain: shutdown_timeout at most,
            # and the 2 s the master would give them before SIGKILL
            grace = float(i.d.conf["shutdown_timeout"]) + 3.0
            left = wait_gone(workers, grace)
            if left:
                f.problems.append(
                    "workers outlive their killed master: %s of %s still run %.0f s after kill "
                    "-9 of master %d (ppid now %s)" % (left, inst, grace, master,
                                                       [ppid(p) for p in left]))
                for p in left:
                    try:
                        os.kill(p, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                wait_gone(left, 5.0)
            i.killed.update(workers)
            f.notes.append("killed master %d of %s (workers %s)" % (master, inst, workers))
            time.sleep(down)
            try:
                self._restart(f, i)
            finally:
                up = self.rec.now()
                self._window(f, "conn", inst, t - 0.05, up + 0.5)
                self._window(f, "refused", inst, t - 0.05, up + 0.5)
                # the orphaned workers drain as a SIGTERM makes them: what still
                # waits at shutdown_timeout is answered "may have been applied"
                self._window(f, "ambig", inst, t - 0.05, up + 0.5)
                self._window(f, "busy", inst, t - 0.05, up + SETTLE)
        finally:
            i.lock.release()

    def _restart(self, f, i):
        """Start instance i again; returns when it answers HTTP."""
        for _ in range(3):
            try:
                i.start(wait="http", timeout=30)
                return
            except Exception as e:  # noqa: BLE001
                f.problems.append("todod %s did not start again: %s" % (i.name, str(e)[:2000]))
                i.d.kill()
                time.sleep(1)
        raise RuntimeError("todod %s does not start" % i.name)

    def _lock_hot_rows(self, f, seconds):
        """Lock the shared rows from psql for `seconds` (in the background);
        returns the psql process."""
        ids = list(self.hot_ids())
        t = self.rec.now()
        p = self.c.psql_bg("BEGIN; SELECT id FROM todos WHERE id IN (%s) FOR UPDATE; "
                           "SELECT pg_sleep(%s); ROLLBACK;"
                           % (",".join("'%s'" % x for x in ids), seconds))
        self._window(f, "busy", None, t, t + seconds + SETTLE)
        time.sleep(0.5)   # writes to them pile up behind the lock
        return p

    def _sigterm_restart(self, f, inst, down, lock):
        i = self.c.instances[inst]
        f.inst = inst
        if not self._turn(i.lock, f):
            return
        locker = None
        try:
            if not i.running():
                f.skipped = "instance down"
                return
            limit = float(i.d.conf.get("shutdown_timeout", 10)) + 2 + 3
            if lock:
                locker = self._lock_hot_rows(f, float(i.d.conf["shutdown_timeout"]) + 1.5)
            t = f.at = self.rec.now()
            pids = [i.d.pid] + i.worker_pids()
            try:
                rc = i.d.stop(signal.SIGTERM, timeout=limit)
            except TimeoutError:
                rc = None
                f.problems.append("todod %s did not exit within %.0f s of SIGTERM" % (inst, limit))
            stopped = self.rec.now()
            if rc is not None and rc != 0:
                f.problems.append("todod %s exited with %s after SIGTERM (want 0)" % (inst, rc))
            left = wait_gone(pids[1:], 1.0)
            if left:
                f.problems.append("workers %s of %s still run after their master exited"
                                  % (left, inst))
                for p in left:
                    try:
                        os.kill(p, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
            f.notes.append("SIGTERM to %s%s: exit %s after %.2f s" % (
                inst, " (shared rows locked)" if lock else "", rc, stopped - t))
            time.sleep(down)
            try:
                self._restart(f, i)
            finally:
                up = self.rec.now()
                self._window(f, "refused", inst, t, up + 0.5)
                self._window(f, "race", inst, t, stopped + 0.5)
                self._window(f, "drain", inst, t, stopped + 0.5)
                self._window(f, "ambig", inst, t, stopped + 0.5)
                self._window(f, "busy", inst, t, up + SETTLE)
        finally:
            i.lock.release()
            if locker is not None:
                self.c.psql_done(locker, 30)

    def _sighup(self, f, inst, target, lock, **changes):
        if target == "perf":
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and self.perf_now() is None:
                time.sleep(0.05)
            inst = self.perf_now() or inst
            f.notes.append("reload of the coordinator of a running test" if self.perf_now()
                           else "no test ran within 10 s")
        i = self.c.instances[inst]
        f.inst = inst
        if not self._turn(i.lock, f):
            return
        locker = None
        try:
            if not i.running():
                f.skipped = "instance down"
                return
            if lock:
                locker = self._lock_hot_rows(f, float(i.d.conf["shutdown_timeout"]) + 1.5)
            old = set(i.worker_pids())
            i.d.write_conf(**changes)
            t = f.at = self.rec.now()
            i.d.signal(signal.SIGHUP)
            # the old workers go within shutdown_timeout, or once the performance
            # test they take part in is over (todod(8), SIGUSR2: a retired worker runs it to its end)
            limit = float(i.d.conf.get("shutdown_timeout", 10)) + 5
            deadline = time.monotonic() + limit
            hard = time.monotonic() + 300
            done = False
            while time.monotonic() < min(deadline, hard):
                now = set(i.worker_pids())
                if now and not (now & old) and len(now) >= int(i.d.conf["workers"]):
                    done = True
                    break
                if self.perf_now() is not None:
                    deadline = time.monotonic() + limit
                time.sleep(0.05)
            end = self.rec.now()
            if not done:
                f.problems.append("reload of %s not over %.0f s after the signal (nor %.0f s "
                                  "after the last performance test): workers %s, before %s"
                                  % (inst, self.rec.now() - t, limit, sorted(i.worker_pids()),
                                     sorted(old)))
            f.notes.append("reload of %s%s over in %.2f s" % (
                inst, " (shared rows locked)" if lock else "", end - t))
            self._window(f, "race", inst, t, end + 0.5)
            self._window(f, "drain", inst, t, end + 0.5)
            self._window(f, "ambig", inst, t, end + 0.5)
            self._window(f, "busy", inst, t, end + SETTLE)
        finally:
            i.lock.release()
            if locker is not None:
                self.c.psql_done(locker, 30)

    def _bad_reload(self, f, inst, how):
        """SIGHUP with a configuration that must be refused: the instance keeps
        its workers and its address, and fails nothing (no window)."""
        i = self.c.instances[inst]
        f.inst = inst
        if not self._turn(i.lock, f):
            return
        try:
            if not i.running():
                f.skipped = "instance down"
                return
            before = dict(i.d.conf)
            host, port = i.addr
            old = set(i.worker_pids())
            new_port = None
            if how == "unknown key":
                i.d.write_conf(soak_no_such_key=1)
            else:
                new_port = free_port(host)
                i.d.write_conf(listen="%s:%d" % (host, new_port), user="soak-no-such-user")
            i.d.signal(signal.SIGHUP)
            time.sleep(2.0)
            now = set(i.worker_pids())
            i.d.conf = before
            i.d.write_conf()   # the file as the running configuration is; no signal
            if now != old:
                f.problems.append("a reload of %s with a bad configuration (%s) replaced its "
                                  "workers %s with %s" % (inst, how, sorted(old), sorted(now)))
            fds = proc_fds(i.d.pid, tcp_sockets()) or {"tcp": []}
            listening = sorted({x[0] for x in fds["tcp"] if x[2] == "LISTEN"})
            if new_port in listening or port not in listening:
                f.problems.append("after a refused reload (%s), the master of %s listens on %s "
                                  "(its address: port %d; the refused one: %s)"
                                  % (how, inst, listening, port, new_port))
            try:
                c = http.client.HTTPConnection(host, port, timeout=5)
                c.request("GET", "/live")
                status = c.getresponse().status
                c.close()
            except OSError as e:
                status = e
            if status != 200:
                f.problems.append("after a refused reload (%s), %s no longer answers on its "
                                  "address: GET /live %s" % (how, inst, status))
            f.notes.append("refused reload of %s (%s): workers %s, GET /live %s"
                           % (inst, how, "kept" if now == old else "replaced", status))
        finally:
            i.lock.release()

    # ------------------------------------------------------------------ PostgreSQL

    def _pg_restart(self, f, mode, down):
        if not self._turn(self.pg_lock, f):
            return
        try:
            t = self.rec.now()
            self.c.pg_stop(mode)
            time.sleep(down)
            self.c.pg_start()
            up = self.rec.now()
            f.notes.append("PostgreSQL down %.2f s (%s)" % (up - t, mode))
            self._window(f, "ambig", None, t, up + 1.0)
            self._window(f, "busy", None, t, up + SETTLE)
        finally:
            self.pg_lock.release()

    def _stop_primary(self, f, seconds):
        if not self._turn(self.pg_lock, f):
            return
        try:
            pm = self.c.postmaster_pid()
            kids = []
            t = self.rec.now()
            self.c.freeze([pm])   # first: it forks no more
            try:
                with open("/proc/%d/task/%d/children" % (pm, pm)) as fh:
                    kids = [int(x) for x in fh.read().split()]
                self.c.freeze(kids)
                time.sleep(seconds)
            finally:
                self.c.thaw(kids)
                self.c.thaw([pm])
            end = self.rec.now()
            f.notes.append("primary (postmaster %d and %d children) stopped %.2f s"
                           % (pm, len(kids), end - t))
            self._window(f, "ambig", None, t, end + 1.0)
            self._window(f, "busy", None, t, end + SETTLE)
        finally:
            self.pg_lock.release()

    def _backends(self, f):
        try:
            backends = self.c.backends()
        except Exception:  # noqa: BLE001 - PostgreSQL restarting or frozen
            f.skipped = "PostgreSQL did not answer"
            return None
        if not backends:
            f.skipped = "no backend"
        return backends or None

    def _stop_backend(self, f, pick, seconds, target):
        backends = self._backends(f)
        if backends is None:
            return
        if target == "perf":
            deadline = time.monotonic() + 10
            while True:
                busy = [b for b in backends if b[3].startswith("INSERT INTO todos (id, title, "
                                                              "done) SELECT unnest")
                        and b[2] != "idle"]
                if busy or time.monotonic() > deadline:
                    break
                time.sleep(0.05)
                backends = self._backends(f)
                if backends is None:
                    return
            backends = busy or backends
        pid, app, state, query = backends[pick % len(backends)]
        t = self.rec.now()
        self.c.freeze([pid])
        try:
            time.sleep(seconds)
        finally:
            self.c.thaw([pid])
        end = self.rec.now()
        f.notes.append("backend %d (%s, %s: %s) stopped %.2f s" % (pid, app, state, query,
                                                                   end - t))
        self._window(f, "ambig", None, t, end + 1.0)
        self._window(f, "busy", None, t, end + SETTLE)

    def _terminate_backend(self, f, which, pick):
        backends = self._backends(f)
        if backends is None:
            return
        pids = [b[0] for b in backends]
        if which == "one":
            pids = [pids[pick % len(pids)]]
        t = self.rec.now()
        try:
            self.c.psql("SELECT pg_terminate_backend(pid) FROM unnest(ARRAY[%s]) AS pid"
                        % ",".join(map(str, pids)), timeout=10)
        except Exception:  # noqa: BLE001 - maybe some were terminated: explain anyway
            f.notes.append("psql failed (PostgreSQL restarting or frozen?)")
        end = self.rec.now()   # psql takes its time to start: the backends went by then
        f.notes.append("terminated backends %s" % pids)
        self._window(f, "ambig", None, t, end + 1.0)
        self._window(f, "busy", None, t, end + SETTLE)

    def _lock_table(self, f, seconds):
        t = self.rec.now()
        p = self.c.psql_bg("BEGIN; LOCK TABLE todos IN ACCESS EXCLUSIVE MODE; "
                           "SELECT pg_sleep(%s); COMMIT;" % seconds)
        rc, out = self.c.psql_done(p, seconds + 30)
        end = self.rec.now()
        f.notes.append("LOCK TABLE todos held %.2f s (psql exit %s)" % (end - t, rc))
        self._window(f, "busy", None, t, end + SETTLE)
        self._window(f, "ambig", POOLED, t, end + SETTLE)

    def _row_locks(self, f, rows, pick, seconds):
        ids = list(self.hot_ids())
        owned = self.owned_ids()
        if owned:
            ids += [owned[(pick + k) % len(owned)] for k in range(rows)]
        ids = ids[pick % max(1, len(ids)):][:rows] or ids[:rows]
        t = self.rec.now()
        p = self.c.psql_bg("BEGIN; SELECT id FROM todos WHERE id IN (%s) FOR UPDATE; "
                           "SELECT pg_sleep(%s); ROLLBACK;"
                           % (",".join("'%s'" % i for i in ids), seconds))
        rc, out = self.c.psql_done(p, seconds + 30)
        end = self.rec.now()
        f.notes.append("rows %s locked %.2f s (psql exit %s)" % (ids, end - t, rc))
        self._window(f, "busy", None, t, end + SETTLE)
        self._window(f, "ambig", POOLED, t, end + SETTLE)

    def _deep_pages(self, f, inst, readers, page, limit):
        t = self.rec.now()
        recs = self.deep(inst, readers, page, limit)
        end = self.rec.now()
        f.notes.append("%d reads of page %d on %s: %s" % (
            readers, page, inst, ", ".join(str(r.status or r.err) for r in recs)))
        self._window(f, "busy", inst, t, end + SETTLE)

    def _garbage_peer(self, f, mode):
        # The performance-test runner takes it at its next test: a test from b
        # (whose perf_nodes name the fake peer) with "nodes":"all".
        with self.lock:
            self.garbage_pending.append(f)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and f.ended is None and not self.stop_flag.is_set():
            time.sleep(0.1)
        if f.ended is None:
            with self.lock:
                if f in self.garbage_pending:
                    self.garbage_pending.remove(f)
                    f.skipped = "no performance test took it in time"

    def take_garbage(self):
        """The next garbage-peer fault waiting for a test, or None."""
        with self.lock:
            return self.garbage_pending.pop(0) if self.garbage_pending else None

    def _otlp_down(self, f, mode, seconds):
        t = self.rec.now()
        self.c.sink.set_mode(mode)
        try:
            time.sleep(seconds)
        finally:
            self.c.sink.set_mode("up")
        f.notes.append("OTLP collector %s for %.2f s" % (mode, self.rec.now() - t))
