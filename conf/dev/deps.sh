#!/usr/bin/env bash
# Install the Debian packages todod needs.
#   conf/dev/deps.sh build   what building needs
#   conf/dev/deps.sh test    what building and the whole test suite need
#   conf/dev/deps.sh bench   what the benchmarks need besides (nginx for a ceiling, perf)
# Quiet when nothing is missing. As root the missing packages are installed with
# apt-get; otherwise the command to run is printed and the exit status is 1.
set -euo pipefail

build_pkgs=(gcc make pkg-config libevent-dev libjson-c-dev uuid-dev libpq-dev libssl-dev
            libsystemd-dev postgresql-15 postgresql-client-15)
test_pkgs=(libcmocka-dev curl python3 python3-pytest python3-pytest-timeout prometheus wrk
           valgrind systemd nodejs npm haproxy pgbouncer clang libclang-rt-14-dev clang-format
           chromium man-db groff-base python3-jwt python3-cryptography iproute2 openssl)
bench_pkgs=(nginx-light linux-perf wrk)

case "${1:-}" in
    build) want=("${build_pkgs[@]}") ;;
    test) want=("${build_pkgs[@]}" "${test_pkgs[@]}") ;;
    bench) want=("${build_pkgs[@]}" "${bench_pkgs[@]}") ;;
    *) echo "usage: $0 build|test|bench" >&2; exit 2 ;;
esac

if ! command -v dpkg-query >/dev/null 2>&1; then
    echo "deps.sh: dpkg-query not found: this script knows Debian (12) only;" \
         "install the equivalents of: ${want[*]}" >&2
    exit 1
fi

# Installed packages and what they provide (a package such as NodeSource's nodejs
# provides npm: asking apt for Debian's npm then would only conflict with it).
have=$(dpkg-query -W -f='${db:Status-Status} ${Package} ${Provides}\n' 2>/dev/null |
       awk '$1 == "installed" {
                for (i = 2; i <= NF; i++) { p = $i; sub(/[,:].*$/, "", p); if (p != "") print p }
            }' | sort -u)

missing=()
for p in "${want[@]}"; do
    if ! grep -qxF -- "$p" <<<"$have"; then
        missing+=("$p")
    fi
done

[ "${#missing[@]}" -eq 0 ] && exit 0

if [ "$(id -u)" -eq 0 ]; then
    echo "deps.sh: installing missing packages: ${missing[*]}" >&2
    apt-get update
    # Packages such as nginx, haproxy and pgbouncer start their system service when
    # installed; the tests start their own servers on free loopback ports, so keep
    # the package scripts from starting anything (policy-rc.d, exit 101).
    added_policy=0
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod 0755 /usr/sbin/policy-rc.d
        added_policy=1
    fi
    rc=0
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}" || rc=$?
    [ "$added_policy" -eq 1 ] && rm -f /usr/sbin/policy-rc.d
    exit "$rc"
else
    echo "deps.sh: missing Debian packages: ${missing[*]}" >&2
    echo "install them with:" >&2
    echo "sudo apt-get install -y --no-install-recommends ${missing[*]}"
    exit 1
fi
