"""Seed 004's reader of hotpath's state: the order book, trade windows and features of a pair.

Usage: state.py REDIS_URL PAIR [plain|hash-tag]
Reads ob:, tr:...:1s, tr:...:5s and feat: in one MULTI/EXEC (one instant: a re-anchor swaps
them together) and prints them as one JSON object, the book's sides parsed.
hotpath's README shows these lines; engine/tests/it/compat.rs runs this file.
"""

import json
import sys

import redis

url, pair = sys.argv[1], sys.argv[2]
layout = sys.argv[3] if len(sys.argv) > 3 else "plain"


def key(prefix, suffix=""):
    symbol = pair if layout == "plain" else f"{{{pair}}}"
    return f"{prefix}{symbol}{suffix}"


client = redis.Redis.from_url(url, decode_responses=True)
pipe = client.pipeline(transaction=True)
for name in (key("ob:"), key("tr:", ":1s"), key("tr:", ":5s"), key("feat:")):
    pipe.hgetall(name)
ob, tr_1s, tr_5s, feat = pipe.execute()

bids = json.loads(ob["bids"])  # [["price", "qty"], ...], best first, exact decimals
asks = json.loads(ob["asks"])
print(json.dumps({"ob": ob, "bids": bids, "asks": asks, "tr_1s": tr_1s, "tr_5s": tr_5s, "feat": feat}))
