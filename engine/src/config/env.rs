//! Environment overrides of the run configuration: the seeds' variable names where they exist,
//! `HOTPATH_SECTION__KEY` for every other key. Precedence: the file, then the environment,
//! then the command-line flags ([`super::RunConfig::apply`]).
//!
//! | variable | key |
//! |---|---|
//! | `REDIS_URL` | `redis.url`, and `redis.enabled = true` |
//! | `PAIRS_LIMIT` | `discovery.pairs_limit` |
//! | `FALLBACK_PAIRS` | `discovery.fallback_pairs` (comma-separated) |
//! | `DISCOVERY_REFRESH_SEC` | `discovery.refresh_s` |
//! | `BINANCE_WS_URL` | `binance.endpoint` |
//! | `PAIRS_PER_CONNECTION` | `binance.symbols_per_connection` (replaces `discovery.pairs_per_connection`) |
//! | `STREAM_MAXLEN` | `redis.trades_maxlen` |
//! | `HEALTH_PORT` | the port of `http.listen` (its address kept; `0`: no server) |
//! | `CONFIG_FILE` | the file, when `--config` is not given (read by `main`) |
//! | `HOTPATH_<SECTION>__<KEY>` | `<section>.<key>`, the value read as a TOML value (`5`, `true`, `[1, 2]`), else as a string |
//!
//! Each variable is laid over the file in turn and the result checked, so an error names the
//! variable at fault (`PAIRS_LIMIT: discovery.pairs_limit = 0: ...`). A value is never echoed
//! when it could hold a secret: Redis URLs print with their password as `***`.

use toml::{Table, Value};

use super::{ConfigError, RunConfig};

/// The variable naming the configuration file when `--config` is not given.
pub const CONFIG_FILE_VAR: &str = "CONFIG_FILE";

/// The prefix of the generic overrides (`HOTPATH_READERS__CORES`).
pub const PREFIX: &str = "HOTPATH_";

/// One variable's change to the file's table.
#[derive(Clone, Debug, PartialEq)]
struct Override {
    /// The variable, for errors.
    var: String,
    /// `(section, key, value)` to set; `None` removes the key.
    sets: Vec<(String, String, Option<Value>)>,
}

/// The configuration of `file` (TOML text; `None`: the defaults) with the environment's
/// overrides from `vars` laid over it. The file alone is checked first, so its own errors keep
/// their line numbers; then each variable in turn, its errors naming it.
pub fn load<I>(file: Option<&str>, vars: I) -> Result<RunConfig, ConfigError>
where
    I: IntoIterator<Item = (String, String)>,
{
    let text = file.unwrap_or("");
    let mut config = RunConfig::from_toml(text)?;
    let overrides = overrides(vars)?;
    if overrides.is_empty() {
        return Ok(config);
    }
    let mut table: Table = toml::from_str(text).map_err(|e| ConfigError::Syntax {
        line: None,
        message: e.message().to_string(),
    })?;
    for o in overrides {
        apply(&mut table, &o);
        let text =
            toml::to_string(&table).map_err(|e| ConfigError::invalid(format!("{}: {e}", o.var)))?;
        config = RunConfig::from_toml(&text).map_err(|e| {
            let why = match &e {
                ConfigError::Syntax { message, .. } => message.clone(),
                ConfigError::Invalid { message, .. } => message.clone(),
            };
            ConfigError::Invalid {
                key: o.var.clone(),
                message: format!("{}: {}", o.var, super::redact_urls(&why)),
            }
        })?;
    }
    Ok(config)
}

/// The overrides `vars` hold, in a fixed order (the seeds' names, then `HOTPATH_*` sorted),
/// so the outcome never depends on the environment's order.
fn overrides<I>(vars: I) -> Result<Vec<Override>, ConfigError>
where
    I: IntoIterator<Item = (String, String)>,
{
    let mut seeds = Vec::new();
    let mut generic = Vec::new();
    for (var, value) in vars {
        if let Some(o) = seed_override(&var, &value)? {
            seeds.push(o);
        } else if let Some(o) = generic_override(&var, &value)? {
            generic.push(o);
        }
    }
    seeds.sort_by(|a, b| a.var.cmp(&b.var));
    generic.sort_by(|a, b| a.var.cmp(&b.var));
    seeds.extend(generic);
    Ok(seeds)
}

fn set(section: &str, key: &str, value: Value) -> (String, String, Option<Value>) {
    (section.to_string(), key.to_string(), Some(value))
}

