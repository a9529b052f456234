"""The history checker: reads every recorded request, the faults played, the
performance-test runs, the final table, the logs and the resource samples, and
returns the violations.

Outcomes of a write (client.Rec.outcome): applied (2xx), not applied (4xx, the
two "not applied" 503s, a refused connection), ambiguous (the "may have been
applied" 503, a connection that broke after the request was sent, a 500).

A todo an owner writes is modelled by the set of values each of its fields may
hold: an acknowledged write sets it; a read narrows it to what was read; an
ambiguous write adds its value, now and for ever after (it may land late, even
after a later acknowledged write); a "not applied" write changes nothing and its
title must never be seen. A delete is final. Every title is sent once in the
whole run, so a title read names the write it came from."""

import re
import sys
import uuid

from client import AMBIGUOUS, NOT_APPLIED

# Faults that may fail or cut a performance test's batches (a reload may not; a
# table lock may hold its batches past request_timeout, which a daemon may take
# for a hung server).
PERF_FAULTS = ("kill_worker", "kill_master", "sigterm_restart", "pg_restart", "stop_backend",
               "stop_primary", "terminate_backend", "lock_table")
PERF_TITLE = re.compile(r"^Performance Test Todo #\d+$")
TS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")


class Violation:
    def __init__(self, t, kind, text, recs=()):
        self.t, self.kind, self.text, self.recs = t, kind, text, list(recs)


def _is_uuid(s):
    try:
        return isinstance(s, str) and str(uuid.UUID(s)) == s
    except ValueError:
        return False


TODO_KEYS = {"id", "title", "done", "created_at", "updated_at"}


def todo_problem(a):
    """Why a is not a todo object as API.md shows it (None: it is one)."""
    if not isinstance(a, dict) or set(a) != TODO_KEYS:
        return "not a todo object: %r" % (a,)
    if not _is_uuid(a["id"]) or not isinstance(a["title"], str) or \
            not isinstance(a["done"], bool) or not TS.match(str(a["created_at"])) or \
            not TS.match(str(a["updated_at"])):
        return "not a todo object: %r" % (a,)
    return None


def digest_list(r):
    """Called as a list answer arrives (the load keeps thousands of them): the
    checks that need no history (shape, order, limit, pagination, the done
    filter) into r.info["list_problems"], and of each todo that is not a
    performance test's what the history check needs, (id, title, created_at),
    into r.info["items"]; the answer itself is then dropped."""
    if r.err is not None or r.status != 200:
        return
    problems = []
    q = dict(kv.split("=", 1) for kv in r.path.split("?", 1)[1].split("&")) \
        if "?" in r.path else {}
    by_done = r.path.startswith("/todos/done/")
    if by_done:
        items = r.ans
        want_limit = max(1, min(1000, int(q.get("limit", 100))))
        if not isinstance(items, list):
            problems.append("/todos/done/... answered no array")
            items = []
    else:
        items = r.ans.get("data") if isinstance(r.ans, dict) else None
        if not isinstance(items, list):
            problems.append("a list without data")
            items = []
        want_limit = max(1, min(100, int(q.get("limit", 10))))
        p = r.ans.get("pagination") if isinstance(r.ans, dict) else None
        p = p if isinstance(p, dict) else {}
        page = int(q.get("page", 1))
        total = p.get("total")
        ok = (p.get("page") == page and p.get("limit") == want_limit and
              isinstance(total, int) and total >= 0 and
              p.get("total_pages") == (total + want_limit - 1) // want_limit and
              p.get("has_next") == (page < p.get("total_pages", 0)) and
              p.get("has_prev") == (page > 1))
        if not ok:
            problems.append("pagination %r for page %d, limit %d" % (p, page, want_limit))
    if len(items) > want_limit:
        problems.append("%d items for limit %d" % (len(items), want_limit))
    keys, ids, kept = [], set(), []
    want_done = r.path.split("?")[0].endswith("/true")
    for a in items:
        why = todo_problem(a)
        if why is not None:
            problems.append(why)
            break
        if a["id"] in ids:
            problems.append("todo %s twice in one page" % a["id"])
        ids.add(a["id"])
        keys.append((a["created_at"], a["id"]))
        if by_done and a["done"] != want_done:
            problems.append("todo %s with done %r in %s" % (a["id"], a["done"], r.path))
        if not PERF_TITLE.match(a["title"]):
            kept.append((sys.intern(a["id"]), sys.intern(a["title"]), a["created_at"]))
    if keys != sorted(keys, reverse=True):
        problems.append("a list not newest first")
    r.info["items"] = kept
    r.info["count"] = len(items)
    if problems:
        r.info["list_problems"] = problems[:5]
    r.raw = r.answer_text()[:600].encode("utf-8")   # enough to show it
    r.ans = None


