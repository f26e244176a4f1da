# Sourced by .ci/run (and usable by hand: `source .ci/services.sh && start_postgres`).
# Starts the services the tests need, on loopback only, in throw-away folders.

_free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# As root, run a command as the postgres user: PostgreSQL refuses to run as root.
_as_postgres() {
    if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

start_postgres() {
    local bin
    bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
    if [ -z "$bin" ] || [ ! -x "$bin/postgres" ]; then
        echo "PostgreSQL server not installed" >&2
        return 1
    fi
    PG_DATA=$(mktemp -d /tmp/contactsync-pg.XXXXXX)
    [ "$(id -u)" = 0 ] && chown postgres: "$PG_DATA"
    PG_PORT=$(_free_port)
    PG_BIN=$bin
    _as_postgres "$bin/initdb" -D "$PG_DATA/data" -A trust -U postgres --no-sync >/dev/null
    _as_postgres "$bin/pg_ctl" -D "$PG_DATA/data" -w -l "$PG_DATA/server.log" \
        -o "-c listen_addresses=127.0.0.1 -p $PG_PORT -k $PG_DATA -c fsync=off" start >/dev/null
    export CONTACTSYNC_TEST_PG_URL="postgresql://postgres@127.0.0.1:$PG_PORT/postgres"
    echo "PostgreSQL on 127.0.0.1:$PG_PORT"
}

stop_postgres() {
    [ -n "${PG_DATA:-}" ] || return 0
    _as_postgres "$PG_BIN/pg_ctl" -D "$PG_DATA/data" -m fast stop >/dev/null 2>&1 || true
    rm -rf "$PG_DATA"
}

# A local account with a password, for the SFTP password-authentication test. Root only: it
# adds a system user (on CI's throw-away machine), whom the tests' own sshd lets in by
# password; the password is new each run and lives only in the environment.
add_sftp_password_user() {
    if [ "$(id -u)" != 0 ]; then
        echo "not root: no SFTP password account" >&2
        return 0
    fi
    local user=contactsync-sftp password
    id "$user" >/dev/null 2>&1 || useradd --create-home --shell /bin/sh "$user"
    password=$(python3 -c 'import secrets; print(secrets.token_urlsafe(18))')
    echo "$user:$password" | chpasswd
    export CONTACTSYNC_TEST_SFTP_LOGIN="$user:$password"
    echo "SFTP password account $user"
}