/// A seed variable's override; `None` for other names.
fn seed_override(var: &str, value: &str) -> Result<Option<Override>, ConfigError> {
    let number = || {
        value
            .trim()
            .parse::<i64>()
            .map(Value::Integer)
            .map_err(|_| ConfigError::Invalid {
                key: var.to_string(),
                message: format!("{var} = {value:?}: not a whole number"),
            })
    };
    let sets = match var {
        "REDIS_URL" => vec![
            set("redis", "url", Value::String(value.trim().to_string())),
            set("redis", "enabled", Value::Boolean(true)),
        ],
        "PAIRS_LIMIT" => vec![set("discovery", "pairs_limit", number()?)],
        "FALLBACK_PAIRS" => {
            let pairs = value
                .split(',')
                .map(str::trim)
                .filter(|p| !p.is_empty())
                .map(|p| Value::String(p.to_string()))
                .collect();
            vec![set("discovery", "fallback_pairs", Value::Array(pairs))]
        }
        "DISCOVERY_REFRESH_SEC" => vec![set("discovery", "refresh_s", number()?)],
        "BINANCE_WS_URL" => vec![set(
            "binance",
            "endpoint",
            Value::String(value.trim().to_string()),
        )],
        "PAIRS_PER_CONNECTION" => vec![
            set("binance", "symbols_per_connection", number()?),
            ("discovery".into(), "pairs_per_connection".into(), None),
        ],
        "STREAM_MAXLEN" => vec![set("redis", "trades_maxlen", number()?)],
        "HEALTH_PORT" => {
            number()?;
            let port = Value::String(value.trim().into());
            vec![("http".into(), HEALTH_PORT_KEY.into(), Some(port))]
        }
        _ => return Ok(None),
    };
    Ok(Some(Override {
        var: var.to_string(),
        sets,
    }))
}

/// A marker key: `HEALTH_PORT` keeps the address of the file's `http.listen` (see [`apply`]).
const HEALTH_PORT_KEY: &str = "\u{0}health_port";

