# Sourced by .ci/run: makes the servers the test suite talks to available on 127.0.0.1.
# PostgreSQL: started if installed but stopped, installed from Debian packages if missing.
# Exports ATELIER_TEST_POSTGRES_URL and ATELIER_REQUIRE_POSTGRES=1 so the PostgreSQL tests
# fail (not skip) when the server cannot be reached.

_as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
_apt_updated=""
_apt_install() {
  [ -n "$_apt_updated" ] || { _as_root apt-get update -qq; _apt_updated=1; }
  DEBIAN_FRONTEND=noninteractive _as_root apt-get install -y -qq "$@" >/dev/null
}

_pg_ready() { pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; }

ensure_postgres() {
  if ! command -v pg_isready >/dev/null 2>&1 || ! ls /etc/postgresql/*/main >/dev/null 2>&1; then
    echo "ci: installing PostgreSQL from Debian packages"
    _apt_install postgresql
  fi
  if ! _pg_ready; then
    echo "ci: starting PostgreSQL"
    local version; version=$(ls /etc/postgresql | sort -V | tail -n 1)
    _as_root pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
    for _ in $(seq 1 30); do _pg_ready && break; sleep 1; done
  fi
  _pg_ready || { echo "ci: PostgreSQL is not reachable on 127.0.0.1:5432" >&2; return 1; }
  # A database of our own, reachable over TCP by the postgres role.
  if ! psql -h 127.0.0.1 -U postgres -d atelier_test -c 'select 1' >/dev/null 2>&1; then
    _as_root su postgres -c "psql -q -c \"ALTER USER postgres PASSWORD 'postgres'\"" >/dev/null 2>&1 || true
    _as_root su postgres -c "createdb atelier_test" 2>/dev/null || true
  fi
  export ATELIER_TEST_POSTGRES_URL="${ATELIER_TEST_POSTGRES_URL:-postgresql://postgres:postgres@127.0.0.1:5432/atelier_test}"
  export ATELIER_REQUIRE_POSTGRES=1
}

# promtool and prometheus (Debian's prometheus package) for tests/deploy: rule checks and a real
# Prometheus scraping running services. ATELIER_REQUIRE_PROMETHEUS=1 makes those tests fail, not skip.
ensure_prometheus() {
  if ! command -v promtool >/dev/null 2>&1 || ! command -v prometheus >/dev/null 2>&1; then
    echo "ci: installing Prometheus from Debian packages"
    _apt_install prometheus
  fi
  command -v promtool >/dev/null 2>&1 && command -v prometheus >/dev/null 2>&1 \
    || { echo "ci: promtool/prometheus not available after install" >&2; return 1; }
  export ATELIER_REQUIRE_PROMETHEUS=1
}

ensure_postgres
ensure_prometheus
