# Sourced by the CI scripts that start a server: `stop_and_remove PID DIR` stops the server and
# removes its folder once it has exited (it writes there as it stops: its engine snapshot, its
# read models), so that `rm -rf` never races it. A server that has not exited within 10 s is
# killed.
stop_and_remove() {
    local server="$1" folder="$2"
    kill "$server" 2>/dev/null || true
    for _ in $(seq 1 100); do
        kill -0 "$server" 2>/dev/null || break
        sleep 0.1
    done
    kill -9 "$server" 2>/dev/null || true
    wait "$server" 2>/dev/null || true
    rm -rf "$folder"
}
