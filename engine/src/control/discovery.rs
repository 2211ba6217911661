//! Pair discovery (seed 000): which symbols to subscribe, from Binance's `/api/v3/exchangeInfo`
//! (status, quote asset) and `/api/v3/ticker/24hr` (24 h quote volume), refreshed every
//! `discovery.refresh_s`.
//!
//! Pure core: [`rank`] (the wanted list: the fallback pairs that are TRADING, then the other
//! TRADING symbols of the quote asset by quote volume, down to `pairs_limit`) and [`plan`]
//! (what to add, remove and mark halted to go from the subscribed list to the wanted one).
//! Shell: [`initial`] (the list `hotpath run` starts with: discovered, or the fallback pairs
//! when discovery fails) and [`spawn`] (the refresh thread: it sends each change through the
//! control plane's pair-change channel, the path `POST`/`DELETE /pairs` take, so the feed's
//! owner carries it out with `Feed::add_symbol` / `remove_symbol` / `halt_symbol`). A failed
//! refresh keeps the current list.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};

use super::{PairChange, PairRequest};
use crate::binance::rest::{RestClient, RestError, SymbolListing, Ticker24hr};
use crate::config::{DiscoveryConfig, RunConfig};
use crate::metrics::Counter;
use crate::shard::Shard;

/// The status of a symbol that trades.
const TRADING: &str = "TRADING";

/// Statuses that mean trading stopped: the symbol is unsubscribed and marked halted.
const HALTED: [&str; 2] = ["HALT", "BREAK"];

/// Discovery's counters, read by `/metrics`.
#[derive(Debug, Default)]
pub struct DiscoveryStats {
    /// Refreshes whose REST calls answered.
    pub refreshes: Counter,
    /// Refreshes that failed (the list was kept).
    pub failures: Counter,
    /// Symbols added by discovery.
    pub added: Counter,
    /// Symbols removed by discovery (halted ones included).
    pub removed: Counter,
    /// Symbols seen HALT or BREAK that were subscribed (or are fallback pairs), sorted.
    pub halted: Mutex<Vec<String>>,
}

/// What a refresh changes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// Subscribed symbols that are HALT or BREAK now: unsubscribed and marked halted.
    pub halt: Vec<String>,
    /// Subscribed symbols no longer wanted (other reasons).
    pub remove: Vec<String>,
    /// Wanted symbols not subscribed, in rank order.
    pub add: Vec<String>,
}

/// The wanted symbols, in rank order: the fallback pairs that are TRADING (in their order),
/// then the TRADING symbols of `quote_asset` (any, if empty) by 24 h quote volume, highest
/// first (ties by name), until `pairs_limit` symbols (more only if the fallback pairs alone
/// are more). A symbol without a ticker or with an unreadable volume counts as volume 0.
pub fn rank(
    listings: &[SymbolListing],
    tickers: &[Ticker24hr],
    config: &DiscoveryConfig,
) -> Vec<String> {
    let trading: HashSet<&str> = listings
        .iter()
        .filter(|l| l.status == TRADING)
        .map(|l| l.symbol.as_str())
        .collect();
    let volumes: HashMap<&str, f64> = tickers
        .iter()
        .map(|t| {
            let volume = t.quote_volume.parse::<f64>().unwrap_or(0.0);
            (
                t.symbol.as_str(),
                if volume.is_finite() { volume } else { 0.0 },
            )
        })
        .collect();
    let mut wanted: Vec<String> = config
        .fallback_pairs
        .iter()
        .filter(|s| trading.contains(s.as_str()))
        .cloned()
        .collect();
    let mut others: Vec<(&str, f64)> = listings
        .iter()
        .filter(|l| l.status == TRADING)
        .filter(|l| config.quote_asset.is_empty() || l.quote_asset == config.quote_asset)
        .filter(|l| !wanted.contains(&l.symbol))
        .map(|l| {
            let volume = volumes.get(l.symbol.as_str()).copied().unwrap_or(0.0);
            (l.symbol.as_str(), volume)
        })
        .collect();
    others.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(b.0)));
    others.dedup_by(|a, b| a.0 == b.0);
    let room = config.pairs_limit.saturating_sub(wanted.len());
    wanted.extend(others.into_iter().take(room).map(|(s, _)| s.to_string()));
    wanted
}

