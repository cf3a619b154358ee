#!/bin/sh
# Start redis-server as the primary, or as a replica of the primary the Sentinels name.
#
# Used by the raibid-redis StatefulSet (the first primary) and raibid-redis-replica in
# queue.mode: sentinel. A server that restarts after a failover must not come back as a second
# primary, so the Sentinels are asked first; only when none of them knows a primary (the very
# first start of the set) is RAIBID_FIRST_PRIMARY the primary.
#
# Environment: REDIS_PASSWORD; RAIBID_ANNOUNCE, this server's stable name; RAIBID_PORT;
# RAIBID_FIRST_PRIMARY and RAIBID_SENTINELS (host:port each); RAIBID_MASTER_NAME; RAIBID_DATA,
# the AOF's directory; RAIBID_BIND, the address to listen on (unset: every address of the pod).
# Further arguments go to redis-server.
set -eu
port="${RAIBID_PORT:-6379}"
primary=""
tries=0
# The Sentinels may be starting too: a few seconds of asking covers a restart of the whole set.
while [ "$tries" -lt 5 ]; do
  answer=$(REDISCLI_AUTH="$REDIS_PASSWORD" redis-cli --no-auth-warning -h "${RAIBID_SENTINELS%:*}" \
           -p "${RAIBID_SENTINELS##*:}" SENTINEL get-master-addr-by-name "$RAIBID_MASTER_NAME" 2>/dev/null || true)
  host=$(printf '%s\n' "$answer" | sed -n 1p)
  hport=$(printf '%s\n' "$answer" | sed -n 2p)
  case "$hport" in
    '' | *[!0-9]*) ;;
    *) primary="$host:$hport"; break ;;
  esac
  tries=$((tries + 1))
  sleep 1
done
[ -n "$primary" ] || primary="$RAIBID_FIRST_PRIMARY"
# noeviction: an LRU policy could evict the job stream itself. AOF with fsync on every write:
# an accepted write survives a crash of this server. The server announces its stable name,
# which the Sentinels (resolve-hostnames) hand to clients after a failover.
set -- --port "$port" --dir "${RAIBID_DATA:-/data}" \
  --appendonly yes --appendfsync always --save "" --maxmemory-policy noeviction \
  --requirepass "$REDIS_PASSWORD" --masterauth "$REDIS_PASSWORD" \
  --replica-announce-ip "$RAIBID_ANNOUNCE" --replica-announce-port "$port" "$@"
[ -z "${RAIBID_BIND:-}" ] || set -- --bind "$RAIBID_BIND" "$@"
if [ "$primary" != "$RAIBID_ANNOUNCE:$port" ]; then
  set -- "$@" --replicaof "${primary%:*}" "${primary##*:}"
fi
exec redis-server "$@"
