# Sourced by scripts/test: the system tools some tests need, installed where missing
# (Debian packages, when running as root with apt-get, as on CI): promtool checks the
# alert rules; Chromium runs the console's browser tests (tests/browser); PgBouncer runs
# the pipeline through a transaction pooler (tests/e2e/test_pgbouncer.py); redis-server and
# redis-sentinel run a primary, a replica and three sentinels (tests/ha/). Anything that
# cannot be installed here is reported, and the tests that need it say so (on CI, the
# browser tests fail without Chromium).
need_packages=()
command -v promtool >/dev/null 2>&1 || need_packages+=(prometheus)
[ -x "${CHROMIUM_PATH:-/usr/bin/chromium}" ] || need_packages+=(chromium)
{ command -v pgbouncer || [ -x /usr/sbin/pgbouncer ]; } >/dev/null 2>&1 || need_packages+=(pgbouncer)
command -v redis-server >/dev/null 2>&1 || need_packages+=(redis-server)
command -v redis-sentinel >/dev/null 2>&1 || need_packages+=(redis-sentinel)
if [ ${#need_packages[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "installing ${need_packages[*]} (Debian) for the tests ..." >&2
        export DEBIAN_FRONTEND=noninteractive
        apt-get install -y -qq --no-install-recommends "${need_packages[@]}" >/dev/null 2>&1 \
            || { apt-get update -qq >/dev/null 2>&1 \
                 && apt-get install -y -qq --no-install-recommends "${need_packages[@]}" >/dev/null 2>&1; } \
            || echo "warning: could not install ${need_packages[*]}; the tests that need them will say so" >&2
    else
        echo "note: ${need_packages[*]} missing (needs root and apt-get to install)" >&2
    fi
fi
