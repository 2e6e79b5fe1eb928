# What nginx and HAProxy are configured with in the bench scripts so that
# they do the same work as webcluster (sourced, not run): benches/load/run.sh,
# benches/load/switches.sh.

# peer_forwarding nginx|haproxy: the peer's lines that send the nodes the
# visitor's address, scheme and port as webcluster always does
# (X-Forwarded-For replaced with the visitor's address, X-Real-IP,
# X-Forwarded-Proto, X-Forwarded-Port), so that every proxy does the same
# work per request: these 100 bytes more per request cost the upstream
# nginx about 4% more CPU per request. PEER_FORWARDING=0 leaves them out,
# as the runs before the eleventh session did.
peer_forwarding() {
    [[ ${PEER_FORWARDING:-1} == 1 ]] || return 0
    case $1 in
        nginx)
            cat <<'EOF'
            proxy_set_header X-Forwarded-For $remote_addr;
            proxy_set_header X-Real-IP $remote_addr;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_set_header X-Forwarded-Port $server_port;
EOF
            ;;
        haproxy)
            cat <<'EOF'
    http-request set-header X-Forwarded-For %[src]
    http-request set-header X-Real-IP %[src]
    http-request set-header X-Forwarded-Proto http
    http-request set-header X-Forwarded-Port %[dst_port]
EOF
            ;;
    esac
}
