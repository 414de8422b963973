#!/usr/bin/env bash
# Start the local Redis and NATS JetStream servers the scaled-backend tests use, if they are down.
set -u
up() { python3 - "$1" <<'PY'
import socket, sys
try:
    socket.create_connection(("127.0.0.1", int(sys.argv[1])), 1).close()
except OSError:
    sys.exit(1)
PY
}
if ! up 6379; then
  echo "starting redis-server on 127.0.0.1:6379"
  mkdir -p /var/lib/redis /var/log/redis
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/ci.log
fi
if ! up 4222; then
  mkdir -p /var/lib/nats-server
  wheel="$(dirname "$0")/../.venv/bin/nats-server"
  if [ -x "$wheel" ]; then
    # the dev extra's nats-server (2.15) can fsync before every acknowledgement
    echo "starting $("$wheel" --version) (JetStream, sync_interval: always) on 127.0.0.1:4222"
    printf 'jetstream { store_dir: "/var/lib/nats-server", sync_interval: always }\n' \
      > /var/lib/nats-server/trimtab.conf
    # its own pid file: other nats-servers of the same binary (tests' own) are not this one
    start-stop-daemon --start --oknodo --background --make-pidfile \
      --pidfile /var/lib/nats-server/trimtab.pid --exec "$(realpath "$wheel")" -- \
      -a 127.0.0.1 -p 4222 -m 8222 -c /var/lib/nats-server/trimtab.conf -l /var/log/nats-server.log
  else
    echo "starting nats-server (JetStream) on 127.0.0.1:4222"
    start-stop-daemon --start --oknodo --background --exec /usr/sbin/nats-server -- \
      -a 127.0.0.1 -p 4222 -js -sd /var/lib/nats-server -l /var/log/nats-server.log
  fi
fi
for port in 6379 4222; do
  for _ in $(seq 50); do up $port && break; sleep 0.1; done
  up $port || { echo "service on port $port did not come up"; exit 1; }
done
