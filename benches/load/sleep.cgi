#!/bin/sh
# CGI equivalent of sleep.lua (fork + exec per request), for comparison only.
ms=$(printf '%s' "$QUERY_STRING" | sed -n 's/.*ms=\([0-9]*\).*/\1/p')
ms=${ms:-20}
sleep "$(awk "BEGIN{print $ms/1000}")"
printf 'Content-Type: text/plain\r\n\r\nnode %s slept %s ms\n' "$SERVER_NAME" "$ms"