class Windows:
    """The faults' explanation windows."""

    def __init__(self, faults):
        self.w = []
        for f in faults:
            for what, inst, t0, t1 in f.windows:
                self.w.append((what, inst, t0, t1, f))

    def find(self, whats, inst, t0, t1):
        for what, winst, w0, w1, f in self.w:
            if what in whats and (winst is None or winst == inst) and w0 <= t1 and t0 <= w1:
                return f
        return None


class Todo:
    """What an owner's todo may hold (see the module's comment)."""

    def __init__(self, tid, title, done, created, t):
        self.id = tid
        self.exists = {True}
        self.titles = {title}
        self.dones = {done}
        self.amb_titles = set()
        self.amb_dones = set()
        self.amb_delete = False
        self.seen_titles = {title: t}   # every title it may show: from when it was sent
        self.created = created
        self.deleted_at = None          # when it was certainly gone
        self.tainted = None

    def read(self, title, done):
        self.titles = {title} | self.amb_titles
        self.dones = {done} | self.amb_dones
        self.exists = {True} | ({False} if self.amb_delete else set())

    def gone(self, t):
        self.exists = {False}
        if self.deleted_at is None or t < self.deleted_at:
            self.deleted_at = t


class Checker:
    def __init__(self, recs, faults, runs, hot_ids, request_timeout, fake_peer_url,
                 shutdown_timeouts, stalls=()):
        self.shutdown_timeouts = shutdown_timeouts   # instance -> seconds
        self.stalls = list(stalls)   # [(t0, t1)]: the machine did not run the soak
        self.recs = recs
        self.faults = faults
        self.runs = runs
        self.hot_ids = set(hot_ids)
        self.limit = request_timeout + 1.0
        self.settle = request_timeout + 2.0
        self.fake_url = fake_peer_url
        self.win = Windows(faults)
        self.v = []
        self.todos = {}          # id -> Todo (owners')
        self.never = {}          # title -> the Rec that was not applied
        self.maybe = {}          # title -> the ambiguous POST
        self.acked_titles = {}   # title -> Rec (POSTs and PUTs acknowledged)
        self.hot = {}            # id -> {"titles": {title: Rec}, "created": str}
        self.ambiguous = []      # every ambiguous write
        self.explained = {}      # fault kind -> answers it explained
        self.slow_db = []        # "did not answer in time" at the deadline, no fault near
        self.late_in_stall = []  # late or failed answers while the machine stalled

    def fault_during(self, kinds, t0, t1):
        """A fault of those kinds played while [t0, t1] ran (or just before)."""
        for f in self.faults:
            if (f.kind in kinds and not f.skipped and f.began is not None and
                    f.began <= t1 and (f.ended or f.began) + self.settle >= t0):
                return f
        return None

    def drain_cut(self, r):
        """A reload or stop of an instance (running a share) that a test outlived
        by most of that instance's shutdown_timeout: a daemon may abandon a share
        a quarter of shutdown_timeout before it would be cut (todod(8), SIGTERM), not at once."""
        for f in self.faults:
            if f.kind in ("sighup", "sigterm_restart") and f.at is not None and \
                    r.t0 <= f.at <= r.t1 and \
                    r.t1 >= f.at + 0.75 * self.shutdown_timeouts[f.inst] - 0.25:
                return f
        return None

    def stalled(self, t0, t1):
        """Seconds of [t0, t1] the machine was stalled (see soak.Heartbeat)."""
        return sum(max(0.0, min(t1, b) - max(t0, a)) for a, b in self.stalls)

    def stall_near(self, t0, t1):
        """A stall of a second or more during [t0, t1] or just before: the
        database and todod were as late as the soak (a hung-server verdict, a
        time-out) then."""
        return any(b - a >= 1.0 and a <= t1 and t0 <= b + self.settle for a, b in self.stalls)

    def add(self, t, kind, text, recs=()):
        self.v.append(Violation(t, kind, text, recs))

    # ------------------------------------------------------------------ answers

    def check_answer(self, r):
        """Status, timing and connection errors of one request, whatever it was."""
        if r.kind in ("ops", "setup", "final", "bad", "perf"):
            return   # the last two: check_bad, check_perf
        if r.info.get("bad_json"):
            self.add(r.t0, "wrong answer", "an application/json answer that is not JSON", [r])
        timed = r.kind in ("owner", "hot", "list", "deep")
        if r.err is not None:
            self._check_error(r)
            return
        if timed and r.t1 - r.t0 > self.limit:
            if r.t1 - r.t0 - self.stalled(r.t0, r.t1) > self.limit:
                self.add(r.t0, "slow answer", "answered after %.2f s (limit request_timeout + 1 s "
                         "= %.1f s)" % (r.t1 - r.t0, self.limit), [r])
            else:
                self.late_in_stall.append(r)
        if r.status == 500:
            self.add(r.t0, "internal error", "500 internal error", [r])
        elif r.status == 503:
            msg = r.error_message()
            if msg == AMBIGUOUS:
                f = self.win.find(("ambig",), r.inst, r.t0, r.t1)
                if f is None and self.stall_near(r.t0, r.t1):
                    self.late_in_stall.append(r)
                elif f is None:
                    self.add(r.t0, "unexplained ambiguity", "\"may have been applied\" with no "
                             "database connection broken, nor the instance stopped", [r])
                else:
                    self._explain(f)
            elif msg in NOT_APPLIED:
                f = self.win.find(("busy", "ambig", "conn", "refused"), r.inst, r.t0, r.t1)
                if f is not None:
                    self._explain(f)
                elif self.stall_near(r.t0, r.t1):
                    self.late_in_stall.append(r)
                elif msg == NOT_APPLIED[1] and r.t1 - r.t0 >= self.limit - 1.3:
                    # at its deadline: the database was slow (a disk, another
                    # tenant of the machine); true, so counted, not a violation
                    self.slow_db.append(r)
                else:
                    self.add(r.t0, "unexplained failure", "503 with no fault to explain it", [r])
            else:
                self.add(r.t0, "wrong answer", "a 503 whose message API.md does not list", [r])

    def _explain(self, f):
        self.explained[f.kind] = self.explained.get(f.kind, 0) + 1

    def _check_error(self, r):
        if r.kind == "slow" and (r.info.get("cut") or
                                 r.info.get("sending", 0) > self.limit - 1.2):
            return   # cut off by request_timeout: a close is one of its answers
        if r.err == "refused":
            f = self.win.find(("refused",), r.inst, r.t0 - 0.1, r.t1)
            what = "connection refused"
        elif r.err == "closed":
            f = self.win.find(("conn",) + (("drain",) if r.kind == "slow" else ()), r.inst,
                              r.t0, r.t1)
            if f is None and r.reused and r.t1 - r.t0 < 0.25:
                f = self.win.find(("race",), r.inst, r.t0, r.t1)
            what = "connection closed with no (whole) answer"
        elif r.err == "timeout":
            f = None
            what = "no answer within %.0f s" % (r.t1 - r.t0)
        else:
            f = None
            what = "client error %s" % r.err
        if f is None:
            self.add(r.t0, "unexplained failure", what + " with no fault to explain it", [r])
        else:
            self._explain(f)

    # ------------------------------------------------------------------ owners

    def _outcome(self, r):
        o = r.outcome()
        if o == "ambiguous":
            self.ambiguous.append(r)
        return o

    def check_owner(self, r):
        t = self.todos.get(r.info.get("todo"))
        if r.kind == "slow" and (r.info.get("cut") or r.info.get("unsent")):
            self._owner_cut(r)
            return
        o = self._outcome(r) if r.method != "GET" else None
        if t is not None and t.tainted:
            # no more checks on it, but its titles stay known to the other checks
            title = r.body.get("title") if isinstance(r.body, dict) else None
            if title is not None and r.method == "PUT":
                (self.never if o == "not_applied" else self.maybe)[title] = r
                t.seen_titles.setdefault(title, r.t0)
            return
        if r.method == "POST":
            self._owner_post(r, o)
        elif r.method == "PUT":
            self._owner_put(r, t, o)
        elif r.method == "DELETE":
            self._owner_delete(r, t, o)
        elif "absent" in r.info:
            if r.status == 200:
                self.add(r.t0, "wrong answer", "200 for a todo id never created", [r])
        else:
            self._owner_get(r, t)

    def _taint(self, t, r, kind, text):
        self.add(r.t0, kind, "%s (todo %s)" % (text, t.id), [r])
        t.tainted = r

    def _todo_shape(self, r, a):
        """The answer is a todo object: returns it, or None (a violation)."""
        why = todo_problem(a)
        if why is not None:
            self.add(r.t0, "wrong answer", why, [r])
            return None
        return a

    def _owner_cut(self, r):
        """A trickled POST that did not reach the server whole: never applied."""
        if r.status not in (None, 408):
            self.add(r.t0, "wrong answer", "a request trickled past request_timeout got %s "
                     "(want 408 or the connection closed)" % r.status, [r])
        self.never[r.body["title"]] = r

    def _owner_post(self, r, o):
        title = r.body["title"]
        done = r.body.get("done", False)
        if o == "not_applied":
            self.never[title] = r
            if r.status is not None and 400 <= r.status < 500 and not (
                    r.kind == "slow" and r.status == 408 and
                    (r.info.get("sending", 0) > self.limit - 1.2 or
                     self.win.find(("drain",), r.inst, r.t0, r.t1))):
                self.add(r.t0, "wrong answer", "a valid POST refused", [r])
            return
        if o == "ambiguous":
            self.maybe[title] = r
            return
        a = self._todo_shape(r, r.ans)
        if a is None:
            return
        if r.status != 201:
            self.add(r.t0, "wrong answer", "POST answered %d, want 201" % r.status, [r])
        if a["title"] != title or a["done"] != done:
            self.add(r.t0, "wrong answer", "POST answered another todo than the one sent", [r])
            self.maybe[title] = r   # it may have been stored all the same
            return
        if a["created_at"] != a["updated_at"]:
            self.add(r.t0, "wrong answer", "a new todo whose updated_at is not its created_at",
                     [r])
        if r.hdrs.get("location") != "/todos/" + a["id"]:
            self.add(r.t0, "wrong answer", "Location %r" % r.hdrs.get("location"), [r])
        if a["id"] in self.todos:
            self.add(r.t0, "wrong answer", "POST answered an existing todo's id", [r])
            return
        self.todos[a["id"]] = Todo(a["id"], title, done, a["created_at"], r.t0)
        self.acked_titles[title] = r

    def _same_todo(self, t, r, a):
        if a["id"] != t.id:
            self._taint(t, r, "wrong answer", "answered another todo's data (%s)" % a["id"])
            return False
        if a["created_at"] != t.created:
            self._taint(t, r, "wrong answer", "created_at %s, created %s" % (a["created_at"],
                                                                          t.created))
            return False
        return True

    def _owner_put(self, r, t, o):
        if t is None:
            return
        sent = r.body if isinstance(r.body, dict) else {}
        if o != "not_applied" and "title" in sent:
            t.seen_titles.setdefault(sent["title"], r.t0)   # a list may show it from now on
        if o == "not_applied":
            if "title" in sent:
                self.never[sent["title"]] = r
            if r.status == 404:
                if False not in t.exists:
                    self._taint(t, r, "wrong answer", "PUT 404 for a todo acknowledged and not "
                                "deleted")
                else:
                    t.gone(r.t1)
            elif r.status is not None and 400 <= r.status < 500:
                self.add(r.t0, "wrong answer", "a valid PUT refused", [r])
            return
        if o == "ambiguous":
            if "title" in sent:
                t.amb_titles.add(sent["title"])
                t.titles.add(sent["title"])
                self.maybe[sent["title"]] = r
            if "done" in sent:
                t.amb_dones.add(sent["done"])
                t.dones.add(sent["done"])
            return
        a = self._todo_shape(r, r.ans)
        if a is None or not self._same_todo(t, r, a):
            return
        if True not in t.exists:
            self._taint(t, r, "wrong answer", "PUT 200 on a deleted todo")
            return
        for field, have in (("title", t.titles), ("done", t.dones)):
            if field in sent:
                if a[field] != sent[field]:
                    self._taint(t, r, "wrong answer", "PUT answered %s %r, sent %r"
                                % (field, a[field], sent[field]))
                    return
            elif a[field] not in have:
                self._taint(t, r, "wrong answer", "PUT answered %s %r, never written (may be: %r)"
                            % (field, a[field], sorted(have, key=str)[:5]))
                return
        if "title" in sent:
            self.acked_titles[sent["title"]] = r
        t.read(a["title"], a["done"])

    def _owner_delete(self, r, t, o):
        if t is None:
            return
        if o == "not_applied":
            if r.status == 404:
                if False not in t.exists:
                    self._taint(t, r, "wrong answer", "DELETE 404 for a todo acknowledged and "
                                "not deleted")
                else:
                    t.gone(r.t1)
            return
        if o == "ambiguous":
            t.amb_delete = True
            t.exists.add(False)
            return
        if r.status != 204 or r.answer_text():
            self.add(r.t0, "wrong answer", "DELETE answered %d with %d bytes, want 204 and none"
                     % (r.status, len(r.answer_text())), [r])
        if True not in t.exists:
            self._taint(t, r, "wrong answer", "DELETE 204 of a todo already deleted")
            return
        t.gone(r.t1)

    def _owner_get(self, r, t):
        if t is None or r.err is not None or r.status not in (200, 404):
            return
        if r.status == 404:
            if False not in t.exists:
                self._taint(t, r, "wrong answer", "404 for a todo acknowledged and not deleted")
            else:
                t.gone(r.t1)
            return
        a = self._todo_shape(r, r.ans)
        if a is None or not self._same_todo(t, r, a):
            return
        if True not in t.exists:
            self._taint(t, r, "wrong answer", "200 for a todo whose DELETE was acknowledged")
        elif a["title"] not in t.titles:
            why = " (a write answered \"not applied\")" if a["title"] in self.never else ""
            self._taint(t, r, "wrong answer", "read title %r, not among those it may hold%s"
                        % (a["title"], why))
        elif a["done"] not in t.dones:
            self._taint(t, r, "wrong answer", "read done %r, not among those it may hold"
                        % a["done"])
        else:
            t.read(a["title"], a["done"])

    # ------------------------------------------------------------------ shared rows

    def hot_setup(self, r):
        self.hot[r.info["todo"]] = {"titles": {r.info["title"]: r}, "created": r.ans["created_at"]}
        self.acked_titles[r.info["title"]] = r

    def hot_write(self, r):
        """First pass over the shared rows: what every PUT sent (the hot
        writers run concurrently, so a read may show a write recorded after it)."""
        h = self.hot.get(r.info.get("todo"))
        if h is None or r.method != "PUT":
            return
        sent = r.body if isinstance(r.body, dict) else {}
        o = self._outcome(r)
        if "title" in sent:
            if o == "not_applied":
                self.never[sent["title"]] = r
            else:
                h["titles"][sent["title"]] = r
                if o == "applied":
                    self.acked_titles[sent["title"]] = r
                else:
                    self.maybe[sent["title"]] = r

    def check_hot(self, r):
        tid = r.info.get("todo")
        h = self.hot.get(tid)
        if h is None:
            return
        sent = r.body if isinstance(r.body, dict) else {}
        if r.err is not None or r.status not in (200, 404):
            return
        if r.status == 404:
            self.add(r.t0, "wrong answer", "404 for a shared row nobody deletes", [r])
            return
        a = self._todo_shape(r, r.ans)
        if a is None:
            return
        if a["id"] != tid or a["created_at"] != h["created"]:
            self.add(r.t0, "wrong answer", "answered another todo's data (%s)" % a["id"], [r])
            return
        for field in ("title", "done"):
            if r.method == "PUT" and field in sent and a[field] != sent[field]:
                self.add(r.t0, "wrong answer", "PUT answered %s %r, sent %r"
                         % (field, a[field], sent[field]), [r])
        w = h["titles"].get(a["title"])
        if w is None or w.t0 > r.t1:
            why = " (its write was answered \"not applied\")" if a["title"] in self.never else ""
            self.add(r.t0, "wrong answer", "shared row shows title %r that no write sent before%s"
                     % (a["title"], why), [r] + ([self.never[a["title"]]]
                                                 if a["title"] in self.never else []))

    # ------------------------------------------------------------------ lists

    def _title_known(self, tid, title, t1):
        """May a list show todo tid with this title? (None: yes; else why not)."""
        if tid in self.todos:
            t = self.todos[tid]
            if t.seen_titles.get(title, t1 + 1) <= t1:
                return None
            return "a title not written to it before"
        if tid in self.hot:
            w = self.hot[tid]["titles"].get(title)
            return None if w is not None and w.t0 <= t1 else "a title never written to it"
        if PERF_TITLE.match(title):
            return None
        if title in self.maybe:
            return None
        if title in self.never:
            return "a title whose write was answered \"not applied\""
        if title in self.acked_titles:
            w = self.acked_titles[title]
            if w.info.get("todo") == tid:
                return None
            return "another todo's title"
        return "a title nobody wrote"

    def check_list(self, r):
        """What digest_list kept of a list answer, against the history."""
        if r.err is not None or r.status != 200:
            if r.status not in (None, 503, 500):
                self.add(r.t0, "wrong answer", "a list answered %d" % r.status, [r])
            return
        for problem in r.info.get("list_problems", ()):
            self.add(r.t0, "wrong answer", problem, [r])
        for tid, title, created in r.info.get("items", ()):
            why = self._title_known(tid, title, r.t1)
            if why is not None:
                more = [w for w in (self.never.get(title),) if w is not None]
                self.add(r.t0, "wrong answer", "a list shows todo %s with %s: %r"
                         % (tid, why, title), [r] + more)
            t = self.todos.get(tid)
            if t is not None and created != t.created:
                self.add(r.t0, "wrong answer", "todo %s listed with created_at %s, created %s"
                         % (tid, created, t.created), [r])
            if t is not None and t.deleted_at is not None and t.deleted_at < r.t0:
                self.add(r.t0, "wrong answer", "a list shows todo %s, deleted at +%.3fs, before "
                         "the list was asked for" % (tid, t.deleted_at), [r])

    # ------------------------------------------------------------------ malformed

    def check_bad(self, r):
        expect = r.info["expect"]
        if r.err is not None:
            f = self.win.find(("refused", "conn", "race"), r.inst, r.t0, r.t1)
            if f is None:
                self.add(r.t0, "unexplained failure", "a malformed request: %s, with no fault "
                         "to explain it" % r.err, [r])
            return
        if r.status not in expect:
            self.add(r.t0, "malformed accepted", "%s: answered %d, want %s"
                     % (r.info["case"], r.status, sorted(expect)), [r])
            return
        if not (isinstance(r.ans, dict) and set(r.ans) == {"error"} and r.ans["error"]):
            self.add(r.t0, "wrong answer", "%s: the error is not {\"error\": ...}"
                     % r.info["case"], [r])
        if r.info.get("answers", 1) != 1:
            self.add(r.t0, "malformed accepted", "%s: %d answers to one request (a body ran "
                     "as a request?)" % (r.info["case"], r.info["answers"]), [r])
        self.never[r.info["marker"]] = r

    # ------------------------------------------------------------------ performance tests

    def check_perf(self, run, peer_url):
        r = run.rec
        p = run.params
        delta = run.after - run.before if run.after is not None else None
        if r.err is not None:
            # a test always ends, its coordinator alive: no time-out is explained
            f = None if r.err == "timeout" else \
                self.win.find(("conn", "refused", "race"), r.inst, r.t0, r.t1)
            if f is None:
                self.add(r.t0, "unexplained failure", "performance test: %s" % r.err, [r])
            return
        if r.info.get("floor_probe") and r.status != 422:
            self.add(r.t0, "wrong answer", "rate %s (below 1 todo/s) accepted: %d"
                     % (p.get("rate"), r.status), [r])
        if r.status != 200:
            if r.status == 500:
                self.add(r.t0, "internal error", "performance test: 500", [r])
            if r.status in (400, 404) or (r.status == 422 and not r.info.get("floor_probe") and
                                          "workers" not in (r.error_message() or "")):
                self.add(r.t0, "wrong answer", "a valid performance test refused", [r])
            if r.status == 503 and not self.win.find(("busy", "refused", "conn", "ambig"),
                                                     r.inst, r.t0, r.t1):
                self.add(r.t0, "unexplained failure", "performance test: 503 with no fault to "
                         "explain it", [r])
            if delta not in (0, None) and run.settled:
                self.add(r.t0, "wrong count", "performance test answered %d, yet %d rows were "
                         "added" % (r.status, delta), [r])
            return
        rep = r.ans
        if r.lines is not None:
            objs = [o for _, o in r.lines]
            has_report = bool(objs) and isinstance(objs[-1], dict) and \
                objs[-1].get("type") == "report"
            last = -1
            for o in (objs[:-1] if has_report else objs):
                if not isinstance(o, dict) or o.get("type") != "progress":
                    self.add(r.t0, "wrong answer", "a progress line that is not one: %r"
                             % (o,), [r])
                    break
                s = o.get("success_count", 0)
                if not isinstance(s, int) or s < last or s > p["message_count"]:
                    self.add(r.t0, "wrong answer", "progress success_count %r after %d" % (s, last),
                             [r])
                    break
                last = s
            if not has_report:
                self.add(r.t0, "wrong answer", "a streamed test whose last line is not its report",
                         [r])
                return
        if not isinstance(rep, dict):
            self.add(r.t0, "wrong answer", "performance test report is not an object", [r])
            return
        n = p["message_count"]
        s, e, u = (rep.get("success_count"), rep.get("error_count"), rep.get("unknown_count", 0))
        if not all(isinstance(x, int) and x >= 0 for x in (s, e, u)):
            self.add(r.t0, "wrong count", "report counts %r %r %r" % (s, e, u), [r])
            return
        if rep.get("total_messages") != n or s + e + u != n:
            self.add(r.t0, "wrong count", "success %d + error %d + unknown %d != total %s (sent %d)"
                     % (s, e, u, rep.get("total_messages"), n), [r])
        if run.settled and delta is not None and not (s <= delta <= s + u):
            self.add(r.t0, "wrong count", "the table got %d rows; the report says success %d, "
                     "unknown %d, error %d" % (delta, s, u, e), [r])
        fake = [x for x in rep.get("per_node") or [] if isinstance(x, dict) and
                x.get("node") == peer_url and run.garbage is not None]
        lost = e + u - sum(x.get("error_count", 0) + x.get("unknown_count", 0) for x in fake
                           if all(isinstance(x.get(k, 0), int)
                                  for k in ("error_count", "unknown_count")))
        if lost > 0 and self.fault_during(PERF_FAULTS, r.t0, r.t1) is None and \
                self.drain_cut(r) is None and not self.stall_near(r.t0, r.t1):
            self.add(r.t0, "unexplained failure", "performance test: %d rows counted as errors "
                     "or unknown with no fault to explain them (a reload, a lock or the "
                     "collector do not)" % lost, [r])
        nodes = rep.get("per_node") or []
        for i, node in enumerate(nodes):
            if not isinstance(node, dict):
                self.add(r.t0, "wrong answer", "per_node entry %r" % (node,), [r])
                continue
            part = (i + 1) * n // len(nodes) - i * n // len(nodes)
            ns = node.get("success_count", 0)
            got = sum(node.get(k, 0) for k in ("success_count", "error_count", "unknown_count")
                      if isinstance(node.get(k, 0), int))
            if got != part:
                self.add(r.t0, "wrong count", "node %s: success + error + unknown = %d, its part "
                         "is %d" % (node.get("node"), got, part), [r])
            if node.get("node") == peer_url and run.garbage is not None and \
                    run.garbage.params["mode"] != "truncate" and ns != 0:
                self.add(r.t0, "wrong count", "the fake peer (answering %s) is counted %r rows "
                         "of success" % (run.garbage.params["mode"], ns), [r])

    # ------------------------------------------------------------------ final state

    def check_table(self, rows, titles, t_end):
        seen = {}
        for title in titles:
            seen[title] = seen.get(title, 0) + 1
        for title, k in seen.items():
            if k > 1:
                w = self.acked_titles.get(title) or self.maybe.get(title)
                self.add(t_end, "duplicate", "title %r is in the table %d times (a write ran "
                         "twice)" % (title, k), [w] if w else [])
        for tid, t in self.todos.items():
            if t.tainted:
                continue
            row = rows.get(tid)
            if row is None:
                if False not in t.exists:
                    self.add(t_end, "lost write", "todo %s, acknowledged and not deleted, is not "
                             "in the table" % tid)
                continue
            if True not in t.exists:
                self.add(t_end, "wrong state", "todo %s, whose DELETE was acknowledged, is in the "
                         "table" % tid)
            elif row[0] not in t.titles or row[1] not in t.dones:
                self.add(t_end, "lost write", "todo %s holds %r, want one of %r / done %r"
                         % (tid, row, sorted(t.titles, key=str)[:5], sorted(t.dones)))
        for tid, h in self.hot.items():
            row = rows.get(tid)
            if row is None:
                self.add(t_end, "lost write", "shared row %s is not in the table" % tid)
            elif row[0] not in h["titles"]:
                self.add(t_end, "wrong state", "shared row %s holds title %r that no write "
                         "that may have applied sent" % (tid, row[0]),
                         [self.never[row[0]]] if row[0] in self.never else [])
        for tid, (title, done) in rows.items():
            if tid in self.todos or tid in self.hot:
                continue
            if title in self.never:
                self.add(t_end, "applied after all", "a write answered \"not applied\" (or "
                         "refused) is in the table: %r" % title, [self.never[title]])
            elif title not in self.maybe:
                self.add(t_end, "wrong state", "row %s %r: no request made it" % (tid, title))

    # ------------------------------------------------------------------ all

    def run(self):
        for r in self.recs:
            if r.kind == "setup" and r.status == 201:
                self.hot_setup(r)
        for r in self.recs:
            if r.kind == "hot":
                self.hot_write(r)
        for r in self.recs:
            self.check_answer(r)
            if r.kind in ("owner", "slow"):
                self.check_owner(r)
            elif r.kind == "hot":
                self.check_hot(r)
            elif r.kind == "bad":
                self.check_bad(r)
        # lists last: every title written (or not) is known by then
        for r in self.recs:
            if r.kind in ("list", "deep"):
                self.check_list(r)
        for run in self.runs:
            self.check_perf(run, self.fake_url)
        return self.v
