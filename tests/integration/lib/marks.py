"""Test registration: @test marks a function as a test (conftest.py collects the
marked functions under their own names); @test(slow=True) marks one that
TODOD_SKIP_SLOW=1 skips and that gets three times the time-out. skip() and
skip_if_sanitizer() end a test as skipped (pytest is imported only then, so that
tests/soak/ can import test modules without it)."""

from lib import env


def test(fn=None, *, slow=False):
    """Mark a test: @test or @test(slow=True). The name is the function name."""
    def mark(f):
        f.todod_test = {"slow": slow}
        return f
    if fn is not None:
        return mark(fn)
    return mark


def skip(reason):
    import pytest
    pytest.skip(reason)


def skip_if_sanitizer(reason="measures memory or timing; not meaningful under sanitizers"):
    if env.SANITIZER:
        skip(reason)
