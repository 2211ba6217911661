//! TLS for the simulator: a self-signed certificate for `localhost` and `127.0.0.1`, made at
//! start, so a client's rustls path runs end to end once it trusts that certificate (with
//! [`crate::tls::client_config_trusting`]). The crypto provider is [`crate::tls`]'s.

use std::io;
use std::sync::Arc;

use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};

/// A TLS acceptor with a fresh self-signed certificate, and that certificate as PEM.
pub fn self_signed_acceptor() -> io::Result<(tokio_rustls::TlsAcceptor, String)> {
    crate::tls::install_default_provider();
    let names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
    let certified = rcgen::generate_simple_self_signed(names).map_err(io::Error::other)?;
    let pem = certified.cert.pem();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
        certified.signing_key.serialize_der(),
    ));
    let config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(vec![certified.cert.der().clone()], key)
        .map_err(io::Error::other)?;
    Ok((tokio_rustls::TlsAcceptor::from(Arc::new(config)), pem))
}
