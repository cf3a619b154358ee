#!/bin/sh
# Start one Redis Sentinel of queue.mode: sentinel.
#
# Sentinel keeps its state in its config file (it rewrites it), so the file lives in a
# writable volume and is written only when missing. The primary it first monitors is the one
# the other Sentinels name (a restarted Sentinel rejoins a set that may have failed over),
# else RAIBID_FIRST_PRIMARY. Quorum 2 of 3: one Sentinel alone never fails over.
#
# Environment: REDIS_PASSWORD (Redis's, also required by the Sentinels); RAIBID_ANNOUNCE, this
# Sentinel's stable name; RAIBID_PORT; RAIBID_FIRST_PRIMARY and RAIBID_SENTINELS (host:port);
# RAIBID_MASTER_NAME; RAIBID_DATA; RAIBID_DOWN_AFTER_MS (default 10000) and
# RAIBID_FAILOVER_TIMEOUT_MS (default 60000); RAIBID_BIND (unset: every address of the pod).
#
# Why 10 s: a Sentinel promotes only a replica whose INFO it read within the last 5 s, and reads
# INFO every 10 s until a replica reports its primary gone (then every second). Declaring the
# primary down sooner than 10 s after it fell silent often finds no "good" replica, aborts, and
# waits 2 x failover-timeout before the next attempt.
set -eu
port="${RAIBID_PORT:-26379}"
conf="${RAIBID_DATA:-/data}/sentinel.conf"
if [ ! -s "$conf" ]; then
  primary=""
  answer=$(REDISCLI_AUTH="$REDIS_PASSWORD" redis-cli --no-auth-warning -h "${RAIBID_SENTINELS%:*}" \
           -p "${RAIBID_SENTINELS##*:}" SENTINEL get-master-addr-by-name "$RAIBID_MASTER_NAME" 2>/dev/null || true)
  host=$(printf '%s\n' "$answer" | sed -n 1p)
  hport=$(printf '%s\n' "$answer" | sed -n 2p)
  case "$hport" in
    '' | *[!0-9]*) primary="$RAIBID_FIRST_PRIMARY" ;;
    *) primary="$host:$hport" ;;
  esac
  umask 077  # the file holds the password
  cat > "$conf" <<CONF
port $port
sentinel resolve-hostnames yes
sentinel announce-hostnames yes
sentinel announce-ip $RAIBID_ANNOUNCE
sentinel announce-port $port
requirepass "$REDIS_PASSWORD"
sentinel sentinel-pass "$REDIS_PASSWORD"
sentinel monitor $RAIBID_MASTER_NAME ${primary%:*} ${primary##*:} 2
sentinel auth-pass $RAIBID_MASTER_NAME "$REDIS_PASSWORD"
sentinel down-after-milliseconds $RAIBID_MASTER_NAME ${RAIBID_DOWN_AFTER_MS:-10000}
sentinel failover-timeout $RAIBID_MASTER_NAME ${RAIBID_FAILOVER_TIMEOUT_MS:-60000}
sentinel parallel-syncs $RAIBID_MASTER_NAME 1
CONF
fi
[ -z "${RAIBID_BIND:-}" ] || set -- --bind "$RAIBID_BIND" "$@"
exec redis-server "$conf" --sentinel "$@"
