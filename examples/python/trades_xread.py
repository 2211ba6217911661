"""Seed 000/001's XREAD consumer, reading hotpath's trades stream unchanged.

Usage: trades_xread.py REDIS_URL PAIR [plain|hash-tag]
Prints each trade entry's fields as one JSON line, oldest first, and stops when no trade came
for a second. hotpath's README shows these lines; engine/tests/it/compat.rs runs this file.
"""

import json
import sys

import redis

url, pair = sys.argv[1], sys.argv[2]
layout = sys.argv[3] if len(sys.argv) > 3 else "plain"
stream = f"trades:{pair}" if layout == "plain" else f"trades:{{{pair}}}"

client = redis.Redis.from_url(url, decode_responses=True)
last_id = "0"  # "$": only trades written from now on
while True:
    reply = client.xread({stream: last_id}, count=100, block=1000)
    if not reply:
        break
    for _stream, entries in reply:
        for entry_id, fields in entries:
            # price, qty: exact decimal strings; raw_json: Binance's <pair>@trade event
            print(json.dumps(fields))
            last_id = entry_id
