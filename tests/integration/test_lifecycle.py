"""Stops, reloads and a killed master, true to the end (DAEMON.md "Signals and
lifecycle"): workers do not outlive a master killed with SIGKILL, also as
another user."""

import os
import pwd
import signal

from harness import skip, test, Todod, wait_until


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
