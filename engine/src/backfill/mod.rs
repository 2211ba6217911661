//! `hotpath backfill`: history fetched from Binance's REST API and written where the live
//! engine writes, for time before it ran. [`klines`]: `GET /api/v3/klines` pages into the
//! Kinesis klines stream and the Redis `kl:` hash.

pub mod klines;
