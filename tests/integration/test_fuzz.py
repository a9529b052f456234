"""Fuzzing: the libFuzzer harnesses of tests/fuzz/ (make fuzz, make fuzz-smoke).

- `make fuzz-smoke` builds every harness with clang under ASan and UBSan and runs
  each for a few seconds from its seed corpus: exactly the expected harnesses
  run, each executes inputs, none finds anything, and the summary says so;
- every harness has a seed corpus of small files in the repository;
- the driver notices a finding: a harness that overflows a buffer makes
  tests/fuzz/run.sh exit non-zero and name the input it kept, which replays.

The smoke run happens once, in the release build's pass (the harnesses carry
their own sanitizers whatever the daemon under test is built with).
"""

import os
import re
import shutil
import subprocess
import tempfile

from lib import env
from lib.env import ROOT
from lib.marks import skip, test

FUZZ_DIR = os.path.join(ROOT, "tests", "fuzz")
EXPECTED = {"accesslog", "conf", "framing", "httpbody", "jsonstrict", "jwt", "query", "routes",
            "traceparent"}
LINE = re.compile(r"^fuzz (\w+): (\d+) executions in (\d+) s \((\d+)/s\), corpus (\d+) inputs: "
                  r"(.*)$")
SEED_MAX = 8192  # bytes: seeds stay small; what the fuzzer learns stays in the build tree


def _need_clang():
    clang = shutil.which(os.environ.get("FUZZ_CC", "clang"))
    assert clang, ("clang not found: conf/dev/deps.sh test installs clang and "
                   "libclang-rt-14-dev (libFuzzer)")
    return clang


def _harnesses():
    return {f[len("fuzz_"):-len(".c")] for f in os.listdir(FUZZ_DIR)
            if f.startswith("fuzz_") and f.endswith(".c")}


def _build_tree():
    """The build tree of the binary under test (BUILD=), as make check made it."""
    return os.path.dirname(os.path.abspath(env.TODOD_BIN))


@test
def fuzz_smoke_runs_every_harness_without_a_finding():
    if env.SANITIZER:
        skip("runs once, in the release build's pass")
    _need_clang()
    assert _harnesses() == EXPECTED, \
        "tests/fuzz/fuzz_*.c are %s, this test expects %s" % (sorted(_harnesses()),
                                                               sorted(EXPECTED))
    r = subprocess.run(["make", "-j2", "BUILD=" + _build_tree(), "FUZZ_JOBS=2", "fuzz-smoke"],
                       cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                       timeout=280)
    out = r.stdout
    ran = {}
    for line in out.splitlines():
        m = LINE.match(line)
        if m:
            ran[m.group(1)] = (int(m.group(2)), m.group(6))
    assert set(ran) == EXPECTED, \
        "make fuzz-smoke ran %s, want %s\n%s" % (sorted(ran), sorted(EXPECTED), out[-4000:])
    for name, (execs, verdict) in sorted(ran.items()):
        assert verdict == "no finding", "fuzz_%s: %s\n%s" % (name, verdict, out[-4000:])
        assert execs >= 100, "fuzz_%s ran only %d inputs" % (name, execs)
    assert "fuzz: %d harnesses, 0 findings" % len(EXPECTED) in out, out[-2000:]
    assert r.returncode == 0, "make fuzz-smoke: exit %d\n%s" % (r.returncode, out[-4000:])


@test
def every_fuzz_harness_has_a_small_seed_corpus():
    for name in sorted(_harnesses()):
        d = os.path.join(FUZZ_DIR, "corpus", name)
        assert os.path.isdir(d), "no seed corpus tests/fuzz/corpus/%s/" % name
        seeds = [os.path.join(d, f) for f in os.listdir(d)]
        assert len(seeds) >= 3, "tests/fuzz/corpus/%s/ has %d seeds" % (name, len(seeds))
        for s in seeds:
            assert os.path.isfile(s), "%s is not a file" % s
            assert os.path.getsize(s) <= SEED_MAX, \
                "%s is %d bytes (seeds stay under %d)" % (s, os.path.getsize(s), SEED_MAX)


@test
def fuzz_driver_reports_a_finding_and_keeps_its_input():
    clang = _need_clang()
    work = tempfile.mkdtemp(prefix="todod-fuzz-driver-")
    try:
        src = os.path.join(work, "boom.c")
        with open(src, "w") as f:
            f.write("#include <stdint.h>\n#include <stdlib.h>\n#include <string.h>\n"
                    "int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n);\n"
                    "int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n)\n"
                    "{\n    char *p = malloc(n + 1);\n    volatile char c;\n"
                    "    memcpy(p, d, n);\n    c = p[n + 1]; /* one past the end */\n"
                    "    (void)c;\n    free(p);\n    return 0;\n}\n")
        r = subprocess.run([clang, "-g", "-O1", "-fsanitize=fuzzer,address", "-o",
                            os.path.join(work, "fuzz_boom"), src],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                           timeout=120)
        assert r.returncode == 0, "clang: %s" % r.stdout
        r = subprocess.run([os.path.join(FUZZ_DIR, "run.sh"), "-b", work, "-t", "10", "boom"],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                           timeout=120)
        assert r.returncode != 0, "run.sh exited 0 on a crashing harness:\n" + r.stdout
        m = re.search(r"^fuzz boom: \d+ executions .*: FINDING \(exit status \d+\): (\S+)$",
                      r.stdout, re.M)
        assert m, "run.sh did not report the finding:\n" + r.stdout
        kept = m.group(1)
        assert kept.startswith(os.path.join(work, "findings", "boom") + "/"), kept
        assert os.path.isfile(kept), "the finding's input %s is missing" % kept
        assert "heap-buffer-overflow" in r.stdout, r.stdout
        assert "fuzz: 1 harnesses, 1 findings" in r.stdout, r.stdout
        # The kept input replays the crash.
        r = subprocess.run([os.path.join(work, "fuzz_boom"), kept], stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True, timeout=60)
        assert r.returncode != 0 and "heap-buffer-overflow" in r.stdout, r.stdout[-2000:]
    finally:
        shutil.rmtree(work, ignore_errors=True)
