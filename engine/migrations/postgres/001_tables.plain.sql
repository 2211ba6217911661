-- hotpath migration 001, plain PostgreSQL (no TimescaleDB): the `ticks` and `books` tables,
-- range-partitioned by time, one partition per UTC day (the writer creates each day's
-- partition before it writes rows of that day, and drops old ones under
-- postgres.retention_days). Idempotent: every statement can run again.

-- Seed 002's queries join ticks to assets on asset_id; here the asset is the symbol.
CREATE TABLE IF NOT EXISTS assets (
    asset_id text PRIMARY KEY,
    symbol   text NOT NULL
);

-- One row per trade. A trade's time never changes, so the unique key (which must hold the
-- partition key) is (exchange, symbol, trade_id) in effect: a retried batch never duplicates.
CREATE TABLE IF NOT EXISTS ticks (
    exchange   text        NOT NULL,
    symbol     text        NOT NULL,
    asset_id   text        GENERATED ALWAYS AS (symbol) STORED,
    trade_id   bigint      NOT NULL,
    price      numeric     NOT NULL,
    qty        numeric     NOT NULL,
    side       text        NOT NULL CHECK (side IN ('buy', 'sell')),
    ts         timestamptz NOT NULL,
    event_time timestamptz NOT NULL,
    CONSTRAINT ticks_trade UNIQUE (exchange, symbol, trade_id, ts)
) PARTITION BY RANGE (ts);
CREATE INDEX IF NOT EXISTS ticks_symbol_ts ON ticks (symbol, ts);

-- Top-N book snapshots (from the depth20 stream), at most one per symbol per
-- postgres.book_interval_ms, with the best levels and the spread in basis points.
CREATE TABLE IF NOT EXISTS books (
    venue        text             NOT NULL,
    symbol       text             NOT NULL,
    update_id    bigint           NOT NULL,
    ts           timestamptz      NOT NULL,
    best_bid     numeric,
    best_bid_qty numeric,
    best_ask     numeric,
    best_ask_qty numeric,
    spread_bps   double precision,
    bid_prices   numeric[]        NOT NULL,
    bid_qtys     numeric[]        NOT NULL,
    ask_prices   numeric[]        NOT NULL,
    ask_qtys     numeric[]        NOT NULL,
    CONSTRAINT books_snapshot UNIQUE (venue, symbol, update_id, ts)
) PARTITION BY RANGE (ts);
CREATE INDEX IF NOT EXISTS books_symbol_ts ON books (symbol, ts);
