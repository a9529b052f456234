"""The seeded chaos soak (tests/soak/, `make soak`) in its short form: a fixed
seed, 75 s of load and faults against three instances (the release and the
sanitizer builds of the tree under test), a primary with a streaming standby
and PgBouncer. It must end in PASS: every answer true, the table as the answers
say, no process dead of a signal it was not sent, sanitizers silent, resources
flat. Its report is printed when it fails; the same seed replays its schedule
(`make soak SOAK_SEED=... SOAK_SECONDS=75`).

It runs once, in the release build's pass (it runs both builds itself)."""

import os
import subprocess
import sys

from lib import env
from lib.env import ROOT
from lib.marks import skip, test

SEED = 20261207
SECONDS = 75


@test(slow=True)
def soak_of_75_seconds_with_a_fixed_seed_finds_no_violation():
    if env.SANITIZER:
        skip("runs once, in the release build's pass")
    tree = os.path.dirname(os.path.abspath(env.TODOD_BIN))
    san = os.path.join(tree, "san", "todod")
    assert os.access(san, os.X_OK), "%s is not built (make SAN=1 all)" % san
    r = subprocess.run([sys.executable, os.path.join(ROOT, "tests", "soak", "soak.py"),
                        "--seconds", str(SECONDS), "--seed", str(SEED),
                        "--bin", env.TODOD_BIN, "--san-bin", san],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                       timeout=SECONDS + 600)
    out = r.stdout
    last = out.rstrip("\n").splitlines()[-1] if out.strip() else ""
    report = out[out.find("soak report"):] if "soak report" in out else out[-6000:]
    assert r.returncode == 0 and last == "PASS seed=%d" % SEED, \
        "the soak failed (exit %d, last line %r):\n%s" % (r.returncode, last, report[-12000:])
