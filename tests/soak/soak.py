#!/usr/bin/env python3
"""The seeded chaos soak: `make soak` (SOAK_SECONDS, default 300; SOAK_SEED,
default random).

    python3 tests/soak/soak.py [--seconds S] [--seed N] [--bin PATH] [--san-bin PATH]
                               [--keep]

Starts a PostgreSQL primary with a streaming standby, PgBouncer and three todod
instances on loopback (cluster.py), runs a mixed client load (load.py) for S
seconds while a fault schedule (faults.py) kills, stops, reloads, locks and
freezes things, then checks everything recorded (checker.py, resources.py) and
prints a report. The seed drives the fault schedule, the load's choices, the
titles and which instance gets each request: the same seed replays the same
schedule of faults and load (the timing of the machine cannot be replayed).
The last line says PASS or FAIL and the seed; the exit status is 0 or 1.

Python 3 standard library only; as root, PostgreSQL and PgBouncer run as the
PostgreSQL user. Every process started is stopped by PID at the end, whatever
happens; the logs are kept when the soak fails (their paths are printed)."""

import argparse
import json
import os
import random
import re
import resource
import shutil
import signal
import sys
import tempfile
import threading
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from cluster import REQUEST_TIMEOUT, Cluster, env  # noqa: E402
from checker import Checker, Violation  # noqa: E402
from client import AMBIGUOUS, Client, Recorder  # noqa: E402
from faults import KINDS, Injector, make_schedule  # noqa: E402
from load import (INSTANCES, Bursts, HotWriter, Lister, Malformer, Owner,  # noqa: E402
                  PerfRunner, deep_reads, make_hot_rows)
import resources  # noqa: E402

WARMUP = 8.0
OWNERS = 4
HOT_WRITERS = 2
HOT_ROWS = 4


class Interrupted(Exception):
    pass


class Heartbeat(threading.Thread):
    """Wakes every 0.1 s: a wake-up more than 0.5 s late means the machine (2
    CPUs shared with other work) ran nothing of the soak for that long, and most
    likely nothing of todod or PostgreSQL either: [(t0, t1)] in `stalls`. The
    checker does not count such a stall against an answer's time, nor a time-out
    or a hung-server verdict right after one of a second or more."""

    def __init__(self, recorder, stop):
        super().__init__(name="heartbeat", daemon=True)
        self.rec = recorder
        self.stop_flag = stop
        self.stalls = []
        self.failure = None

    def run(self):
        last = self.rec.now()
        while not self.stop_flag.wait(0.1):
            now = self.rec.now()
            if now - last > 0.6:
                self.stalls.append((last + 0.1, now))
            last = now


class LogWatch(threading.Thread):
    """Reads the instances' logs as they grow, so that each line gets the time
    (to half a second) it appeared at: (t, instance, line)."""

    def __init__(self, cluster, recorder, stop):
        super().__init__(name="logwatch", daemon=True)
        self.c = cluster
        self.rec = recorder
        self.stop_flag = stop
        self.lines = []
        self.failure = None
        self._pos = {}
        self._part = {}

    def read(self):
        for name, inst in self.c.instances.items():
            try:
                with open(inst.d.log_path, "rb") as f:
                    f.seek(self._pos.get(name, 0))
                    data = f.read()
            except OSError:
                continue
            self._pos[name] = self._pos.get(name, 0) + len(data)
            text = self._part.get(name, b"") + data
            *whole, self._part[name] = text.split(b"\n")
            t = self.rec.now()
            self.lines.extend((t, name, line.decode("utf-8", "replace")) for line in whole)

    def run(self):
        while not self.stop_flag.wait(0.5):
            self.read()


def _interrupt(signum, frame):
    raise Interrupted("signal %d" % signum)


def say(text):
    print(text, flush=True)


# --------------------------------------------------------------------------- the run

