//! The STARTTLS certificate: PEM files, rustls with the aws-lc-rs provider (the one lapin's
//! rustls already brings in).

use std::path::Path;
use std::sync::Arc;

use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::{self, ServerConfig};
use tokio_rustls::TlsAcceptor;

#[derive(Debug, thiserror::Error)]
pub enum TlsConfigError {
    #[error("reading the certificate chain {path}: {source}")]
    Certificate { path: String, source: rustls::pki_types::pem::Error },
    #[error("reading the private key {path}: {source}")]
    Key { path: String, source: rustls::pki_types::pem::Error },
    #[error("the certificate and key do not make a TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

pub fn acceptor(cert: &Path, key: &Path) -> Result<TlsAcceptor, TlsConfigError> {
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|source| TlsConfigError::Certificate { path: cert.display().to_string(), source })?;
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|source| TlsConfigError::Key { path: key.display().to_string(), source })?;
    let config = ServerConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}
