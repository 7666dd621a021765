//! TLS for the front door: rustls with the `ring` provider (the one crypto provider used
//! throughout), certificates and key read from PEM files.

use std::path::Path;
use std::sync::Arc;

use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::{ConfigError, TlsPaths};

fn error(var: &'static str, message: String) -> ConfigError {
    ConfigError { var, message }
}

fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, ConfigError> {
    let shown = path.display();
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| error("OPENCHAT_TLS_CERT", format!("cannot read {shown}: {e}")))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| error("OPENCHAT_TLS_CERT", format!("invalid PEM in {shown}: {e}")))?;
    if certs.is_empty() {
        return Err(error(
            "OPENCHAT_TLS_CERT",
            format!("{shown} holds no certificate"),
        ));
    }
    Ok(certs)
}

/// Loads and checks the certificate chain and key; errors name the variable at fault.
pub fn server_config(paths: &TlsPaths) -> Result<Arc<ServerConfig>, ConfigError> {
    let certs = certificates(&paths.cert)?;
    let key = PrivateKeyDer::from_pem_file(&paths.key).map_err(|e| {
        error(
            "OPENCHAT_TLS_KEY",
            format!("cannot read a private key from {}: {e}", paths.key.display()),
        )
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| error("OPENCHAT_TLS_CERT", format!("TLS set-up failed: {e}")))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| {
            error(
                "OPENCHAT_TLS_KEY",
                format!("the key does not fit the certificate: {e}"),
            )
        })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
