//! TLS for the whole process, in one place: the one crypto provider (aws-lc-rs, rustls's
//! default and the one the AWS SDK builds; `ring` is not in the build) and the client
//! configurations every `https://` and `wss://` connection uses.
//!
//! Trust, in order: a PEM the configuration names (`binance.trust_cert`, the simulator's
//! self-signed certificate) through [`client_config_trusting`]; otherwise [`default_client_config`]:
//! the CA bundle named by `SSL_CERT_FILE` when that is set (an operator's explicit choice, such as
//! a TLS-inspecting proxy's CA), else the Mozilla roots compiled in from `webpki-roots`, which
//! is what the feed's WebSocket connector has always trusted.
//!
//! Production code takes TLS from here only; the simulator's `sim::tls` makes its certificate
//! and acceptor and uses this module for the provider.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

/// The environment variable naming a CA bundle that replaces the compiled-in roots.
pub const CA_BUNDLE_ENV: &str = "SSL_CERT_FILE";

/// Why a TLS configuration could not be made.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A certificate file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Text that should hold PEM certificates does not parse.
    #[error("bad certificate PEM: {0}")]
    BadPem(String),
    /// PEM text without a certificate rustls accepts as a trust anchor.
    #[error("{0}: no usable CA certificate")]
    NoCertificate(String),
    /// rustls refused a certificate or the configuration.
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

/// Installs aws-lc-rs as the process-wide rustls provider, once; later calls (and a provider
/// some other code installed first) leave it as it is. Every TLS entry point calls this, so
/// callers need not, but `main` does it first thing.
pub fn install_default_provider() {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        // Err means another thread installed one in between: equally fine.
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    }
}

/// The client configuration for servers with public certificates: `SSL_CERT_FILE`'s bundle if
/// that variable is set, else the compiled-in Mozilla roots.
pub fn default_client_config() -> Result<Arc<rustls::ClientConfig>, TlsError> {
    match std::env::var_os(CA_BUNDLE_ENV) {
        Some(path) => client_config_from_bundle(Path::new(&path)).map(Arc::new),
        None => Ok(webpki_client_config()),
    }
}

/// A client configuration trusting the Mozilla roots compiled in from `webpki-roots`.
pub fn webpki_client_config() -> Arc<rustls::ClientConfig> {
    let roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    Arc::new(client_config(roots))
}

/// A client configuration trusting the certificates of the PEM bundle at `path`. Entries that
/// do not parse are skipped, as system bundles may hold a few odd ones; none usable is an error.
pub fn client_config_from_bundle(path: &Path) -> Result<rustls::ClientConfig, TlsError> {
    let pem = std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let certs = CertificateDer::pem_slice_iter(&pem).filter_map(Result::ok);
    let mut roots = rustls::RootCertStore::empty();
    let (added, _ignored) = roots.add_parsable_certificates(certs);
    if added == 0 {
        return Err(TlsError::NoCertificate(path.display().to_string()));
    }
    Ok(client_config(roots))
}

/// A client configuration trusting exactly the certificates in `pem` (the simulator's
/// self-signed one, or `binance.trust_cert`).
pub fn client_config_trusting(pem: &str) -> Result<rustls::ClientConfig, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::BadPem(format!("{e:?}")))?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate("the PEM text".to_string()));
    }
    let mut roots = rustls::RootCertStore::empty();
    for cert in certs {
        roots.add(cert)?;
    }
    Ok(client_config(roots))
}

fn client_config(roots: rustls::RootCertStore) -> rustls::ClientConfig {
    install_default_provider();
    rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn self_signed_pem() -> String {
        let names = vec!["localhost".to_string()];
        let certified = rcgen::generate_simple_self_signed(names).expect("a certificate");
        certified.cert.pem()
    }

    #[test]
    fn the_provider_is_aws_lc_rs() {
        install_default_provider();
        install_default_provider();
        let provider = rustls::crypto::CryptoProvider::get_default().expect("installed");
        let aws_lc = rustls::crypto::aws_lc_rs::default_provider();
        let names = |p: &rustls::crypto::CryptoProvider| -> Vec<String> {
            p.cipher_suites
                .iter()
                .map(|s| format!("{:?}", s.suite()))
                .collect()
        };
        assert_eq!(names(provider), names(&aws_lc));
        assert!(
            !webpki_client_config()
                .crypto_provider()
                .cipher_suites
                .is_empty()
        );
    }

    #[test]
    fn a_bundle_file_is_trusted_or_refused_clearly() {
        let pem = self_signed_pem();
        let dir = std::env::temp_dir().join(format!("hotpath-tls-ca-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let file = dir.join("bundle.pem");
        std::fs::write(&file, format!("junk\n{pem}")).expect("written");
        assert!(client_config_from_bundle(&file).is_ok());
        let missing = dir.join("missing.pem");
        let error = client_config_from_bundle(&missing).expect_err("no file");
        assert!(
            matches!(error, TlsError::Read { ref path, .. } if *path == missing),
            "{error}"
        );
        std::fs::write(&file, "not a certificate").expect("written");
        let empty = client_config_from_bundle(&file).expect_err("empty");
        assert!(
            empty.to_string().contains("no usable CA certificate"),
            "{empty}"
        );
        std::fs::remove_dir_all(&dir).expect("cleaned up");
    }

    #[test]
    fn trusting_needs_a_certificate() {
        let pem = self_signed_pem();
        assert!(client_config_trusting(&pem).is_ok());
        assert!(matches!(
            client_config_trusting(""),
            Err(TlsError::NoCertificate(_))
        ));
        let broken = "-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----\n";
        assert!(matches!(
            client_config_trusting(broken),
            Err(TlsError::BadPem(_))
        ));
    }
}
