#!/bin/bash
# Compose healthcheck without curl or wget (the official Envoy and mock-IdP images have
# neither): GET http://127.0.0.1:PORT/PATH through bash's /dev/tcp; healthy on status 200.
#   probe.sh PORT PATH
set -eu
exec 3<>"/dev/tcp/127.0.0.1/$1"
printf 'GET %s HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n' "$2" >&3
read -r -t 5 _version status _reason <&3
[[ $status == 200 ]]
