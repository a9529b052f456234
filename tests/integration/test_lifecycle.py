"""Stops, reloads and a killed master, true to the end (DAEMON.md "Signals and
lifecycle"): workers do not outlive a master killed with SIGKILL, also as
another user; a reload that fails changes nothing, not even the listening
socket, and never leaves systemd "reloading"."""

import os
import pwd
import signal
import socket
import time

from harness import Client, NotifySocket, free_port, skip, test, Todod, wait_until


def alive(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


@test
def workers_do_not_outlive_a_killed_master_when_they_run_as_another_user():
    if os.geteuid() != 0:
        skip("needs root")
    pwd.getpwnam("nobody")
    with Todod(user="nobody", workers=2) as d:
        d.start()
        workers = d.worker_pids()
        assert len(workers) == 2, workers
        os.kill(d.pid, signal.SIGKILL)
        d.proc.wait(5)
        assert wait_until(lambda: not any(alive(p) for p in workers), 5), \
            "workers still running after their master died: %r" % [p for p in workers if alive(p)]


@test
def a_reload_that_fails_changes_nothing_not_even_the_listening_socket():
    if os.geteuid() != 0:
        skip("needs root (the user is checked only then)")
    with NotifySocket() as ns, Todod(workers=1) as d:
        d.start(notify_socket=ns)
        assert ns.wait_for("READY=1", 5), ns.messages()
        old = (d.host, d.port)
        new = ("127.0.0.7", free_port("127.0.0.7"))
        n = len(ns.messages())
        d.write_conf(listen="%s:%d" % new, user="no-such-user-here")
        d.signal(signal.SIGHUP)
        assert wait_until(lambda: "reload failed" in d.log(), 5), d.log_tail()
        time.sleep(0.3)
        msgs = ns.messages()[n:]
        # systemd is never left "reloading": a RELOADING=1 would need its READY=1
        reloading = [i for i, m in enumerate(msgs) if "RELOADING=1" in m]
        assert not reloading or any("READY=1" in m for m in msgs[reloading[-1] + 1:]), msgs

        def refused():
            try:
                socket.create_connection(new, timeout=1).close()
                return False
            except ConnectionRefusedError:
                return True
        assert refused(), "the failed reload took the new address"
        # a worker started after the failed reload serves the old address
        (worker,) = d.worker_pids()
        os.kill(worker, signal.SIGKILL)
        assert wait_until(lambda: d.worker_pids() and d.worker_pids() != [worker], 5)
        with Client(*old, timeout=2) as c:
            assert wait_until(lambda: c.request("GET", "/health").status == 200, 5)
        assert refused(), "the new address is served after all"
