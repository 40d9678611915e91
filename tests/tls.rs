//! TLS with certificates made at test time (rcgen): an `https://` upstream behind a private CA,
//! a wrong CA, mutual TLS, and TLS on esgate's own listener.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use esgate_test_support::{self as common, request, within, Binary, Client, Reader};
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};

/// A private CA and what it signed, as PEM files in a directory of the test's own.
struct Pki {
    dir: PathBuf,
    ca: CertifiedIssuer<'static, KeyPair>,
}

impl Pki {
    fn new(name: &str) -> Pki {
        let dir = std::env::temp_dir().join(format!("esgate-tls-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, format!("esgate test CA {name}"));
        let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().expect("key")).expect("CA");
        let pki = Pki { dir, ca };
        std::fs::write(pki.path("ca.pem"), pki.ca.pem()).expect("write CA");
        pki
    }

    fn path(&self, file: &str) -> PathBuf {
        self.dir.join(file)
    }

    /// A certificate for `names` signed by the CA, written as `<stem>.pem` and `<stem>.key`.
    fn issue(&self, stem: &str, names: &[&str], common_name: &str) -> (PathBuf, PathBuf) {
        let key = KeyPair::generate().expect("key");
        let mut params =
            CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>()).expect("params");
        params.distinguished_name.push(DnType::CommonName, common_name);
        let cert = params.signed_by(&key, &self.ca).expect("sign");
        let (cert_path, key_path) = (self.path(&format!("{stem}.pem")), self.path(&format!("{stem}.key")));
        std::fs::write(&cert_path, cert.pem()).expect("write cert");
        std::fs::write(&key_path, key.serialize_pem()).expect("write key");
        (cert_path, key_path)
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn certs(path: &Path) -> Vec<CertificateDer<'static>> {
    CertificateDer::pem_file_iter(path)
        .expect("read certs")
        .collect::<Result<_, _>>()
        .expect("parse certs")
}

fn key(path: &Path) -> PrivateKeyDer<'static> {
    PrivateKeyDer::from_pem_file(path).expect("read key")
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// What the HTTPS upstream saw of one request.
#[derive(Clone, Debug)]
struct SeenTls {
    path: String,
    client_certificate: bool,
}

/// An HTTPS upstream on loopback with a certificate for `localhost` and 127.0.0.1; with
/// `client_ca`, it asks for a client certificate signed by that CA and refuses connections
/// without one. Answers `{"tls":true}`.
async fn https_upstream(pki: &Pki, client_ca: Option<&Path>) -> (SocketAddr, Arc<Mutex<Vec<SeenTls>>>) {
    let (cert, key_path) = pki.issue("upstream", &["localhost", "127.0.0.1"], "upstream");
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("versions");
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            for c in certs(ca) {
                roots.add(c).expect("root");
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
                .build()
                .expect("verifier");
            builder.with_client_cert_verifier(verifier)
        }
    };
    let config = builder
        .with_single_cert(certs(&cert), key(&key_path))
        .expect("server config");
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, log) = (acceptor.clone(), log.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else { return };
                let client_certificate = tls.get_ref().1.peer_certificates().is_some_and(|c| !c.is_empty());
                let service = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let log = log.clone();
                    // esgate's own version probes (`GET /`) are not what these tests look at.
                    let probe = req
                        .headers()
                        .get("user-agent")
                        .and_then(|ua| ua.to_str().ok())
                        .is_some_and(|ua| ua.contains("(version probe)"));
                    async move {
                        if let (false, Ok(mut l)) = (probe, log.lock()) {
                            l.push(SeenTls {
                                path: req.uri().path().to_owned(),
                                client_certificate,
                            });
                        }
                        let mut resp = hyper::Response::new(Full::new(Bytes::from_static(b"{\"tls\":true}")));
                        resp.headers_mut()
                            .insert("content-type", http::HeaderValue::from_static("application/json"));
                        Ok::<_, Infallible>(resp)
                    }
                });
                let _ = http1::Builder::new().serve_connection(TokioIo::new(tls), service).await;
            });
        }
    });
    (addr, seen)
}

