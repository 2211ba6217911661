//! What is Binance-specific about its REST API, shared by the engine's client and the
//! simulator that imitates Binance: the endpoints and their request weights ([`weights`]), the
//! weight window and the 429 / 418 / `Retry-After` rules ([`rate_limit`]), exact decimal
//! parsing ([`decimal`]), the REST client itself ([`rest`], on hyper) and its SBE answers
//! ([`rest_sbe`]).
//!
//! Nothing here depends on the simulator; the simulator depends on this.

pub mod decimal;
pub mod rate_limit;
pub mod rest;
pub mod rest_sbe;
pub mod weights;