/// The changes from `current` (subscribed) to `wanted`; a subscribed symbol whose status in
/// `listings` is HALT or BREAK goes to [`Plan::halt`], any other unwanted one to
/// [`Plan::remove`].
pub fn plan(current: &[String], wanted: &[String], listings: &[SymbolListing]) -> Plan {
    let halted: HashSet<&str> = listings
        .iter()
        .filter(|l| HALTED.contains(&l.status.as_str()))
        .map(|l| l.symbol.as_str())
        .collect();
    let mut plan = Plan::default();
    for symbol in current.iter().filter(|s| !wanted.contains(s)) {
        if halted.contains(symbol.as_str()) {
            plan.halt.push(symbol.clone());
        } else {
            plan.remove.push(symbol.clone());
        }
    }
    plan.add = wanted
        .iter()
        .filter(|s| !current.contains(s))
        .cloned()
        .collect();
    plan
}

/// The symbols `listings` shows HALT or BREAK among `watched`, sorted.
pub fn halted_among(listings: &[SymbolListing], watched: &HashSet<String>) -> Vec<String> {
    let mut halted: Vec<String> = listings
        .iter()
        .filter(|l| HALTED.contains(&l.status.as_str()) && watched.contains(&l.symbol))
        .map(|l| l.symbol.clone())
        .collect();
    halted.sort();
    halted
}

/// The REST client discovery uses: the sidecar's base (`sidecar.rest_endpoint`, or derived
/// from `binance.endpoint`), the feed's TLS trust.
fn client(config: &RunConfig) -> Result<RestClient, String> {
    let base = config.sidecar.rest_base(&config.endpoint);
    let tls = crate::feed::run::client_tls(config)?;
    RestClient::new(&base, Some(tls)).map_err(|e| format!("discovery: REST {base}: {e}"))
}

/// Both answers, exchangeInfo first (weight 20 + 80, within the client's budget).
async fn fetch(
    client: &mut RestClient,
) -> Result<(Vec<SymbolListing>, Vec<Ticker24hr>), RestError> {
    let listings = client.exchange_info().await?;
    let tickers = client.tickers_24hr().await?;
    Ok((listings, tickers))
}

/// Keeps the symbols `shard` owns (all without one): with `run.shard`, every instance ranks the
/// whole market and carries its share of the ranking, so `n` instances together carry the
/// top `pairs_limit` exactly once.
pub fn in_shard(mut symbols: Vec<String>, shard: Option<Shard>) -> Vec<String> {
    if let Some(shard) = shard {
        symbols.retain(|s| shard.owns(s));
    }
    symbols
}

/// The symbols a run starts with: the discovered ranking, or the fallback pairs when the
/// REST calls fail (an error only when there are none), of this instance's shard.
pub fn initial(config: &RunConfig) -> Result<Vec<String>, String> {
    let symbols = initial_ranking(config)?;
    let ranked = symbols.len();
    let mine = in_shard(symbols, config.shard);
    match config.shard {
        Some(shard) if mine.is_empty() => Err(format!(
            "discovery: shard {shard} owns none of the {ranked} pairs ranked; raise \
             discovery.pairs_limit or run fewer shards"
        )),
        _ => Ok(mine),
    }
}

fn initial_ranking(config: &RunConfig) -> Result<Vec<String>, String> {
    let settings = &config.discovery;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("discovery: cannot start its runtime: {e}"))?;
    let mut client = client(config)?;
    match runtime.block_on(fetch(&mut client)) {
        Ok((listings, tickers)) => {
            let wanted = rank(&listings, &tickers, settings);
            tracing::info!(pairs = wanted.len(), "discovered tradable pairs");
            if wanted.is_empty() {
                return Err("discovery: no TRADING symbol matches discovery.quote_asset".into());
            }
            Ok(wanted)
        }
        Err(e) if !settings.fallback_pairs.is_empty() => {
            tracing::warn!(error = %e, "discovery failed at start: using the fallback pairs");
            Ok(settings.fallback_pairs.clone())
        }
        Err(e) => Err(format!(
            "discovery failed at start and discovery.fallback_pairs is empty: {e}"
        )),
    }
}

/// What the refresh thread needs.
pub struct Refresher {
    client: RestClient,
    settings: DiscoveryConfig,
    /// This instance's shard: only its symbols are wanted.
    shard: Option<Shard>,
    pairs: Arc<RwLock<Vec<String>>>,
    changes: mpsc::Sender<PairRequest>,
    stats: Arc<DiscoveryStats>,
}

