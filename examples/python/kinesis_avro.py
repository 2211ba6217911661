"""Reads hotpath's Kinesis Avro payload (kinesis.payload = "avro") with fastavro.

Each Kinesis record holds one or more MarketData messages (schemas/avro/market_data.avsc) in
Avro single-object encoding: C3 01, the schema's CRC-64-AVRO fingerprint (8 bytes,
little-endian), then the binary datum. `messages(data)` yields the records of one Kinesis
record's data, checking each header against the schema.

Run as a script it reads JSON lines {"partition_key": ..., "data": "<hex>"} (what the test
fetched from kinesalite) and prints one JSON object per MarketData record. With boto3 the data
is `record["Data"]` of `get_records`.
"""

import io
import json
import sys
from pathlib import Path

import fastavro
from fastavro.schema import fingerprint, load_schema, to_parsing_canonical_form

SCHEMA_PATH = Path(__file__).resolve().parents[2] / "schemas" / "avro" / "market_data.avsc"


def load(path=SCHEMA_PATH):
    """The parsed schema and the 10-byte single-object header its messages start with."""
    schema = load_schema(str(path))
    # fastavro gives the fingerprint's 8 bytes as hex, in the little-endian order of the header.
    crc = fingerprint(to_parsing_canonical_form(schema), "CRC-64-AVRO")
    return schema, b"\xc3\x01" + bytes.fromhex(crc)


def messages(data, schema, header):
    """Yields the MarketData dicts of one Kinesis record's data."""
    buf = io.BytesIO(data)
    while buf.tell() < len(data):
        if buf.read(len(header)) != header:
            raise ValueError("not a MarketData single-object message (fingerprint differs)")
        yield fastavro.schemaless_reader(buf, schema)


def main(path):
    schema, header = load()
    with open(path, encoding="utf-8") as lines:
        for line in lines:
            record = json.loads(line)
            for market in messages(bytes.fromhex(record["data"]), schema, header):
                assert market["symbol"] == record["partition_key"]
                print(json.dumps(market))


if __name__ == "__main__":
    main(sys.argv[1])
