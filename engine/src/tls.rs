//! TLS for production code: the one process-wide rustls crypto provider, and client
//! configurations (webpki roots for Binance; a given PEM for a private endpoint or the
//! simulator's self-signed certificate). The simulator's server side lives in `sim::tls`.

use std::io;

/// Installs the process-wide rustls crypto provider if none is installed yet. Every TLS user
/// calls this first, so one provider serves the whole process.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
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
