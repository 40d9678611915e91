//! TLS settings, loaded from files: the client side for `https://` upstreams, the server side for
//! the listener.
//!
//! Everything is read and checked when the configuration is loaded (at start-up, on
//! `--check-config` and on every reload), so that a missing file or a key that does not match its
//! certificate stops start-up, or refuses a reload, with a message naming the setting. Both sides
//! speak HTTP/1.1 only (ALPN `http/1.1`).

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};
use tokio_rustls::{TlsAcceptor, TlsConnector};

/// A TLS setting that cannot be used: the key it came from and why.
#[derive(Debug)]
pub struct TlsError {
    /// The dotted key of the setting (`upstream.ca_file`).
    pub key: &'static str,
    /// What is wrong.
    pub message: String,
}

fn error(key: &'static str, message: impl fmt::Display) -> TlsError {
    TlsError {
        key,
        message: message.to_string(),
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Where the client's trust comes from, and what it presents.
#[derive(Clone, Debug, Default)]
pub struct ClientSettings<'a> {
    /// PEM bundle of the CAs to trust instead of the system's.
    pub ca_file: Option<&'a Path>,
    /// PEM certificate chain presented to the nodes (mTLS), with its key.
    pub client_cert_file: Option<&'a Path>,
    /// PEM private key of `client_cert_file`.
    pub client_key_file: Option<&'a Path>,
    /// Accept any certificate: development only.
    pub insecure: bool,
}

/// The client side of TLS to the upstream nodes. Cheap to clone.
#[derive(Clone)]
pub struct ClientTls {
    connector: TlsConnector,
    summary: String,
}

impl fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.summary)
    }
}

impl ClientTls {
    /// Loads the trust roots and the client certificate. `keys` names the settings, in the order
    /// `ca_file`, `client_cert_file`, `client_key_file`.
    ///
    /// # Errors
    /// A file that cannot be read or holds nothing usable, a key without its certificate (or the
    /// other way round), a key that does not match.
    pub fn load(settings: &ClientSettings<'_>, keys: [&'static str; 3]) -> Result<ClientTls, TlsError> {
        let [ca_key, cert_key, key_key] = keys;
        let builder = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| error(ca_key, e))?;
        let (builder, roots) = if settings.insecure {
            let verifier = Arc::new(AnyCertificate(provider()));
            (
                builder.dangerous().with_custom_certificate_verifier(verifier),
                "none (insecure)".to_owned(),
            )
        } else {
            let mut store = RootCertStore::empty();
            let what = match settings.ca_file {
                Some(path) => {
                    for cert in read_certs(path, ca_key)? {
                        store
                            .add(cert)
                            .map_err(|e| error(ca_key, format!("{}: {e}", path.display())))?;
                    }
                    path.display().to_string()
                }
                None => {
                    let found = rustls_native_certs::load_native_certs();
                    let (added, _) = store.add_parsable_certificates(found.certs);
                    if added == 0 {
                        return Err(error(
                            ca_key,
                            "no system root certificates were found; give a CA bundle file",
                        ));
                    }
                    format!("{added} system roots")
                }
            };
            (builder.with_root_certificates(store), what)
        };
        let mut config = match (settings.client_cert_file, settings.client_key_file) {
            (None, None) => builder.with_no_client_auth(),
            (Some(cert), Some(key)) => {
                let chain = read_certs(cert, cert_key)?;
                let key_der = read_key(key, key_key)?;
                builder
                    .with_client_auth_cert(chain, key_der)
                    .map_err(|e| error(key_key, format!("{}: {e}", key.display())))?
            }
            (Some(_), None) => return Err(error(key_key, "a client certificate needs its key")),
            (None, Some(_)) => return Err(error(cert_key, "a client key needs its certificate")),
        };
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(ClientTls {
            connector: TlsConnector::from(Arc::new(config)),
            summary: format!(
                "ClientTls {{ roots: {roots}, client_certificate: {} }}",
                settings.client_cert_file.is_some()
            ),
        })
    }

    /// The connector for new connections.
    pub fn connector(&self) -> &TlsConnector {
        &self.connector
    }
}

/// The listener's certificate and key. Cheap to clone.
#[derive(Clone)]
pub struct ServerTls {
    acceptor: TlsAcceptor,
    summary: String,
}

impl fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.summary)
    }
}

impl ServerTls {
    /// Loads a PEM certificate chain and its key. `keys` names the two settings.
    ///
    /// # Errors
    /// A file that cannot be read, holds nothing usable, or a key that does not match.
    pub fn load(cert_file: &Path, key_file: &Path, keys: [&'static str; 2]) -> Result<ServerTls, TlsError> {
        let [cert_key, key_key] = keys;
        let chain = read_certs(cert_file, cert_key)?;
        let key = read_key(key_file, key_key)?;
        let mut config = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| error(cert_key, e))?
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .map_err(|e| error(key_key, format!("{}: {e}", key_file.display())))?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(ServerTls {
            acceptor: TlsAcceptor::from(Arc::new(config)),
            summary: format!("ServerTls {{ certificate: {} }}", cert_file.display()),
        })
    }

    /// The acceptor for new connections.
    pub fn acceptor(&self) -> &TlsAcceptor {
        &self.acceptor
    }
}

/// The name a node's certificate must carry: its host name, or its IP address.
pub fn server_name(host: &str) -> Option<ServerName<'static>> {
    ServerName::try_from(host.to_owned()).ok()
}

fn read_certs(path: &Path, key: &'static str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| error(key, format!("{}: {e}", path.display())))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| error(key, format!("{}: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(error(
            key,
            format!("{}: no PEM certificate in the file", path.display()),
        ));
    }
    Ok(certs)
}

fn read_key(path: &Path, key: &'static str) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path)
        .map_err(|e| error(key, format!("{}: no usable PEM private key ({e})", path.display())))
}

/// `tls_insecure`: any certificate chain is accepted, but the handshake signatures are still
/// checked, so the connection is at least to whoever holds the presented key.
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
