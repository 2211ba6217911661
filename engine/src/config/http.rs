//! The control plane's settings: the `[http]` table of the run configuration. Errors name the
//! key (`http.listen: ...`). The bearer token of the mutating endpoints is read from the
//! environment variable `token_env` names, never from the file.
//!
//! ```toml
//! [http]
//! listen = "127.0.0.1:8099"         # "0": no HTTP server
//! allow_pair_changes = false        # POST /pairs and DELETE /pairs/{SYMBOL}
//! token_env = "HOTPATH_HTTP_TOKEN"  # the variable holding their bearer token
//! stale_after_ms = 10000            # a connection silent this long makes /health 503
//! ```

use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;

use super::ConfigError;

/// The control plane's settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpConfig {
    /// Where the HTTP server listens; `None` (`listen = "0"`) runs none.
    pub listen: Option<SocketAddr>,
    /// Whether `POST /pairs` and `DELETE /pairs/{SYMBOL}` are served (with a bearer token).
    pub allow_pair_changes: bool,
    /// The NAME of the environment variable holding the bearer token.
    pub token_env: String,
    /// A reader (its connections) with no frame for this long is unhealthy. Above zero.
    pub stale_after: Duration,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: Some(SocketAddr::from(([127, 0, 0, 1], 8099))),
            allow_pair_changes: false,
            token_env: "HOTPATH_HTTP_TOKEN".into(),
            stale_after: Duration::from_secs(10),
        }
    }
}

/// `[http]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawHttp {
    listen: Option<String>,
    allow_pair_changes: Option<bool>,
    token_env: Option<String>,
    stale_after_ms: Option<u64>,
    /// Read only to reject it with a clear message; its value is never kept.
    token: Option<serde::de::IgnoredAny>,
}

impl RawHttp {
    /// The validated settings.
    pub(crate) fn into_config(self) -> Result<HttpConfig, ConfigError> {
        if self.token.is_some() {
            return Err(ConfigError::invalid(
                "http.token: the bearer token comes only from the environment, never from a \
                 file; remove it and set the variable named by http.token_env",
            ));
        }
        let defaults = HttpConfig::default();
        let listen = match self.listen {
            None => defaults.listen,
            Some(text) => parse_listen(&text)?,
        };
        let config = HttpConfig {
            listen,
            allow_pair_changes: self
                .allow_pair_changes
                .unwrap_or(defaults.allow_pair_changes),
            token_env: self.token_env.unwrap_or(defaults.token_env),
            stale_after: self
                .stale_after_ms
                .map_or(defaults.stale_after, Duration::from_millis),
        };
        config.check()?;
        Ok(config)
    }
}

/// `"0"` (no server) or `host:port` with an IP address.
fn parse_listen(text: &str) -> Result<Option<SocketAddr>, ConfigError> {
    if text.trim() == "0" {
        return Ok(None);
    }
    text.trim().parse().map(Some).map_err(|_| {
        ConfigError::invalid(format!(
            "http.listen: {text:?} is not an IP address and port such as \"127.0.0.1:8099\" \
             (or \"0\" for no server)"
        ))
    })
}

impl HttpConfig {
    /// Checks every value, naming the key at fault.
    pub fn check(&self) -> Result<(), ConfigError> {
        super::check_api_key_env(&self.token_env).map_err(|_| {
            ConfigError::invalid(format!(
                "http.token_env: {:?} is not an environment variable name (A-Z, 0-9, _)",
                self.token_env
            ))
        })?;
        if self.stale_after.is_zero() {
            return Err(ConfigError::invalid("http.stale_after_ms: must be above 0"));
        }
        Ok(())
    }

    /// The bearer token of the mutating endpoints, from the environment through `lookup`:
    /// `None` when pair changes are off; an error naming the variable when they are on and it
    /// is unset or empty.
    pub fn token_from(
        &self,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Option<String>, ConfigError> {
        if !self.allow_pair_changes {
            return Ok(None);
        }
        match lookup(&self.token_env) {
            Some(token) if !token.is_empty() => Ok(Some(token)),
            _ => Err(ConfigError::invalid(format!(
                "http.allow_pair_changes: the bearer token variable {} is not set (or empty)",
                self.token_env
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<HttpConfig, ConfigError> {
        let raw: RawHttp = toml::from_str(text).map_err(|e| ConfigError::invalid(e.to_string()))?;
        raw.into_config()
    }

    #[test]
    fn defaults_listen_on_the_seeds_health_port_with_changes_off() {
        let config = parse("").expect("defaults");
        assert_eq!(config, HttpConfig::default());
        assert_eq!(config.listen, Some("127.0.0.1:8099".parse().expect("addr")));
        assert_eq!(config.token_from(|_| None).expect("off"), None);
    }

    #[test]
    fn zero_disables_and_bad_values_name_the_key() {
        assert_eq!(parse("listen = \"0\"").expect("off").listen, None);
        let e = parse("listen = \"localhost\"")
            .expect_err("not an IP")
            .to_string();
        assert!(e.starts_with("http.listen:"), "{e}");
        let e = parse("token_env = \"lower\"")
            .expect_err("bad name")
            .to_string();
        assert!(e.starts_with("http.token_env:"), "{e}");
        let e = parse("stale_after_ms = 0").expect_err("zero").to_string();
        assert!(e.starts_with("http.stale_after_ms:"), "{e}");
        let e = parse("token = \"secret\"")
            .expect_err("no tokens in files")
            .to_string();
        assert!(e.starts_with("http.token:") && !e.contains("secret"), "{e}");
    }

    #[test]
    fn the_token_comes_from_the_named_variable_only_when_changes_are_on() {
        let config = parse("allow_pair_changes = true\ntoken_env = \"MY_TOKEN\"").expect("ok");
        let token = config.token_from(|name| (name == "MY_TOKEN").then(|| "t0k".to_string()));
        assert_eq!(token.expect("set"), Some("t0k".to_string()));
        let e = config.token_from(|_| None).expect_err("unset").to_string();
        assert!(e.contains("MY_TOKEN"), "{e}");
        assert!(config.token_from(|_| Some(String::new())).is_err());
    }
}
