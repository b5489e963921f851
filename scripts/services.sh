#!/usr/bin/env bash
# Makes sure Redis and PostgreSQL answer on 127.0.0.1 before the tests run. Starts a redis-server found on PATH
# when none answers (throwaway: no persistence). With CI=true a service that cannot be reached fails the run.
set -uo pipefail
redis_up() { (exec 3<>/dev/tcp/127.0.0.1/${REDIS_PORT:-6379} && printf 'PING\r\n' >&3 && head -c 5 <&3 | grep -q PONG) 2>/dev/null; }
if ! redis_up; then
  if command -v redis-server >/dev/null; then
    echo "services: starting redis-server on port ${REDIS_PORT:-6379}"
    redis-server --daemonize yes --bind 127.0.0.1 --port "${REDIS_PORT:-6379}" --save "" --appendonly no \
      --dir /tmp --logfile /tmp/iii-test-redis.log >/dev/null
    for _ in $(seq 50); do redis_up && break; sleep 0.1; done
  fi
fi
if redis_up; then echo "services: redis ok"; else echo "services: redis NOT reachable"; fi
pg_up() { (exec 3<>/dev/tcp/127.0.0.1/${PGPORT:-5432}) 2>/dev/null; }
if ! pg_up && command -v pg_ctlcluster >/dev/null && [ -d /etc/postgresql ]; then
  echo "services: starting PostgreSQL"
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start 2>/dev/null || true
  for _ in $(seq 50); do pg_up && break; sleep 0.1; done
fi
if pg_up; then echo "services: postgresql ok"; else echo "services: postgresql NOT reachable"; fi
exit 0
