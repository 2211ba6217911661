//! The PostgreSQL / TimescaleDB writer: trades as `ticks` rows (exact NUMERIC prices and
//! quantities, unique per exchange, symbol and trade id) and top-N book snapshots as `books`
//! rows (best bid/ask, spread in basis points), written in batches by binary COPY into staging
//! tables merged with `ON CONFLICT DO NOTHING`, exactly once. The schema is plain SQL under
//! `engine/migrations/postgres/`, applied at start ([`schema`]).

pub mod copy;
pub mod resend;
pub mod rows;
pub mod schema;
pub mod types;
pub mod writer;
