"""What connflood's JSON report must say after a local cluster test.

    localcluster-report-check.py CONNFLOOD_JSON CONNECTIONS roll|failover

Checks: every connection open and active at the end, zero errors, nothing
lost, duplicated or reordered, every delivery made, joins on the 3 pods;
after `roll` (tools/localcluster-test.sh: every replica restarted) also
reconnects and shutdown notices, since the roll must have closed
connections; after `failover` (tools/localcluster-cluster-test.sh: a Redis
master killed) also zero rejected, since nothing may be refused with
`unavailable` through the failover. Prints one "what|ok" or "what|why" line
per check, the format both scripts read (check_lines in
tools/localcluster-checks.sh).
"""

import json
import sys


def main():
    path, n, kind = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    if kind not in ("roll", "failover"):
        sys.exit("the third argument is roll or failover")
    r = json.load(open(path))
    c, m = r["connections"], r["messages"]

    def line(what, good, value):
        print(f"{what}|{'ok' if good else value}")

    line(f"all {n} connected and active at the end", c["connected"] == n and c["active"] == n,
         f"connected {c['connected']}, active {c['active']}")
    line("zero errors", c["errors"] == 0, f"{c['errors']} {r['errors_by_kind']}")
    if kind == "failover":
        line("zero rejected (no `unavailable` through the failover)", m["rejected"] == 0,
             f"{m['rejected']} {r.get('rejected_by_code', {})}")
    line("zero lost", m["lost"] == 0, m["lost"])
    line("zero duplicated, zero reordered", m["duplicated"] == 0 and m["reordered"] == 0,
         f"duplicated {m['duplicated']}, reordered {m['reordered']}")
    if kind == "roll":
        line(f"reconnects: {c['reconnects']}, shutdown notices: {c['shutdown_notices']}",
             c["reconnects"] > 0 and c["shutdown_notices"] > 0, "the roll closed no connection")
    line(f"delivered {m['delivered']} of {m['expected']}", m["delivered"] == m["expected"] > 0, "incomplete")
    line(f"joins on {len(r['pods']['all_opens'])} pods over the run", len(r["pods"]["all_opens"]) == 3,
         r["pods"]["all_opens"])


main()
