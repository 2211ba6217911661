"""Seed 000/001's consumer group ("signals"), reading hotpath's trades stream unchanged.

Usage: trades_group.py REDIS_URL PAIR [plain|hash-tag]
Prints each trade entry's fields as one JSON line and acknowledges it; stops when no trade came
for a second. hotpath's README shows these lines; engine/tests/it/compat.rs runs this file.
"""

import json
import sys

import redis

url, pair = sys.argv[1], sys.argv[2]
layout = sys.argv[3] if len(sys.argv) > 3 else "plain"
stream = f"trades:{pair}" if layout == "plain" else f"trades:{{{pair}}}"

client = redis.Redis.from_url(url, decode_responses=True)
try:
    client.xgroup_create(stream, "signals", id="0", mkstream=True)
except redis.ResponseError as e:
    if "BUSYGROUP" not in str(e):  # the group exists already: keep its position
        raise
while True:
    reply = client.xreadgroup(
        groupname="signals",
        consumername="signals-1",
        streams={stream: ">"},
        count=100,
        block=1000,
    )
    if not reply:
        break
    for _stream, entries in reply:
        for entry_id, fields in entries:
            print(json.dumps(fields))
            client.xack(stream, "signals", entry_id)
