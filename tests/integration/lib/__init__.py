"""Integration-test library for todod, one job per module:

    env      the run: paths, the binary under test, the build, ports, process leftovers
    marks    @test (collected by conftest.py), skip, skip_if_sanitizer
    pg       private PostgreSQL servers (conf/dev/pg.sh), psql, the shared server
    client   HTTP: Response, the keep-alive Client
    notify   an sd_notify socket
    todod    todod daemons in temp directories
    load     client threads and write load
    checks   assertions on answers, polling
    metrics  Prometheus text: samples and values

conftest.py turns them into pytest fixtures. Python standard library only (pytest
aside), so that tests/soak/ can use them too.
"""
