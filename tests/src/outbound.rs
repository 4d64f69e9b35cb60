//! Endpoints for tests of the calls Kabinet makes to the outside: a private
//! certificate authority and a relay certificate made with the `openssl` CLI,
//! aiosmtpd speaking STARTTLS or implicit TLS, an HTTPS front for the test SMS
//! gateway, and a mail relay that accepts connections and never answers.

use std::ffi::OsStr;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::delivery::SmtpServer;

const OPENSSL: &str = "openssl";

/// A private certificate authority and one certificate it signed for
/// `127.0.0.1` and `localhost`, as PEM files in a temporary directory.
pub struct TestCertificates {
    /// The authority's certificate: the CA file a client trusts.
    pub ca: PathBuf,
    /// The server's certificate.
    pub cert: PathBuf,
    /// The server's private key (PKCS #8).
    pub key: PathBuf,
    _dir: tempfile::TempDir,
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new(OPENSSL)
        .current_dir(dir)
        .args(args)
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl TestCertificates {
    /// Makes a fresh authority and server certificate; `None` (after saying
    /// SKIPPED) when the `openssl` CLI is missing outside CI. Under `CI=true` a
    /// missing `openssl` fails the test.
    pub fn generate() -> Option<TestCertificates> {
        let available = Command::new(OPENSSL)
            .arg("version")
            .output()
            .is_ok_and(|o| o.status.success());
        if !available {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "the openssl CLI is required under CI=true (apt-get install -y openssl)"
            );
            eprintln!("SKIPPED (the openssl CLI is not installed: apt-get install -y openssl)");
            return None;
        }
        let dir = tempfile::tempdir().expect("certificate dir");
        let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"];
        let mut ca = vec!["req", "-x509", "-nodes", "-days", "2"];
        ca.extend(ec);
        ca.extend([
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-subj",
            "/CN=Kabinet test CA",
        ]);
        openssl(dir.path(), &ca);
        let mut request = vec!["req", "-nodes"];
        request.extend(ec);
        request.extend([
            "-keyout",
            "relay.key",
            "-out",
            "relay.csr",
            "-subj",
            "/CN=localhost",
        ]);
        openssl(dir.path(), &request);
        // A server certificate, not an authority: rustls refuses a CA as the peer.
        std::fs::write(
            dir.path().join("relay.ext"),
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=critical,CA:FALSE\n\
             keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n",
        )
        .expect("extensions");
        openssl(
            dir.path(),
            &[
                "x509",
                "-req",
                "-in",
                "relay.csr",
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "2",
                "-extfile",
                "relay.ext",
                "-out",
                "relay.pem",
            ],
        );
        Some(TestCertificates {
            ca: dir.path().join("ca.pem"),
            cert: dir.path().join("relay.pem"),
            key: dir.path().join("relay.key"),
            _dir: dir,
        })
    }
}

/// aiosmtpd requiring STARTTLS with `certs` before it takes any mail, at
/// `smtp://127.0.0.1:port` (see [`SmtpServer::start`] for when it is `None`).
pub async fn starttls_relay(certs: &TestCertificates) -> Option<SmtpServer> {
    let options: [&OsStr; 4] = [
        "--tlscert".as_ref(),
        certs.cert.as_os_str(),
        "--tlskey".as_ref(),
        certs.key.as_os_str(),
    ];
    SmtpServer::start_with("smtp", &options).await
}

/// aiosmtpd speaking TLS from the first byte with `certs`, at `smtps://127.0.0.1:port`.
pub async fn implicit_tls_relay(certs: &TestCertificates) -> Option<SmtpServer> {
    let options: [&OsStr; 4] = [
        "--smtpscert".as_ref(),
        certs.cert.as_os_str(),
        "--smtpskey".as_ref(),
        certs.key.as_os_str(),
    ];
    SmtpServer::start_with("smtps", &options).await
}

/// An HTTPS front for a plain local HTTP service: it terminates TLS with a
/// test certificate and relays the bytes to the service.
pub struct TlsFront {
    /// The service's URL through the front (`https://127.0.0.1:port/…`).
    pub url: String,
    task: JoinHandle<()>,
}

impl TlsFront {
    /// Puts a front before `plain_url` (`http://127.0.0.1:port/path`).
    pub async fn start(certs: &TestCertificates, plain_url: &str) -> TlsFront {
        let rest = plain_url
            .strip_prefix("http://")
            .expect("a plain http:// URL");
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        let backend: SocketAddr = authority.parse().expect("an IP address and port");
        let chain: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(&std::fs::read(&certs.cert).expect("certificate"))
                .collect::<Result<_, _>>()
                .expect("PEM certificate");
        let key = PrivateKeyDer::from_pem_slice(&std::fs::read(&certs.key).expect("key"))
            .expect("PEM key");
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .expect("server certificate");
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let task = tokio::spawn(async move {
            let mut connections = tokio::task::JoinSet::new();
            while let Ok((socket, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                connections.spawn(async move {
                    // A client that refuses the certificate ends the handshake: nothing to relay.
                    let Ok(mut tls) = acceptor.accept(socket).await else {
                        return;
                    };
                    let Ok(mut plain) = tokio::net::TcpStream::connect(backend).await else {
                        return;
                    };
                    let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
                });
            }
        });
        TlsFront {
            url: format!("https://127.0.0.1:{port}/{path}"),
            task,
        }
    }
}

impl Drop for TlsFront {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A mail relay that accepts every connection and never says a word.
pub struct SilentRelay {
    /// `smtp://127.0.0.1:port`.
    pub url: String,
    holding: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl SilentRelay {
    /// Listens on a free local port.
    pub async fn start() -> SilentRelay {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let holding = Arc::new(AtomicUsize::new(0));
        let count = holding.clone();
        let task = tokio::spawn(async move {
            let mut connections = tokio::task::JoinSet::new();
            while let Ok((mut socket, _)) = listener.accept().await {
                let count = count.clone();
                count.fetch_add(1, Ordering::SeqCst);
                connections.spawn(async move {
                    // Read (and ignore) until the client gives up and closes.
                    let mut buffer = [0u8; 512];
                    while matches!(socket.read(&mut buffer).await, Ok(n) if n > 0) {}
                    count.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        SilentRelay {
            url: format!("smtp://127.0.0.1:{port}"),
            holding,
            task,
        }
    }

    /// Connections the relay holds open right now.
    pub fn holding(&self) -> usize {
        self.holding.load(Ordering::SeqCst)
    }

    /// Waits until the relay holds at least `n` connections at once.
    pub async fn until_holding(&self, n: usize) {
        for _ in 0..200 {
            if self.holding() >= n {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        panic!(
            "the relay never held {n} connections (it holds {})",
            self.holding()
        );
    }
}

impl Drop for SilentRelay {
    fn drop(&mut self) {
        self.task.abort();
    }
}
