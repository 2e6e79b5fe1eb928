# Loopback port helpers shared by benches/load/callgrind.sh,
# benches/load/idleheap.sh and scripts/build-pgo.sh (sourced, not run).

# A free port on 127.0.0.1, chosen by the kernel.
free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# wait_port PORT [TRIES]: wait until something listens on 127.0.0.1:PORT,
# trying every 50 ms, TRIES times at most [200].
wait_port() {
    for _ in $(seq 1 "${2:-200}"); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.05
    done
    echo "nothing listens on port $1" >&2
    return 1
}
