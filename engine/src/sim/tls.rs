//! TLS for the simulator: a self-signed certificate for `localhost` and `127.0.0.1`, made at
//! start, so a client's rustls path runs end to end once it trusts that certificate.

use std::io;
use std::sync::Arc;

use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};

/// Installs the process-wide rustls crypto provider (ring) if none is installed yet.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A TLS acceptor with a fresh self-signed certificate, and that certificate as PEM.
pub fn self_signed_acceptor() -> io::Result<(tokio_rustls::TlsAcceptor, String)> {
    install_crypto_provider();
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

/// A client configuration trusting exactly the certificates in `pem` (for tests and for
/// pointing hotpath at the simulator over TLS).
pub fn client_config_trusting(pem: &str) -> io::Result<rustls::ClientConfig> {
    install_crypto_provider();
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pem_certs(pem)? {
        roots.add(cert).map_err(io::Error::other)?;
    }
    Ok(rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth())
}

fn rustls_pem_certs(pem: &str) -> io::Result<Vec<rustls::pki_types::CertificateDer<'static>>> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("bad certificate PEM: {e:?}"),
            )
        })
}