class Soak:
    def __init__(self, seed, seconds, binaries, faults=True):
        self.with_faults = faults
        self.seed = seed
        self.seconds = seconds
        self.binaries = binaries
        self.rec = Recorder()
        self.cluster = Cluster(binaries, say)
        self.stop_load = threading.Event()
        self.threads = []
        self.violations = []
        self.notes = []

    def replay(self):
        return "make soak SOAK_SEED=%d SOAK_SECONDS=%d" % (self.seed, self.seconds)

    def run(self):
        c = self.cluster
        c.start()
        hot = make_hot_rows(self.rec, self._addrs(), HOT_ROWS)
        cooldown = max(8.0, 0.1 * self.seconds)
        schedule = make_schedule(self.seed, self.seconds, WARMUP, cooldown) \
            if self.with_faults else []
        say("fault schedule (%d faults): %s" % (len(schedule), ", ".join(
            "%.0fs %s" % (t, k) for t, k, _ in schedule)))
        # the load's clock starts now
        shift = time.monotonic() - self.rec.t_zero
        self.rec.t_zero += shift
        for r in self.rec.recs:
            r.t0 -= shift
            r.t1 -= shift

        addrs = self._addrs()
        common = dict(seed=self.seed, recorder=self.rec, instances=addrs, stop=self.stop_load,
                      timeout=REQUEST_TIMEOUT + 6)
        owners = [Owner("o%d" % k, trickle=0.06, **common) for k in range(OWNERS)]
        hots = [HotWriter("h%d" % k, hot=hot, **common) for k in range(HOT_WRITERS)]
        ops = Client("ops", self.rec, addrs, 5, record=False)
        self.injector = Injector(c, self.rec, schedule, say, hot_ids=lambda: hot,
                                 owned_ids=lambda: sorted(i for o in owners for i in list(o.live)),
                                 deep_client=deep_reads(self.rec, addrs))
        self.perf = PerfRunner("perf", cluster=c, injector=self.injector,
                               ops=Client("perf-ops", self.rec, addrs, 5, record=False), **common)
        self.injector.perf_now = lambda: self.perf.current
        self.monitor = resources.Monitor(c, self.rec, Client("monitor", self.rec, addrs, 5,
                                                             record=False), self.stop_load)
        self.bursts = Bursts(self.seed, self.rec, addrs, self.stop_load, REQUEST_TIMEOUT + 6)
        self.threads = owners + hots + [Lister("list", **common),
                                        Malformer("bad", hot=hot, **common), self.perf,
                                        self.bursts]
        for t in self.threads:
            t.start()
        self.monitor.start()
        self.heartbeat = Heartbeat(self.rec, threading.Event())
        self.heartbeat.start()
        self.logwatch = LogWatch(c, self.rec, threading.Event())
        self.logwatch.start()
        inj = threading.Thread(target=self.injector.run, name="injector", daemon=True)
        inj.start()

        next_status = 30.0
        while self.rec.now() < self.seconds:
            time.sleep(0.5)
            if self.rec.now() >= next_status:
                next_status += 30.0
                say("+%6.1fs %d requests, %d faults played, %d performance tests"
                    % (self.rec.now(), len(self.rec.recs), len(self.injector.faults),
                       len(self.perf.runs)))
        say("+%6.1fs load stops" % self.rec.now())
        self.injector.stop()
        self.stop_load.set()
        for t in self.threads:
            t.join(120)
        inj.join(180)
        self.monitor.join(10)
        for t in self.threads + [self.monitor]:
            if t.is_alive():
                self.violations.append(Violation(self.rec.now(), "soak", "thread %s did not stop"
                                                 % t.name))
            if t.failure:
                self.violations.append(Violation(self.rec.now(), "soak", t.failure))
        self.finish(ops)

    def _addrs(self):
        return {n: i.addr for n, i in self.cluster.instances.items()}

    def finish(self, ops):
        """Bring every instance back, let everything settle, then look at the
        end state: totals, the table, resources, and the processes' exits."""
        c = self.cluster
        t_end = self.rec.now()
        for name, inst in c.instances.items():
            if not inst.running():
                self.notes.append("todod %s was down at the end: started again" % name)
                inst.start(wait="ready", timeout=60)
        self.perf.quiet(90)   # a share still running then is a violation (check())
        time.sleep(3)
        final = self.monitor.sample()
        count = int(c.psql("SELECT count(*) FROM todos"))
        for name in INSTANCES:
            r = ops.call(name, "GET", "/todos?limit=1", kind="final")
            total = r.ans.get("pagination", {}).get("total") if isinstance(r.ans, dict) else None
            if total != count:
                self.violations.append(Violation(
                    t_end, "wrong count", "GET /todos on %s says total %r; the table holds %d rows"
                    % (name, total, count), [r]))
        self.rows, self.titles = c.table()
        self.count = count
        # stop the instances as an operator would: every exit must be clean
        for name, inst in c.instances.items():
            try:
                rc = inst.d.stop(signal.SIGTERM, timeout=float(inst.d.conf["shutdown_timeout"]) + 8)
            except TimeoutError:
                rc = "no exit"
            if rc != 0:
                self.violations.append(Violation(t_end, "process", "todod %s exited %s at the "
                                                 "final SIGTERM (want 0)" % (name, rc)))
        if c.bouncer.proc.poll() is not None:
            self.violations.append(Violation(t_end, "process", "PgBouncer died (%s)"
                                             % c.bouncer.proc.returncode))
        self.final = final
        self.t_end = t_end

    # ------------------------------------------------------------------ checks

    def check(self):
        faults = self.injector.faults
        hot = [r.info["todo"] for r in self.rec.recs if r.kind == "setup"]
        ck = Checker(self.rec.recs, faults, self.perf.runs, hot, REQUEST_TIMEOUT,
                     self.cluster.peer.base_url,
                     {n: float(i.d.conf["shutdown_timeout"])
                      for n, i in self.cluster.instances.items()},
                     self.heartbeat.stalls)
        v = ck.run()
        ck.check_table(self.rows, self.titles, self.t_end)
        self.checker = ck
        for f in faults:
            for p in f.problems:
                v.append(Violation(f.began, "fault", p))
        for t, still in self.perf.quiet_failures:
            v.append(Violation(t, "perf test did not end", "performance-test shares still "
                               "running after 60 s of waiting, by instance: %s" % still))
        reloads = [(w[2], w[3]) for f in faults for w in f.windows
                   if f.kind in ("sighup", "sigterm_restart", "kill_master", "kill_worker")]
        rv, self.res = resources.check(self.monitor, self.final, WARMUP, self.t_end, reloads)
        v += rv
        v += self.check_logs()
        self.violations = v + self.violations
        return self.violations

    def check_logs(self):
        """Sanitizer reports, and workers that died unasked (the master logs how)."""
        self.logwatch.stop_flag.set()
        self.logwatch.join(5)
        self.logwatch.read()
        v = []
        for t, name, line in self.logwatch.lines:
            kind = None
            if any(m in line for m in env.SANITIZER_MARKERS):
                kind = "sanitizer"
            m = re.search(r"worker (\d+) was killed by signal (\d+)", line)
            if m and int(m.group(1)) not in self.cluster.instances[name].killed:
                kind = "process"
            m = re.search(r"worker (\d+) exited with status (\d+)", line)
            if (m and m.group(2) != "0") or "did not stop in time" in line:
                kind = "process"
            if kind:
                v.append(Violation(t, kind, "%s: %s" % (name, line.strip())))
        return v

    def dump(self, run_dir):
        """Every request and fault of the run as JSON lines, for a closer look
        at a failure: history.jsonl and faults.jsonl in the run's directory."""
        with open(os.path.join(run_dir, "history.jsonl"), "w") as f:
            for r in self.rec.recs:
                body = r.body
                if isinstance(body, (bytes, bytearray)):
                    body = bytes(body).decode("utf-8", "replace")
                f.write(json.dumps({
                    "n": r.n, "client": r.client, "kind": r.kind, "inst": r.inst,
                    "method": r.method, "path": r.path, "body": body, "t0": r.t0, "t1": r.t1,
                    "reused": r.reused, "status": r.status, "err": r.err,
                    "answer": r.answer_text()[:4000], "info": r.info},
                    default=str, ensure_ascii=False) + "\n")
        with open(os.path.join(run_dir, "faults.jsonl"), "w") as f:
            for x in getattr(self, "injector", None) and self.injector.faults or []:
                f.write(json.dumps({"n": x.n, "t": x.t, "kind": x.kind, "params": x.params,
                                    "began": x.began, "ended": x.ended, "skipped": x.skipped,
                                    "notes": x.notes, "windows": x.windows,
                                    "problems": x.problems}, default=str) + "\n")

    # ------------------------------------------------------------------ report

    def report(self):
        recs = [r for r in self.rec.recs if r.kind not in ("ops", "setup", "final")]
        faults = self.injector.faults
        say("")
        say("=" * 78)
        say("soak report: seed %d, %d s of load; instances: %s" % (
            self.seed, self.seconds, "; ".join(
                "%s %s:%d %s via %s" % (n, i.d.host, i.d.port, i.build, i.path)
                for n, i in self.cluster.instances.items())))
        say("")
        say("faults injected (played / skipped):")
        for kind in KINDS:
            played = [f for f in faults if f.kind == kind and not f.skipped]
            skipped = [f for f in faults if f.kind == kind and f.skipped]
            extra = ""
            if kind == "garbage_peer":
                extra = "  modes: " + ", ".join(sorted(f.params["mode"] for f in played))
            say("  %-18s %3d / %d%s" % (kind, len(played), len(skipped), extra))
        say("")
        say("faults played:")
        for f in faults:
            say("  +%6.2fs %-17s %s" % (f.began if f.began is not None else f.t, f.kind,
                                       "skipped: " + f.skipped if f.skipped else
                                       "; ".join(f.notes)[:150] or f.describe()))
        say("")
        say("requests checked: %d" % len(recs))
        table = {}
        for r in recs:
            key = "%s %s" % (r.method, r.route) if r.kind != "bad" else "malformed (%s)" % r.method
            st = r.err or str(r.status)
            if r.status == 503:
                st = "503 " + {AMBIGUOUS: "may-have-been-applied"}.get(
                    r.error_message(), "not-applied" if r.error_message() else "?")
            table.setdefault(key, {}).setdefault(st, 0)
            table[key][st] += 1
        for key in sorted(table):
            say("  %-34s %s" % (key, ", ".join("%s: %d" % kv for kv in sorted(table[key].items()))))
        say("failed answers explained by a fault: %s" % (", ".join(
            "%s %d" % kv for kv in sorted(self.checker.explained.items())) or "none"))
        st = self.heartbeat.stalls
        if st:
            say("machine stalls (the soak not run for over 0.5 s): %d, %.1f s in all, the "
                "longest %.1f s at +%.1fs; answers late or failed in or right after one: %d "
                "(not violations)" % (len(st), sum(b - a for a, b in st),
                                      max(b - a for a, b in st),
                                      max(st, key=lambda x: x[1] - x[0])[0],
                                      len(self.checker.late_in_stall)))
        if self.checker.slow_db:
            say("503 \"did not answer in time\" at the deadline with no fault near: %d (the "
                "database was slow; true answers, not violations)" % len(self.checker.slow_db))
        amb = self.checker.ambiguous
        say("ambiguous write answers: %d (503 may-have-been-applied: %d, connection errors: %d)"
            % (len(amb), sum(1 for r in amb if r.status == 503),
               sum(1 for r in amb if r.err is not None)))
        runs = self.perf.runs
        say("performance tests: %d (reports: %d; spread to nodes: %d; through the fake peer: %d; "
            "rows counted: %d)" % (
                len(runs), sum(1 for x in runs if x.rec.status == 200),
                sum(1 for x in runs if x.params.get("nodes")),
                sum(1 for x in runs if x.garbage is not None),
                sum((x.after or 0) - x.before for x in runs if x.after is not None)))
        say("bursts of 16-32 concurrent clients: %d" % self.bursts.count)
        say("the soak itself: %d MB of memory at most, %.0f s of CPU" % (
            resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024,
            sum(resource.getrusage(resource.RUSAGE_SELF)[:2])))
        say("end state: %d rows (%d outside the performance tests); PostgreSQL client backends "
            "at most %d (bound %d)" % (self.count, len(self.rows),
                                        max([n for _, n in self.res["pg_samples"]] or [0]),
                                        self.res["pg_bound"]))
        for x in runs:
            if x.garbage is None:
                continue
            rep = x.rec.ans if isinstance(x.rec.ans, dict) else {}
            node = [p for p in rep.get("per_node") or [] if isinstance(p, dict) and
                    p.get("node") == self.cluster.peer.base_url]
            say("  fake peer %-17s #%d: %s; its entry %s" % (
                x.garbage.params["mode"], x.rec.n, x.rec.status or x.rec.err,
                node[0] if node else "(none)"))
        say("workers at the end, idle (descriptors that are not sockets after warm-up, at "
            "most: %s):" % ", ".join("%s %d" % kv for kv in sorted(self.res["base"].items())))
        for name, ws in sorted(self.res["workers"].items()):
            say("  %s: %s" % (name, "; ".join(ws)))
        for n in self.notes:
            say("note: " + n)
        v = self.violations
        say("")
        if not v:
            say("violations: none")
        else:
            kinds = {}
            for x in v:
                kinds.setdefault(x.kind, []).append(x)
            say("violations: %d (%s)" % (len(v), ", ".join(
                "%s: %d" % (k, len(xs)) for k, xs in sorted(kinds.items()))))
            for k, xs in sorted(kinds.items()):
                xs.sort(key=lambda x: x.t if x.t is not None else 1e12)
                say("")
                say("  [%s] %d" % (k, len(xs)))
                # the same finding on the same instance, once, with its count and span
                groups = {}
                for x in xs:
                    key = (x.text, x.recs[0].inst if x.recs else None)
                    groups.setdefault(key, []).append(x)
                shown = 0
                for (text, inst), g in sorted(groups.items(), key=lambda kv: kv[1][0].t or 1e12):
                    if shown == 10:
                        say("    ... and %d more findings of this kind" % (len(groups) - shown))
                        break
                    shown += 1
                    first, last = g[0], g[-1]
                    when = "+%.3fs" % first.t if first.t is not None else "(log)"
                    if len(g) > 1:
                        say("    %s %s [%d times on %s, until +%.3fs]" % (
                            when, text, len(g), inst or "-", last.t or 0))
                    else:
                        say("    %s %s" % (when, text))
                    for r in first.recs[:3]:
                        say("        " + r.describe())
            say("")
            say("logs: " + ", ".join("%s %s" % (n, i.d.log_path)
                                     for n, i in self.cluster.instances.items()))
            say("postgres log: %s; pgbouncer log: %s" % (self.cluster.primary.log_path,
                                                         self.cluster.bouncer.log_path))
        say("replay: " + self.replay())


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=float(os.environ.get("SOAK_SECONDS") or 300))
    ap.add_argument("--seed", type=int, default=int(os.environ["SOAK_SEED"])
                    if os.environ.get("SOAK_SEED") else None)
    root = os.path.abspath(os.path.join(HERE, "..", ".."))
    ap.add_argument("--bin", default=os.path.join(root, "build", "todod"))
    ap.add_argument("--san-bin", default=os.path.join(root, "build", "san", "todod"))
    ap.add_argument("--keep", action="store_true", help="keep the logs even when it passes")
    ap.add_argument("--no-faults", action="store_true",
                    help="the load alone, no fault (to tell the soak's own noise from todod's)")
    args = ap.parse_args(argv)
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1, 2**31)
    seconds = int(args.seconds)
    args.bin, args.san_bin = os.path.abspath(args.bin), os.path.abspath(args.san_bin)
    for b in (args.bin, args.san_bin):
        if not os.access(b, os.X_OK):
            say("soak: %s is not built (make all; make SAN=1 all)" % b)
            return 2
    # Every file of the run (databases, logs, configurations) under one
    # directory the PostgreSQL user can reach: removed when the soak passes.
    run_dir = tempfile.mkdtemp(prefix="todod-soak-%d-" % seed)
    os.chmod(run_dir, 0o755)
    if env.IS_ROOT:
        import pwd
        pw = pwd.getpwnam(env.PG_RUNNER)
        os.chown(run_dir, pw.pw_uid, pw.pw_gid)
    tempfile.tempdir = run_dir
    say("soak: seed %d, %d s (replay: make soak SOAK_SEED=%d SOAK_SECONDS=%d); files in %s"
        % (seed, seconds, seed, seconds, run_dir))
    soak = Soak(seed, seconds, {"release": args.bin, "asan+ubsan": args.san_bin},
                faults=not args.no_faults)
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGALRM, _interrupt)
    signal.alarm(seconds + 900)   # the whole run is bounded, setup and checks included
    failed = True
    try:
        soak.run()
        v = soak.check()
        soak.report()
        failed = bool(v)
    except (Interrupted, KeyboardInterrupt) as e:
        say("soak: interrupted (%s); stopping everything" % e)
    except Exception:  # noqa: BLE001
        say("soak: the run itself failed:\n" + traceback.format_exc())
        say("replay: " + soak.replay())
    finally:
        signal.alarm(0)
        soak.stop_load.set()
        try:
            if hasattr(soak, "injector"):
                soak.injector.stop()
        finally:
            soak.cluster.stop(keep=failed or args.keep)
    if failed:
        try:
            soak.dump(run_dir)
        except Exception as e:  # noqa: BLE001
            say("soak: could not write the history: %r" % e)
        say("kept for inspection: %s (logs, databases, configurations; every request in "
            "history.jsonl, every fault in faults.jsonl)" % run_dir)
    else:
        shutil.rmtree(run_dir, ignore_errors=True)
    say("%s seed=%d" % ("FAIL" if failed else "PASS", seed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
