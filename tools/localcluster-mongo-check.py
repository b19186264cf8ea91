"""Every message of a connflood run stored in MongoDB exactly once.

    localcluster-mongo-check.py CONNFLOOD_JSON MONGO_PORT

Run with the .venv-test Python (pymongo). Reads the `messages` collection of
the local cluster's nx-27017 on 127.0.0.1:MONGO_PORT and checks: as many
documents as connflood's sends minus its rejects; per room, seqs 1..max
without a gap or a repeat; each sent message (its marker cf|tag|conn|n)
stored once. Prints one "what|ok" or "what|why" line per check, the format
tools/localcluster-test.sh and tools/localcluster-cluster-test.sh read.
"""

import collections
import json
import sys
import time

import pymongo
import pymongo.errors

r = json.load(open(sys.argv[1]))
expected = r["messages"]["sent"] - r["messages"]["rejected"]
coll = pymongo.MongoClient(f"mongodb://127.0.0.1:{sys.argv[2]}/chat", serverSelectionTimeoutMS=5000).chat.messages
docs = []
# The writers batch: read until every message is there or 120 s have passed
# (a machine loaded by other work makes the last batches late).
deadline = time.monotonic() + 120
while True:
    try:
        docs = list(coll.find({}, {"room": 1, "seq": 1, "message": 1, "_id": 0}))
    except pymongo.errors.PyMongoError as e:
        # On a machine loaded by other work, pymongo's monitor may time out
        # and cancel the read in flight ("operation cancelled"): read again.
        if time.monotonic() > deadline:
            raise
        print(f"reading MongoDB failed ({e}); again", file=sys.stderr)
        time.sleep(1)
        continue
    if len(docs) >= expected or time.monotonic() > deadline:
        break
    time.sleep(0.5)
seqs = collections.defaultdict(list)
for d in docs:
    seqs[d["room"]].append(d["seq"])
bad = [room for room, s in seqs.items() if sorted(s) != list(range(1, len(s) + 1))]
markers = collections.Counter("|".join(d["message"].split("|")[:4]) for d in docs)
dups = sum(1 for v in markers.values() if v > 1)
print(f"MongoDB holds {len(docs)} messages, {expected} sent|" + ("ok" if len(docs) == expected else f"{len(docs)} stored"))
print("MongoDB: seqs 1..max per room, no gap, no repeat|" + ("ok" if not bad else f"rooms {bad}"))
print("MongoDB: no message stored twice|" + ("ok" if dups == 0 else f"{dups} markers twice"))