/// Starts the refresh thread (`hotpath-discovery`, its own current-thread runtime): every
/// `refresh` it ranks again and sends the changes through `changes`, until `stop`.
pub fn spawn(
    config: &RunConfig,
    pairs: Arc<RwLock<Vec<String>>>,
    changes: mpsc::Sender<PairRequest>,
    stats: Arc<DiscoveryStats>,
    stop: watch::Receiver<bool>,
) -> Result<std::thread::JoinHandle<()>, String> {
    let core = config.core_plan().control;
    let refresher = Refresher {
        client: client(config)?,
        settings: config.discovery.clone(),
        shard: config.shard,
        pairs,
        changes,
        stats,
    };
    std::thread::Builder::new()
        .name("hotpath-discovery".into())
        .spawn(move || {
            crate::cores::pin(core);
            refresher.run(stop)
        })
        .map_err(|e| format!("cannot start the discovery thread: {e}"))
}

impl Refresher {
    fn run(mut self, mut stop: watch::Receiver<bool>) {
        let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        else {
            tracing::error!("discovery: cannot build its runtime");
            return;
        };
        runtime.block_on(async move {
            let start = tokio::time::Instant::now() + self.settings.refresh;
            let mut tick = tokio::time::interval_at(start, self.settings.refresh);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = stop.wait_for(|&s| s) => return,
                    _ = tick.tick() => {}
                }
                tokio::select! {
                    _ = stop.wait_for(|&s| s) => return,
                    _ = self.refresh() => {}
                }
            }
        });
    }

    /// One refresh: fetch, rank, change the subscriptions; a failure keeps the list.
    async fn refresh(&mut self) {
        let (listings, tickers) = match fetch(&mut self.client).await {
            Ok(answers) => answers,
            Err(e) => {
                self.stats.failures.bump();
                tracing::warn!(error = %e, "discovery refresh failed: the pairs stay as they are");
                return;
            }
        };
        self.stats.refreshes.bump();
        let current = crate::sync::read(&self.pairs).clone();
        let wanted = in_shard(rank(&listings, &tickers, &self.settings), self.shard);
        let plan = plan(&current, &wanted, &listings);
        let watched: HashSet<String> = current
            .iter()
            .chain(&self.settings.fallback_pairs)
            .chain(crate::sync::lock(&self.stats.halted).iter())
            .cloned()
            .collect();
        *crate::sync::lock(&self.stats.halted) = halted_among(&listings, &watched);
        if plan != Plan::default() {
            tracing::info!(add = ?plan.add, remove = ?plan.remove, halt = ?plan.halt, "discovery: the ranking changed");
        }
        let changes = (plan.halt.into_iter().map(PairChange::Halt))
            .chain(plan.remove.into_iter().map(PairChange::Remove))
            .chain(plan.add.into_iter().map(PairChange::Add));
        for change in changes {
            let adding = matches!(change, PairChange::Add(_));
            match self.send(change).await {
                Ok(()) if adding => self.stats.added.bump(),
                Ok(()) => self.stats.removed.bump(),
                Err(e) => tracing::warn!(error = %e, "discovery: a pair change failed"),
            }
        }
    }

    /// Sends `change` to the feed's owner and waits for its outcome.
    async fn send(&self, change: PairChange) -> Result<(), String> {
        let (reply, outcome) = oneshot::channel();
        self.changes
            .send(PairRequest { change, reply })
            .await
            .map_err(|_| "the run is stopping".to_string())?;
        match tokio::time::timeout(Duration::from_secs(30), outcome).await {
            Ok(Ok(result)) => result,
            _ => Err("the feed did not carry out the change in time".into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listing(symbol: &str, status: &str, quote: &str) -> SymbolListing {
        SymbolListing {
            symbol: symbol.into(),
            status: status.into(),
            quote_asset: quote.into(),
        }
    }

    fn ticker(symbol: &str, volume: &str) -> Ticker24hr {
        Ticker24hr {
            symbol: symbol.into(),
            quote_volume: volume.into(),
        }
    }

    fn settings(limit: usize, fallback: &[&str]) -> DiscoveryConfig {
        DiscoveryConfig {
            enabled: true,
            pairs_limit: limit,
            quote_asset: "USDT".into(),
            fallback_pairs: fallback.iter().map(|s| s.to_string()).collect(),
            refresh: Duration::from_secs(60),
        }
    }

    fn market() -> (Vec<SymbolListing>, Vec<Ticker24hr>) {
        let listings = vec![
            listing("BTCUSDT", "TRADING", "USDT"),
            listing("ETHUSDT", "TRADING", "USDT"),
            listing("SOLUSDT", "TRADING", "USDT"),
            listing("DOGEUSDT", "HALT", "USDT"),
            listing("ETHBTC", "TRADING", "BTC"),
            listing("XRPUSDT", "BREAK", "USDT"),
            listing("ADAUSDT", "TRADING", "USDT"),
        ];
        let tickers = vec![
            ticker("BTCUSDT", "900.5"),
            ticker("ETHUSDT", "1000.25"),
            ticker("SOLUSDT", "5"),
            ticker("DOGEUSDT", "99999"),
            ticker("ETHBTC", "88888"),
            ticker("XRPUSDT", "77777"),
            ticker("ADAUSDT", "not a number"),
        ];
        (listings, tickers)
    }

    /// With shards, each instance keeps its share of the one ranking, in rank order: together
    /// they carry the top `pairs_limit` once.
    #[test]
    fn shards_split_the_ranking_between_them() {
        let (listings, tickers) = market();
        let ranked = rank(&listings, &tickers, &settings(4, &[]));
        let shares: Vec<Vec<String>> = (0..2)
            .map(|i| {
                let shard = Shard::parse(&format!("{i}/2")).expect("valid");
                in_shard(ranked.clone(), Some(shard))
            })
            .collect();
        for (i, share) in shares.iter().enumerate() {
            assert!(
                share.iter().all(|s| Shard::of(s, 2) == i as u16),
                "{share:?}"
            );
            let in_order: Vec<&String> = ranked.iter().filter(|s| share.contains(s)).collect();
            assert_eq!(share.iter().collect::<Vec<_>>(), in_order);
        }
        let mut together: Vec<String> = shares.concat();
        together.sort();
        let mut all = ranked.clone();
        all.sort();
        assert_eq!(together, all);
        assert_eq!(in_shard(ranked.clone(), None), ranked);
    }

    #[test]
    fn the_top_n_trading_symbols_of_the_quote_asset_by_volume() {
        let (listings, tickers) = market();
        assert_eq!(
            rank(&listings, &tickers, &settings(2, &[])),
            ["ETHUSDT", "BTCUSDT"]
        );
        assert_eq!(
            rank(&listings, &tickers, &settings(10, &[])),
            ["ETHUSDT", "BTCUSDT", "SOLUSDT", "ADAUSDT"]
        );
        let mut every_quote = settings(2, &[]);
        every_quote.quote_asset.clear();
        assert_eq!(
            rank(&listings, &tickers, &every_quote),
            ["ETHBTC", "ETHUSDT"]
        );
    }

    #[test]
    fn fallback_pairs_come_first_when_trading_and_count_in_the_limit() {
        let (listings, tickers) = market();
        assert_eq!(
            rank(&listings, &tickers, &settings(2, &["SOLUSDT", "DOGEUSDT"])),
            ["SOLUSDT", "ETHUSDT"],
            "a halted fallback pair is left out"
        );
        assert_eq!(
            rank(&listings, &tickers, &settings(1, &["SOLUSDT", "ADAUSDT"])),
            ["SOLUSDT", "ADAUSDT"],
            "the fallback pairs alone may pass the limit"
        );
        assert_eq!(
            rank(&listings, &tickers, &settings(2, &["ETHBTC"])),
            ["ETHBTC", "ETHUSDT"],
            "a fallback pair of another quote asset is kept"
        );
    }

    #[test]
    fn an_empty_answer_ranks_nothing_but_the_trading_fallbacks() {
        assert!(rank(&[], &[], &settings(5, &["BTCUSDT"])).is_empty());
        let listings = vec![listing("BTCUSDT", "TRADING", "USDT")];
        assert_eq!(
            rank(&listings, &[], &settings(5, &["BTCUSDT"])),
            ["BTCUSDT"]
        );
    }

    #[test]
    fn the_plan_adds_removes_and_halts() {
        let (listings, _) = market();
        let current: Vec<String> = ["BTCUSDT", "DOGEUSDT", "ETHBTC", "XRPUSDT"]
            .map(String::from)
            .to_vec();
        let wanted: Vec<String> = ["ETHUSDT", "BTCUSDT"].map(String::from).to_vec();
        let plan = plan(&current, &wanted, &listings);
        assert_eq!(plan.halt, ["DOGEUSDT", "XRPUSDT"]);
        assert_eq!(plan.remove, ["ETHBTC"]);
        assert_eq!(plan.add, ["ETHUSDT"]);
        assert_eq!(
            super::plan(&wanted, &wanted, &listings),
            Plan::default(),
            "nothing to do"
        );
    }

    #[test]
    fn halted_symbols_are_reported_among_the_watched_only() {
        let (listings, _) = market();
        let watched: HashSet<String> = ["DOGEUSDT", "BTCUSDT"].map(String::from).into();
        assert_eq!(halted_among(&listings, &watched), ["DOGEUSDT"]);
    }
}