fn paths(seen: &Arc<Mutex<Vec<SeenTls>>>) -> Vec<SeenTls> {
    seen.lock().map(|s| s.clone()).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_https_upstream_behind_a_private_ca_works() {
    let pki = Pki::new("private-ca");
    let (addr, seen) = https_upstream(&pki, None).await;
    let ca = format!("--upstream-ca-file={}", pki.path("ca.pem").display());
    // By name and by IP address: both are in the certificate.
    for url in [format!("https://localhost:{}", addr.port()), format!("https://{addr}")] {
        let gw = esgate::Gateway::start(common::config(&[&format!("--upstream={url}"), &ca])).expect("start");
        let mut client = Client::connect(gw.listen_addr()).await;
        let resp = client.exchange("GET", &request("GET", "/_tls_check", &[], b"")).await;
        assert_eq!(resp.status(), 200, "{url}: {}", String::from_utf8_lossy(&resp.body));
        assert_eq!(resp.json()["tls"], true);
    }
    let seen = paths(&seen);
    assert_eq!(seen.len(), 2);
    assert!(seen.iter().all(|s| s.path == "/_tls_check" && !s.client_certificate));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_ca_gives_a_502_in_elasticsearch_shape_and_a_clear_log_line() {
    let pki = Pki::new("right");
    let other = Pki::new("wrong");
    let (addr, seen) = https_upstream(&pki, None).await;
    let bin = Binary::start(
        &[
            &format!("--upstream=https://localhost:{}", addr.port()),
            &format!("--upstream-ca-file={}", other.path("ca.pem").display()),
        ],
        &[],
    );
    let mut client = Client::connect(bin.addr).await;
    let resp = client.exchange("GET", &request("GET", "/", &[], b"")).await;
    assert_eq!(resp.status(), 502);
    let body = resp.json();
    assert_eq!(body["error"]["type"], "esgate_bad_gateway_exception");
    assert_eq!(body["status"], 502);
    let reason = body["error"]["reason"].as_str().unwrap_or_default().to_owned();
    assert!(
        reason.contains("TLS handshake failed") && reason.contains("UnknownIssuer"),
        "{reason}"
    );
    let line = bin.wait_log("TLS handshake failed");
    assert!(
        line.contains("WARN") && line.contains(&format!("localhost:{}", addr.port())),
        "{line}"
    );
    assert!(
        paths(&seen).is_empty(),
        "nothing was sent over an unverified connection"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_insecure_switch_accepts_any_certificate_and_warns() {
    let pki = Pki::new("insecure");
    let (addr, _) = https_upstream(&pki, None).await;
    let bin = Binary::start(
        &[
            &format!("--upstream=https://localhost:{}", addr.port()),
            "--upstream-tls-insecure",
        ],
        &[],
    );
    let warning = bin.startup.iter().find(|l| l.contains("tls_insecure"));
    assert!(warning.is_some_and(|l| l.contains("WARN")), "{:?}", bin.startup);
    let mut client = Client::connect(bin.addr).await;
    let resp = client.exchange("GET", &request("GET", "/", &[], b"")).await;
    assert_eq!(resp.status(), 200);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_esgate"))
        .args(["--upstream-tls-insecure", "--listen=127.0.0.1:0", "--check-config"])
        .output()
        .expect("run");
    assert!(String::from_utf8_lossy(&out.stdout).contains("none (insecure)"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_presents_the_client_certificate() {
    let pki = Pki::new("mtls");
    let (addr, seen) = https_upstream(&pki, Some(&pki.path("ca.pem"))).await;
    let (cert, key_path) = pki.issue("client", &["esgate.test"], "esgate-client");
    let url = format!("--upstream=https://localhost:{}", addr.port());
    let ca = format!("--upstream-ca-file={}", pki.path("ca.pem").display());
    let gw = esgate::Gateway::start(common::config(&[
        &url,
        &ca,
        &format!("--upstream-client-cert-file={}", cert.display()),
        &format!("--upstream-client-key-file={}", key_path.display()),
    ]))
    .expect("start");
    let mut client = Client::connect(gw.listen_addr()).await;
    let resp = client.exchange("GET", &request("GET", "/_mtls", &[], b"")).await;
    assert_eq!(resp.status(), 200);
    let seen_now = paths(&seen);
    assert_eq!(seen_now.len(), 1);
    assert!(
        seen_now[0].client_certificate,
        "the upstream saw esgate's client certificate"
    );

    // Without the client certificate the node refuses the handshake: 502, nothing served.
    let gw = esgate::Gateway::start(common::config(&[&url, &ca])).expect("start");
    let mut client = Client::connect(gw.listen_addr()).await;
    let resp = client.exchange("GET", &request("GET", "/_no_cert", &[], b"")).await;
    assert_eq!(resp.status(), 502);
    assert_eq!(paths(&seen).len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tls_listener_serves_a_client_that_trusts_the_test_ca() {
    let pki = Pki::new("listener");
    let (cert, key_path) = pki.issue("esgate", &["localhost"], "esgate");
    let mut up = common::Upstream::ok().await;
    let gw = esgate::Gateway::start(common::config(&[
        &format!("--upstream={}", up.url()),
        &format!("--tls-cert-file={}", cert.display()),
        &format!("--tls-key-file={}", key_path.display()),
        "--forwarded-headers",
    ]))
    .expect("start");
    let mut reader = Reader::new(tls_connect(gw.listen_addr(), &pki.path("ca.pem")).await);
    use tokio::io::AsyncWriteExt;
    reader
        .get_mut()
        .write_all(&request("GET", "/over-tls", &[], b""))
        .await
        .expect("write");
    let resp = within("the answer", reader.response("GET")).await.expect("read");
    assert_eq!(resp.status(), 200);
    let forwarded = up.next().await.msg;
    assert_eq!(forwarded.header("x-forwarded-proto"), Some("https"));

    // A plain-HTTP client gets no answer: the listener speaks TLS only.
    let mut plain = Client::connect(gw.listen_addr()).await;
    plain.send(&request("GET", "/", &[], b"")).await;
    assert!(within("the refusal", plain.reader.head())
        .await
        .map_or(true, |h| h.is_none()));
}

#[test]
fn tls_settings_are_checked_when_the_configuration_loads() {
    let err = |args: &[&str]| match esgate::Config::load_from(std::iter::once("esgate").chain(args.iter().copied())) {
        Err(esgate::config::LoadError::Invalid(e)) => e,
        other => panic!("expected an invalid configuration, got {other:?}"),
    };
    let e = err(&["--upstream=https://es:9200", "--upstream-ca-file=/nonexistent/ca.pem"]);
    assert_eq!(e.key(), "upstream.ca_file");
    let pki = Pki::new("config");
    let (cert, _) = pki.issue("only-cert", &["localhost"], "x");
    let e = err(&[&format!("--upstream-client-cert-file={}", cert.display())]);
    assert_eq!(e.key(), "upstream.client_key_file");
    let e = err(&[
        &format!("--tls-cert-file={}", cert.display()),
        &format!("--tls-key-file={}", cert.display()),
    ]);
    assert_eq!(e.key(), "server.tls_key_file", "a certificate is no key");
}

/// A TLS connection to esgate at `addr` (as `localhost`) from a client that trusts `ca`.
async fn tls_connect(addr: SocketAddr, ca: &Path) -> tokio_rustls::client::TlsStream<TcpStream> {
    let mut roots = RootCertStore::empty();
    for c in certs(ca) {
        roots.add(c).expect("root");
    }
    let config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let name = ServerName::try_from("localhost").expect("name");
    within(
        "the TLS handshake",
        TlsConnector::from(Arc::new(config)).connect(name, tcp),
    )
    .await
    .expect("handshake with esgate")
}

/// The certificate esgate presents to a new TLS connection.
async fn presented(addr: SocketAddr, ca: &Path) -> CertificateDer<'static> {
    let tls = tls_connect(addr, ca).await;
    tls.get_ref().1.peer_certificates().expect("a certificate")[0]
        .clone()
        .into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_are_reloaded_with_the_configuration() {
    let pki = Pki::new("cert-reload");
    let (first, first_key) = pki.issue("first", &["localhost"], "first");
    let (second, second_key) = pki.issue("second", &["localhost"], "second");
    let up = common::Upstream::ok().await;
    let args = |cert: &Path, key: &Path| {
        common::config(&[
            &format!("--upstream={}", up.url()),
            &format!("--tls-cert-file={}", cert.display()),
            &format!("--tls-key-file={}", key.display()),
        ])
    };
    let gw = esgate::Gateway::start(args(&first, &first_key)).expect("start");
    let ca = pki.path("ca.pem");
    assert_eq!(presented(gw.listen_addr(), &ca).await, certs(&first)[0]);
    let ignored = gw.reload(args(&second, &second_key));
    assert!(ignored.is_empty(), "{ignored:?}");
    assert_eq!(presented(gw.listen_addr(), &ca).await, certs(&second)[0]);
}
