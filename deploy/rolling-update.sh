#!/usr/bin/env bash
# Zero-downtime update of the compose `api` service: starts one new replica next to every
# running one, waits until all new replicas are healthy (models loaded and warmed up), then
# stops the old ones; each old replica finishes its in-flight requests while the proxy sends
# new requests to the others. New replicas load the model repository and run the image as they
# are now, so this is how a new model version, a rebuilt image or new settings go live.
#
#   deploy/rolling-update.sh [docker compose options]
#   e.g. deploy/rolling-update.sh -f docker-compose.yml -f docker-compose.cpu.yml
#
# Twice the replicas run for a while (mind the GPU memory). When a new replica is not healthy
# within ROLLOUT_TIMEOUT_S seconds (default 600) or turns unhealthy, the new replicas are
# removed again and the old ones keep serving (exit status 1).
# COMPOSE (default "docker compose") names the compose command.
set -euo pipefail

read -r -a compose <<<"${COMPOSE:-docker compose}"
compose+=("$@")
timeout_s="${ROLLOUT_TIMEOUT_S:-600}"
poll_s="${ROLLOUT_POLL_S:-5}"
stop_s="${ROLLOUT_STOP_S:-45}"

# the ids of the running api containers, one per line
api_ids() {
    "${compose[@]}" ps -q api
}

old=()
for id in $(api_ids); do
    old+=("$id")
done
if [ "${#old[@]}" -eq 0 ]; then
    echo "no running api replica: start the stack first (docker compose up -d)" >&2
    exit 1
fi
count="${#old[@]}"
echo "starting $count new api replica(s) next to the running one(s)"
"${compose[@]}" up -d --no-deps --no-recreate --scale "api=$((2 * count))" api

new=()
for id in $(api_ids); do
    if [[ " ${old[*]} " != *" $id "* ]]; then
        new+=("$id")
    fi
done
if [ "${#new[@]}" -eq 0 ]; then
    echo "no new api replica was started" >&2
    exit 1
fi

roll_back() {
    echo "$1: removing the new replica(s), the old ones keep serving" >&2
    docker stop -t "$stop_s" "${new[@]}" >/dev/null || true
    docker rm "${new[@]}" >/dev/null || true
    exit 1
}

health() {
    docker inspect --format '{{if .State.Health}}{{.State.Health.Status}}{{else}}none{{end}}' "$1"
}

waited=0
pending=("${new[@]}")
while [ "${#pending[@]}" -gt 0 ]; do
    starting=()
    for id in "${pending[@]}"; do
        case "$(health "$id")" in
            healthy) echo "new replica $id is healthy" ;;
            unhealthy | none) roll_back "new replica $id is unhealthy or has no health check" ;;
            *) starting+=("$id") ;;
        esac
    done
    pending=("${starting[@]+"${starting[@]}"}")
    if [ "${#pending[@]}" -eq 0 ]; then
        break
    fi
    if [ "$waited" -ge "$timeout_s" ]; then
        roll_back "new replica(s) ${pending[*]} not healthy after ${timeout_s}s"
    fi
    sleep "$poll_s"
    waited=$((waited + poll_s))
done

echo "stopping the ${count} old replica(s)"
docker stop -t "$stop_s" "${old[@]}" >/dev/null
docker rm "${old[@]}" >/dev/null
echo "done: ${#new[@]} api replica(s) serving"
