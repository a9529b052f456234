"""Client load for the tests: threads started together (run_threads), threads
running until a block ends (Threads), and WriteLoad, POSTs back to back with
every answer recorded and checked."""

import http.client
import threading
import time

def run_threads(n, fn, timeout=120):
    """Run fn(i) in n threads started together; returns their results (the
    exception instance where fn raised)."""
    results = [None] * n
    barrier = threading.Barrier(n)

    def body(i):
        try:
            barrier.wait(10)
            results[i] = fn(i)
        except BaseException as e:  # noqa: BLE001 - reported by the caller
            results[i] = e

    threads = [threading.Thread(target=body, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout)
    assert not any(t.is_alive() for t in threads), "client threads still running after %ds" % timeout
    return results


class Threads:
    """Client threads, each running one of `targets` (a callable taking no
    argument) until the `with` block ends; stop_flag tells them to end, lock
    guards what they record."""

    def __init__(self, targets, join_timeout=10):
        self.stop_flag = threading.Event()
        self.lock = threading.Lock()
        self.join_timeout = join_timeout
        self.threads = [threading.Thread(target=t, daemon=True) for t in targets]

    def __enter__(self):
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self.stop_flag.set()
        for t in self.threads:
            t.join(self.join_timeout)


class WriteLoad(Threads):
    """Threads POSTing todos back to back, each on its own keep-alive connection (no
    retries), each reading back the todo it was acknowledged last (unless read_back
    is false), until the `with` block ends. Records every answer as (sent, answered,
    thread, method, title, status, todo or error message); in `wrong`, every POST
    answer that is not the todo sent and every read that is not the todo
    acknowledged; in `errors`, every exception (connection errors, answers that are
    not JSON)."""

    def __init__(self, d, nthreads=4, timeout=10, read_back=True, prefix="load"):
        super().__init__([lambda k=k: self._run(k) for k in range(nthreads)], timeout + 5)
        self.d = d
        self.timeout = timeout
        self.read_back = read_back
        self.prefix = prefix
        self.answers = []
        self.wrong = []
        self.errors = []

    def _call(self, c, k, method, path, title, body=None):
        t0 = time.monotonic()
        r = c.request(method, path, body)
        t1 = time.monotonic()
        got = r.json()
        what = got if r.status in (200, 201) else got.get("error")
        with self.lock:
            self.answers.append((t0, t1, k, method, title, r.status, what))
        return r.status, what

    def _wrong(self, want, got):
        with self.lock:
            self.wrong.append((want, got))

    def _run(self, k):
        c = self.d.Client(timeout=self.timeout, retry=False)
        seq = 0
        last = None
        try:
            while not self.stop_flag.is_set():
                seq += 1
                title = "%s %d.%d" % (self.prefix, k, seq)
                try:
                    status, what = self._call(c, k, "POST", "/todos", title, {"title": title})
                    if status == 201:
                        if what.get("title") != title or what.get("done") is not False:
                            self._wrong(title, what)
                        last = what
                    else:
                        time.sleep(0.005)  # pace the retries while there is no database
                    if last is not None and self.read_back:
                        status, what = self._call(c, k, "GET", "/todos/" + last["id"],
                                                  last["title"])
                        if status == 200 and what != last:
                            self._wrong(last, what)
                except (OSError, http.client.HTTPException, ValueError) as e:
                    with self.lock:
                        self.errors.append("thread %d, %s: %r" % (k, title, e))
                    c.close()
                    time.sleep(0.01)
        finally:
            c.close()

    def of(self, method, status=None, since=0.0):
        """Answers to `method` requests sent at or after `since` (of that status)."""
        with self.lock:
            return [a for a in self.answers if a[3] == method and a[0] >= since and
                    (status is None or a[5] == status)]

    def first(self, method, status, since):
        """The first answer of that status to a request sent at or after `since`."""
        found = self.of(method, status, since)
        return min(found, key=lambda a: a[1]) if found else None

    def seen(self, status, since=0.0):
        """Some request sent at or after `since` was answered `status`."""
        with self.lock:
            return any(a[5] == status and a[0] >= since for a in self.answers)
