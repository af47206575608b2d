#!/usr/bin/env bash
# Slowloris (slow headers) and slow-POST (slow body) against a local Kraken, with slowhttptest.
#
# Starts `python -m kraken serve --demo` in a temp dir on a free 127.0.0.1 port, with the head
# and body timeouts shortened to -T seconds so the cuts show within a short run, then for each
# mode runs slowhttptest (bounded: -c connections, -l seconds) while probing GET /healthz every
# 250 ms, and prints a verdict: Kraken must keep answering /healthz quickly during and after the
# attack, and must have closed every attack connection itself by the end.
#
#   bench/slowhttp.sh                                              # -c 200 -l 20 -T 5
#   bench/slowhttp.sh -c 500 -l 30 -T 5 -m slowloris               # one mode, more connections
#
# Python: $PYTHON, else the checkout's .venv/bin/python, else python3 (it must import kraken).
# Needs slowhttptest and curl (apt-get install -y slowhttptest curl). Only the Kraken process
# this script started is stopped (by PID). Exit status 0 = every verdict PASS.
set -euo pipefail

REPO="$(cd "$(dirname "$0")/.." && pwd)"
if [ -z "${PYTHON:-}" ]; then
    PYTHON=python3
    if [ -x "$REPO/.venv/bin/python" ]; then PYTHON="$REPO/.venv/bin/python"; fi
fi
CONNS=200
SECONDS_MAX=20
RATE=100
INTERVAL=2
TIMEOUT=5
MODES="slowloris,slowbody"
MAX_PROBE_MS=1000

usage() {
    sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'
    echo "options: -c CONNS ($CONNS) -l SECONDS ($SECONDS_MAX) -r RATE/s ($RATE) -i INTERVAL_S ($INTERVAL)"
    echo "         -T KRAKEN_TIMEOUT_S ($TIMEOUT) -m MODES ($MODES) -P MAX_PROBE_MS ($MAX_PROBE_MS)"
}

while getopts "c:l:r:i:T:m:P:h" opt; do
    case "$opt" in
        c) CONNS="$OPTARG" ;;
        l) SECONDS_MAX="$OPTARG" ;;
        r) RATE="$OPTARG" ;;
        i) INTERVAL="$OPTARG" ;;
        T) TIMEOUT="$OPTARG" ;;
        m) MODES="$OPTARG" ;;
        P) MAX_PROBE_MS="$OPTARG" ;;
        *) usage; exit 2 ;;
    esac
done

for tool in slowhttptest curl; do
    command -v "$tool" >/dev/null || { echo "slowhttp.sh: $tool not installed" >&2; exit 2; }
done
"$PYTHON" -c 'import kraken' 2>/dev/null || {
    echo "slowhttp.sh: $PYTHON cannot import kraken (make .venv as README.md says, or set PYTHON)" >&2
    exit 2
}

TMP="$(mktemp -d -t kraken-slowhttp-XXXXXX)"
KRAKEN_PID=""
PROBE_PID=""

# shellcheck disable=SC2317  # run by the EXIT trap
cleanup() {
    if [ -n "$PROBE_PID" ]; then kill "$PROBE_PID" 2>/dev/null || true; fi
    if [ -n "$KRAKEN_PID" ] && kill -0 "$KRAKEN_PID" 2>/dev/null; then
        kill -TERM "$KRAKEN_PID" 2>/dev/null || true
        for _ in $(seq 1 50); do kill -0 "$KRAKEN_PID" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$KRAKEN_PID" 2>/dev/null || true
    fi
    rm -rf "$TMP"
}
trap cleanup EXIT

PORT="$("$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
BASE="http://127.0.0.1:$PORT"

# The head/body timeouts, shortened; body_timeout_s (the slow-POST pace) only if this Kraken
# knows the key (an unknown key is a config error).
EXTRA=""
BODY_CUT_S=30  # Kraken's default body_timeout_s, when it cannot be set here
if "$PYTHON" -c 'import dataclasses, sys; from kraken.config import ServerConfig
sys.exit(0 if "body_timeout_s" in {f.name for f in dataclasses.fields(ServerConfig)} else 1)'; then
    EXTRA="body_timeout_s = $TIMEOUT"
    BODY_CUT_S=$TIMEOUT
fi
cat > "$TMP/kraken.toml" <<EOF
[server]
host = "127.0.0.1"
port = $PORT
head_timeout_s = $TIMEOUT
body_idle_timeout_s = $TIMEOUT
$EXTRA

[store]
path = "$TMP/kraken.db"
EOF

(cd "$TMP" && PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}" exec "$PYTHON" -m kraken serve --demo \
    --config "$TMP/kraken.toml" >"$TMP/kraken.log" 2>&1) &
KRAKEN_PID=$!
for _ in $(seq 1 200); do
    curl -s -o /dev/null -m 1 "$BASE/healthz" && break
    kill -0 "$KRAKEN_PID" 2>/dev/null || { echo "kraken exited:"; tail -20 "$TMP/kraken.log"; exit 2; }
    sleep 0.1
done
curl -s -o /dev/null -m 1 "$BASE/healthz" || { echo "kraken did not start"; tail -20 "$TMP/kraken.log"; exit 2; }
echo "kraken pid $KRAKEN_PID on $BASE; head/body timeouts ${TIMEOUT}s${EXTRA:+ (body_timeout_s too)}"
echo "attack: $CONNS connections at $RATE/s, follow-up every ${INTERVAL}s, at most ${SECONDS_MAX}s per mode"

