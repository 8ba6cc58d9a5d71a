#!/bin/sh
# The shell pipeline of the speed benchmark: what a node's cron job typically runs.
#   sh bench/speed/shell.sh MIN_AGE_SECONDS CRICTL_TIMEOUT
# Exited containers (any age), NotReady sandboxes older than MIN_AGE_SECONDS one `crictl rmp`
# each (a jq age filter), `crictl rmi --prune`, then the content-store prune. crictl, ctr and jq
# come from PATH (bench/speed/run.py puts its counting wrappers first).
set -u
min_age=$1
timeout=$2
cut="$(( $(date +%s) - min_age ))000000000"
rc=0
# shellcheck disable=SC2046  # one word per id is the point
crictl --timeout "$timeout" rm $(crictl ps -a -q --state exited) || rc=1
for id in $(crictl pods --state NotReady -o json |
            jq -r --argjson cut "$cut" '.items[] | select((.createdAt | tonumber) < $cut) | .id'); do
    crictl --timeout "$timeout" rmp "$id" || rc=1
done
crictl --timeout "$timeout" rmi --prune || rc=1
ctr -n k8s.io content prune references || rc=1
exit $rc
