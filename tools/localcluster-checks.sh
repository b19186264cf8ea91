# shellcheck shell=bash
# tools/localcluster-checks.sh: what tools/localcluster-test.sh and
# tools/localcluster-cluster-test.sh share; sourced by both, not run.
#
#   free_base WIDTH          prints a base port below the ephemeral range
#                            whose WIDTH ports are all free (20 tries)
#   check WHAT RESULT        prints "ok   WHAT" when RESULT is "ok", else
#                            "FAIL WHAT: RESULT", and remembers the failure
#   verdict WHAT STATUS PROBLEM
#                            check WHAT, passed when STATUS is 0
#   check_lines TEXT         check each "WHAT|RESULT" line of TEXT (what
#                            the scripts' Python checks print)
#   all_passed               whether every check so far passed

CHECKS_FAILED=0

free_base() {
    local width=$1 try base p taken
    for ((try = 0; try < 20; try++)); do
        base=$((20000 + (RANDOM % 100) * 100))
        taken=0
        for ((p = base; p < base + width; p++)); do
            if ss -Htln "sport = :$p" | grep -q .; then taken=1; break; fi
        done
        if [ "$taken" = 0 ]; then echo "$base"; return 0; fi
    done
    echo "no free port range found" >&2
    return 1
}

check() {
    if [ "$2" = ok ]; then
        echo "ok   $1"
    else
        echo "FAIL $1: $2"
        CHECKS_FAILED=$((CHECKS_FAILED + 1))
    fi
}

verdict() { if [ "$2" = 0 ]; then check "$1" ok; else check "$1" "$3"; fi; }

check_lines() {
    local line
    while IFS= read -r line; do check "${line%%|*}" "${line#*|}"; done <<<"$1"
}

all_passed() { [ "$CHECKS_FAILED" = 0 ]; }