/// `HOTPATH_SECTION__KEY`'s override; `None` for other names (`HOTPATH_HTTP_TOKEN` has no
/// `__` and is not one).
fn generic_override(var: &str, value: &str) -> Result<Option<Override>, ConfigError> {
    let Some(rest) = var.strip_prefix(PREFIX) else {
        return Ok(None);
    };
    let Some((section, key)) = rest.split_once("__") else {
        return Ok(None);
    };
    if section.is_empty() || key.is_empty() || key.contains("__") {
        return Err(ConfigError::Invalid {
            key: var.to_string(),
            message: format!(
                "{var}: expected {PREFIX}<SECTION>__<KEY>, such as HOTPATH_READERS__CORES"
            ),
        });
    }
    let parsed = toml::from_str::<Table>(&format!("v = {value}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| Value::String(value.to_string()));
    Ok(Some(Override {
        var: var.to_string(),
        sets: vec![set(
            &section.to_ascii_lowercase(),
            &key.to_ascii_lowercase(),
            parsed,
        )],
    }))
}

/// Lays `o` over `table`.
fn apply(table: &mut Table, o: &Override) {
    for (section, key, value) in &o.sets {
        let entry = table
            .entry(section.clone())
            .or_insert_with(|| Value::Table(Table::new()));
        if !entry.is_table() {
            // A scalar where a table belongs: replaced, and the check reports the key.
            *entry = Value::Table(Table::new());
        }
        let Value::Table(section) = entry else {
            continue;
        };
        match value {
            Some(Value::String(port)) if key == HEALTH_PORT_KEY => {
                section.insert("listen".into(), Value::String(listen_with_port(port)));
            }
            Some(value) => {
                section.insert(key.clone(), value.clone());
            }
            None => {
                section.remove(key);
            }
        }
    }
}

/// `http.listen` for `HEALTH_PORT`: the default address with that port; `0` runs no server.
fn listen_with_port(port: &str) -> String {
    if port == "0" {
        return "0".into();
    }
    let host = super::HttpConfig::default()
        .listen
        .map_or_else(|| "127.0.0.1".to_string(), |a| a.ip().to_string());
    format!("{host}:{port}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn the_seeds_names_set_their_keys() {
        let config = load(
            None,
            vars(&[
                ("REDIS_URL", "redis://10.0.0.5:6380/2"),
                ("PAIRS_LIMIT", "20"),
                ("FALLBACK_PAIRS", "BTCUSDT, ETHUSDT,,SOLUSDT"),
                ("DISCOVERY_REFRESH_SEC", "60"),
                ("BINANCE_WS_URL", "ws://127.0.0.1:9443"),
                ("PAIRS_PER_CONNECTION", "25"),
                ("STREAM_MAXLEN", "5000"),
                ("HEALTH_PORT", "9100"),
                ("HOTPATH_TOOLS", "/not/a/key"),
                ("PATH", "/usr/bin"),
            ]),
        )
        .expect("valid");
        let redis = config.redis.expect("REDIS_URL enables the writer");
        assert_eq!(redis.url, "redis://10.0.0.5:6380/2");
        assert_eq!(redis.trades_maxlen, 5000);
        assert_eq!(config.discovery.pairs_limit, 20);
        assert_eq!(
            config.discovery.fallback_pairs,
            ["BTCUSDT", "ETHUSDT", "SOLUSDT"]
        );
        assert_eq!(config.discovery.refresh.as_secs(), 60);
        assert_eq!(config.endpoint, "ws://127.0.0.1:9443");
        assert_eq!(config.symbols_per_connection, 25);
        assert_eq!(
            config.http.listen,
            Some("127.0.0.1:9100".parse().expect("addr"))
        );
    }

    #[test]
    fn the_environment_beats_the_file_and_generic_names_reach_every_key() {
        let file = "[readers]\ncores = [0]\nring_capacity = 1024\n[http]\nlisten = \"0.0.0.0:8099\"\n[discovery]\npairs_per_connection = 10\n";
        let config = load(
            Some(file),
            vars(&[
                ("HOTPATH_READERS__RING_CAPACITY", "4096"),
                ("HOTPATH_RUN__SUMMARY", "false"),
                ("HOTPATH_BINANCE__SYMBOLS", "[\"ETHUSDT\"]"),
                ("HOTPATH_HTTP__LISTEN", "127.0.0.1:9000"),
                ("PAIRS_PER_CONNECTION", "30"),
            ]),
        )
        .expect("valid");
        assert_eq!(config.readers.ring_capacity, 4096);
        assert!(!config.summary);
        assert_eq!(config.symbols, ["ETHUSDT"]);
        assert_eq!(
            config.http.listen,
            Some("127.0.0.1:9000".parse().expect("addr"))
        );
        assert_eq!(config.symbols_per_connection, 30);
        let port_only = load(Some(file), vars(&[("HEALTH_PORT", "0")])).expect("valid");
        assert_eq!(port_only.http.listen, None);
    }

    #[test]
    fn bad_values_name_the_variable_and_never_show_a_password() {
        for (var, value) in [
            ("PAIRS_LIMIT", "many"),
            ("PAIRS_LIMIT", "0"),
            ("STREAM_MAXLEN", "-"),
            ("HEALTH_PORT", "http"),
            ("HEALTH_PORT", "70000"),
            ("FALLBACK_PAIRS", "btc-usdt"),
            ("BINANCE_WS_URL", "http://x"),
            ("HOTPATH_READERS__RING_CAPACITY", "1000"),
            ("HOTPATH_READERS__NOPE", "1"),
            ("HOTPATH_READERS__CORES", "zero"),
            ("HOTPATH_READERS_CORES__", "1"),
        ] {
            let e = load(None, vars(&[(var, value)])).expect_err(var);
            assert_eq!(e.key(), Some(var), "{var}={value}: {e}");
            assert!(e.to_string().starts_with(var), "{e}");
        }
        let e = load(None, vars(&[("REDIS_URL", "http://user:hunter2@host/0")]))
            .expect_err("not a redis URL");
        let text = e.to_string();
        assert!(text.starts_with("REDIS_URL"), "{text}");
        assert!(!text.contains("hunter2"), "{text}");
    }

    #[test]
    fn flags_beat_the_environment() {
        let mut config = load(
            Some("[binance]\nendpoint = \"ws://file:1\"\n"),
            vars(&[
                ("BINANCE_WS_URL", "ws://env:2"),
                ("REDIS_URL", "redis://env:3/0"),
            ]),
        )
        .expect("valid");
        assert_eq!(config.endpoint, "ws://env:2");
        config
            .apply(crate::config::Overrides {
                endpoint: Some("ws://flag:3".into()),
                redis_url: Some("redis://flag:4/0".into()),
                ..Default::default()
            })
            .expect("valid flags");
        assert_eq!(config.endpoint, "ws://flag:3");
        assert_eq!(config.redis.expect("on").url, "redis://flag:4/0");
    }

    /// Review 11: the environment's settings of a section it does not enable reach the writer
    /// `--redis` / `--kinesis-endpoint` enable, as the file's do; `REDIS_URL` enables it with
    /// the file's settings too.
    #[test]
    fn flags_enable_writers_with_the_environments_settings() {
        let file = "[redis]\nbook_levels = 5\n[kinesis]\nlinger_ms = 9\n";
        let mut config = load(
            Some(file),
            vars(&[
                ("HOTPATH_REDIS__BOOK_LEVELS", "7"),
                ("HOTPATH_KINESIS__LINGER_MS", "11"),
            ]),
        )
        .expect("valid");
        assert!(config.redis.is_none() && config.kinesis.is_none());
        config
            .apply(crate::config::Overrides {
                redis_url: Some("redis://flag:4/0".into()),
                kinesis_endpoint: Some("http://flag:5".into()),
                ..Default::default()
            })
            .expect("valid flags");
        assert_eq!(config.redis.expect("on").book_levels, 7);
        let kinesis = config.kinesis.expect("on");
        assert_eq!(kinesis.linger, std::time::Duration::from_millis(11));
        let env = load(Some(file), vars(&[("REDIS_URL", "redis://env:3/0")])).expect("valid");
        assert_eq!(env.redis.expect("REDIS_URL enables it").book_levels, 5);
    }

    #[test]
    fn file_errors_keep_their_line() {
        let e = load(
            Some("[readers]\n\nnope = 1\n"),
            vars(&[("PAIRS_LIMIT", "5")]),
        )
        .expect_err("unknown key");
        assert!(e.to_string().contains("line 3"), "{e}");
    }
}