probe_loop() {  # one /healthz per 250 ms, bounded in count: "<status> <seconds>" per line
    local out="$1" n=$(( (SECONDS_MAX + 40) * 4 ))
    for _ in $(seq 1 "$n"); do
        curl -s -o /dev/null -m 2 -w '%{http_code} %{time_total}\n' "$BASE/healthz" >>"$out" || echo "000 2" >>"$out"
        sleep 0.25
    done
}

summarise_probes() {  # prints "ok/total max_ms", returns 1 if any probe failed or was slow
    awk -v max="$MAX_PROBE_MS" '
        { n++; ms = $2 * 1000; if (ms > worst) worst = ms; if ($1 == 200 && ms <= max) ok++ }
        END { printf "%d/%d ok, max %.0f ms", ok, n, worst; exit (n > 0 && ok == n) ? 0 : 1 }' "$1"
}

FAILED=0
IFS=',' read -ra MODE_LIST <<<"$MODES"
for mode in "${MODE_LIST[@]}"; do
    case "$mode" in
        slowloris) args=(-H -u "$BASE/healthz"); cut_s=$TIMEOUT ;;
        slowbody) args=(-B -u "$BASE/v1/chat/completions" -t POST -s 8192 -x 16); cut_s=$BODY_CUT_S ;;
        *) echo "unknown mode $mode (slowloris, slowbody)"; exit 2 ;;
    esac
    # long enough for the last connection (opened CONNS/RATE s in) to reach Kraken's cut
    length=$SECONDS_MAX need=$(( cut_s + CONNS / RATE + 2 * INTERVAL + 3 ))
    if [ "$length" -lt "$need" ]; then
        echo "($mode: running ${need}s instead of ${length}s: Kraken cuts these after ${cut_s}s)"
        length=$need
    fi
    during="$TMP/$mode.during" after="$TMP/$mode.after"
    : >"$during"
    SECONDS_MAX=$length probe_loop "$during" &
    PROBE_PID=$!
    start=$(date +%s.%N)
    timeout $((length + 30)) slowhttptest "${args[@]}" -c "$CONNS" -r "$RATE" -i "$INTERVAL" \
        -l "$length" -p 3 -g -o "$TMP/$mode" >"$TMP/$mode.out" 2>&1 || true
    elapsed=$(awk -v s="$start" -v e="$(date +%s.%N)" 'BEGIN { printf "%.1f", e - s }')
    kill "$PROBE_PID" 2>/dev/null || true
    wait "$PROBE_PID" 2>/dev/null || true
    PROBE_PID=""
    : >"$after"
    for _ in 1 2 3 4 5; do
        curl -s -o /dev/null -m 2 -w '%{http_code} %{time_total}\n' "$BASE/healthz" >>"$after" || echo "000 2" >>"$after"
    done

    # slowhttptest's CSV: Seconds,Closed,Pending,Connected,... one row per second
    read -r peak closed last_connected < <(awk -F, 'NR > 1 {
            if ($4 > peak) peak = $4; closed = $2; connected = $4 }
        END { print peak + 0, closed + 0, connected + 0 }' "$TMP/$mode.csv" 2>/dev/null || echo "0 0 -1")
    exit_status=$(sed 's/\x1b\[[0-9;]*m//g' "$TMP/$mode.out" | sed -n 's/^Exit status: *//p' | tail -1)
    ended=$(sed 's/\x1b\[[0-9;]*m//g' "$TMP/$mode.out" | sed -n 's/^Test ended on \([0-9]*\).*/\1/p' | tail -1)
    d_ok=0; a_ok=0
    d_text=$(summarise_probes "$during") && d_ok=1
    a_text=$(summarise_probes "$after") && a_ok=1
    cut_ok=0  # the CSV's last row may predate the last closes; the exit status does not
    if [ "$closed" -ge "$CONNS" ] || [ "${exit_status#No open connections left}" != "$exit_status" ]; then
        cut_ok=1
    fi
    verdict=FAIL
    if [ $d_ok -eq 1 ] && [ $a_ok -eq 1 ] && [ $cut_ok -eq 1 ] && kill -0 "$KRAKEN_PID" 2>/dev/null; then
        verdict=PASS
    else
        FAILED=1
    fi
    echo
    echo "== $mode: $verdict (${elapsed}s)"
    echo "   attack connections: peak $peak held open; last per-second sample: $closed closed by Kraken, $last_connected open"
    echo "   slowhttptest: ended on second ${ended:-?}: ${exit_status:-?}"
    echo "   /healthz during the attack: $d_text (limit ${MAX_PROBE_MS} ms)"
    echo "   /healthz after the attack:  $a_text"
done

echo
if kill -0 "$KRAKEN_PID" 2>/dev/null; then
    echo "kraken still running after all modes"
else
    echo "kraken died"
    FAILED=1
fi
grep -E "Traceback|ERROR" "$TMP/kraken.log" | head -5 || true
if [ $FAILED -eq 0 ]; then echo "verdict: PASS"; else echo "verdict: FAIL"; fi
exit $FAILED
