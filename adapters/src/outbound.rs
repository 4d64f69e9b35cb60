//! What every adapter that calls out shares: the certificate authorities it
//! trusts and the time limits of one call.

use std::path::{Path, PathBuf};
use std::time::Duration;

/// Time limits of one outbound call. A peer that accepts the connection and
/// then falls silent fails the call by `read`; a peer that answers, but too
/// slowly to finish, fails it by `total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// Longest wait to open the connection (TCP, and TLS where it comes first).
    pub connect: Duration,
    /// Longest wait for the peer's next answer once connected.
    pub read: Duration,
    /// Longest the whole call may take, connecting included.
    pub total: Duration,
}

/// A bundle of CA certificates (PEM) that replaces the public roots: a relay or
/// gateway on a private network is then trusted by its own authority only.
#[derive(Clone, PartialEq, Eq)]
pub struct CaBundle {
    pem: Vec<u8>,
    certificates: usize,
    source: Option<PathBuf>,
}

impl std::fmt::Debug for CaBundle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CaBundle")
            .field("certificates", &self.certificates)
            .field("source", &self.source)
            .finish()
    }
}

/// A CA bundle that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum CaBundleError {
    #[error("cannot read the CA file {}", path.display())]
    Unreadable {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the CA file {} is not PEM", path.display())]
    NotPem {
        path: PathBuf,
        #[source]
        source: reqwest::Error,
    },
    #[error("the CA file {} holds no certificate (expected -----BEGIN CERTIFICATE-----)", path.display())]
    Empty { path: PathBuf },
}

impl CaBundle {
    /// Reads the PEM certificates of the file at `path`; at least one is required.
    pub fn read(path: &Path) -> Result<CaBundle, CaBundleError> {
        let pem = std::fs::read(path).map_err(|source| CaBundleError::Unreadable {
            path: path.to_path_buf(),
            source,
        })?;
        let certificates = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|source| CaBundleError::NotPem {
                path: path.to_path_buf(),
                source,
            })?
            .len();
        if certificates == 0 {
            return Err(CaBundleError::Empty {
                path: path.to_path_buf(),
            });
        }
        Ok(CaBundle {
            pem,
            certificates,
            source: Some(path.to_path_buf()),
        })
    }

    /// The bundle as PEM text.
    pub fn pem(&self) -> &[u8] {
        &self.pem
    }

    /// How many certificates the bundle holds.
    pub fn len(&self) -> usize {
        self.certificates
    }

    /// Whether the bundle holds no certificate (never true of a bundle that was read).
    pub fn is_empty(&self) -> bool {
        self.certificates == 0
    }
}

/// Whether `host` (a name, an IPv4 address or a bracketed IPv6 address) is
/// this machine's loopback: traffic to it never crosses a network.
pub fn is_loopback_host(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_without_certificates_is_refused() {
        let dir = std::env::temp_dir().join(format!("kabinet-ca-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("empty.pem");
        std::fs::write(&path, "not a certificate\n").expect("write");
        let refused = CaBundle::read(&path).expect_err("no certificate");
        assert!(matches!(refused, CaBundleError::Empty { .. }), "{refused}");
        let missing = CaBundle::read(&dir.join("absent.pem")).expect_err("missing");
        assert!(
            matches!(missing, CaBundleError::Unreadable { .. }),
            "{missing}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn only_loopback_hosts_count_as_this_machine() {
        assert!(is_loopback_host("localhost"));
        assert!(is_loopback_host("127.0.0.1"));
        assert!(is_loopback_host("127.8.9.10"));
        assert!(is_loopback_host("[::1]"));
        assert!(!is_loopback_host("mail.example.ru"));
        assert!(!is_loopback_host("10.0.0.1"));
        assert!(!is_loopback_host("localhost.example.ru"));
    }
}
