//! TLS termination for the agent's MQTTS listener, with certificate hot reload.
//!
//! [`TlsConfigWatcher`] loads a PEM certificate chain and private key (PKCS#8,
//! PKCS#1 RSA or SEC1 EC), checks that they belong together, and serves them through
//! one rustls `ServerConfig` whose certificate resolver reads the current pair from
//! an `ArcSwap`. So every [`TlsConfigWatcher::acceptor`], even one made before a
//! reload, hands new handshakes the current certificate; connections already
//! established keep theirs.
//!
//! Reload is by polling both files' [`FileStamp`]s (canonical path, size, times,
//! inode), which follows a Kubernetes Secret volume's `..data` symlink swap, a
//! rename over the file, and an in-place rewrite. A new pair that does not load
//! (unparsable, mismatched key and certificate, half-written) is logged and counted,
//! and the previous pair stays in force; it is retried once either file changes
//! again.
//!
//! Crypto is rustls' `ring` provider, chosen explicitly (no aws-lc, no cmake).
//! TLS 1.2 and 1.3. ALPN: `mqtt` is selected when the client offers it; a client
//! offering ALPN without `mqtt` is refused with `no_application_protocol`, as
//! RFC 7301 asks; a client offering no ALPN is served.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use parking_lot::Mutex;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{InconsistentKeys, ServerConfig};
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

use crate::blocklist::FileStamp;

/// The ALPN protocol name selected when offered.
pub const ALPN_MQTT: &[u8] = b"mqtt";

/// A certificate/key pair that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read TLS {what} {path}: {source}")]
    Read {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("bad PEM in TLS {what} {path}: {source}")]
    Pem {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: pem::Error,
    },
    #[error("no CERTIFICATE block in TLS certificate file {path}")]
    NoCertificate { path: PathBuf },
    #[error(
        "no private key (PKCS#8 \"PRIVATE KEY\", \"RSA PRIVATE KEY\" or \"EC PRIVATE KEY\") in {path}"
    )]
    NoPrivateKey { path: PathBuf },
    #[error("the private key in {key} does not match the certificate in {cert}")]
    KeyMismatch { cert: PathBuf, key: PathBuf },
    #[error("unusable TLS certificate {cert} / key {key}: {source}")]
    Unusable {
        cert: PathBuf,
        key: PathBuf,
        #[source]
        source: rustls::Error,
    },
}

/// The agent's TLS server configuration, following its certificate files.
/// Cheap to clone; clones share the state.
#[derive(Clone)]
pub struct TlsConfigWatcher {
    shared: Arc<Shared>,
}

struct Shared {
    cert_path: PathBuf,
    key_path: PathBuf,
    provider: Arc<CryptoProvider>,
    resolver: Arc<CurrentCert>,
    config: Arc<ServerConfig>,
    /// Stamps of the pair last tried, loaded or not.
    last_seen: Mutex<Option<(FileStamp, FileStamp)>>,
    reloads: AtomicU64,
    failures: AtomicU64,
    last_error: Mutex<Option<String>>,
}

/// Serves whatever pair is current to each new handshake.
struct CurrentCert(ArcSwap<CertifiedKey>);

impl ResolvesServerCert for CurrentCert {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.load_full())
    }
}

impl fmt::Debug for CurrentCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CurrentCert")
            .field("chain_len", &self.0.load().cert.len())
            .finish()
    }
}

impl TlsConfigWatcher {
    /// Loads the PEM certificate chain at `cert_path` (end-entity first) and the
    /// private key at `key_path` (which may be the same file).
    pub fn load(
        cert_path: impl Into<PathBuf>,
        key_path: impl Into<PathBuf>,
    ) -> Result<Self, TlsError> {
        let cert_path = cert_path.into();
        let key_path = key_path.into();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let stamps = stamp_pair(&cert_path, &key_path).ok();
        let certified = load_pair(&cert_path, &key_path, &provider)?;
        let resolver = Arc::new(CurrentCert(ArcSwap::from_pointee(certified)));
        let mut config = ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .map_err(|source| TlsError::Unusable {
                cert: cert_path.clone(),
                key: key_path.clone(),
                source,
            })?
            .with_no_client_auth()
            .with_cert_resolver(resolver.clone());
        config.alpn_protocols = vec![ALPN_MQTT.to_vec()];
        Ok(Self {
            shared: Arc::new(Shared {
                cert_path,
                key_path,
                provider,
                resolver,
                config: Arc::new(config),
                last_seen: Mutex::new(stamps),
                reloads: AtomicU64::new(0),
                failures: AtomicU64::new(0),
                last_error: Mutex::new(None),
            }),
        })
    }

    /// An acceptor for new connections; it always serves the current pair.
    pub fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(Arc::clone(&self.shared.config))
    }

    /// The rustls server configuration behind [`Self::acceptor`].
    pub fn server_config(&self) -> Arc<ServerConfig> {
        Arc::clone(&self.shared.config)
    }

    /// The certificate chain served now, end-entity first.
    pub fn current_chain(&self) -> Vec<CertificateDer<'static>> {
        self.shared.resolver.0.load().cert.clone()
    }

    /// Looks at both files once and reloads the pair if either changed.
    /// `Ok(true)`: a new pair is in force; `Ok(false)`: nothing changed; `Err`: the
    /// new files are unusable and the previous pair stays. Blocking file I/O.
    pub fn check(&self) -> Result<bool, TlsError> {
        let shared = &*self.shared;
        let stamps = match stamp_pair(&shared.cert_path, &shared.key_path) {
            Ok(stamps) => Some(stamps),
            Err(err) => {
                let mut last_seen = shared.last_seen.lock();
                if last_seen.is_none() {
                    return Ok(false);
                }
                *last_seen = None;
                drop(last_seen);
                return Err(self.failed(err));
            }
        };
        {
            let mut last_seen = shared.last_seen.lock();
            if *last_seen == stamps {
                return Ok(false);
            }
            *last_seen = stamps;
        }
        match load_pair(&shared.cert_path, &shared.key_path, &shared.provider) {
            Ok(certified) => {
                shared.resolver.0.store(Arc::new(certified));
                shared.reloads.fetch_add(1, Ordering::Relaxed);
                *shared.last_error.lock() = None;
                Ok(true)
            }
            Err(err) => Err(self.failed(err)),
        }
    }

    fn failed(&self, err: TlsError) -> TlsError {
        self.shared.failures.fetch_add(1, Ordering::Relaxed);
        *self.shared.last_error.lock() = Some(err.to_string());
        err
    }

    /// Spawns a task that calls [`Self::check`] every `interval` and logs the
    /// outcome. Must be called within a tokio runtime. The task ends when aborted,
    /// or once nothing can use the configuration any more: no other clone of the
    /// watcher, no acceptor and no [`Self::server_config`] left.
    pub fn watch(&self, interval: Duration) -> JoinHandle<()> {
        let watcher = self.clone();
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(interval);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticks.tick().await;
            loop {
                ticks.tick().await;
                if watcher.unused() {
                    return;
                }
                let checker = watcher.clone();
                match tokio::task::spawn_blocking(move || checker.check()).await {
                    Ok(Ok(true)) => tracing::info!(
                        cert = %watcher.shared.cert_path.display(),
                        key = %watcher.shared.key_path.display(),
                        "tls certificate reloaded"
                    ),
                    Ok(Ok(false)) => {}
                    Ok(Err(error)) => tracing::warn!(
                        %error,
                        "tls certificate reload failed, keeping the previous certificate"
                    ),
                    Err(error) => {
                        tracing::error!(%error, "tls certificate check task failed");
                        return;
                    }
                }
            }
        })
    }

    /// Whether the caller holds the only way to reach the configuration.
    fn unused(&self) -> bool {
        Arc::strong_count(&self.shared) == 1 && Arc::strong_count(&self.shared.config) == 1
    }

    /// Successful reloads since the initial load.
    pub fn reloads(&self) -> u64 {
        self.shared.reloads.load(Ordering::Relaxed)
    }

    /// Failed reload attempts.
    pub fn reload_failures(&self) -> u64 {
        self.shared.failures.load(Ordering::Relaxed)
    }

    /// The error of the latest reload attempt, if it failed.
    pub fn last_error(&self) -> Option<String> {
        self.shared.last_error.lock().clone()
    }
}

impl fmt::Debug for TlsConfigWatcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsConfigWatcher")
            .field("cert_path", &self.shared.cert_path)
            .field("key_path", &self.shared.key_path)
            .field("reloads", &self.reloads())
            .finish_non_exhaustive()
    }
}

fn stamp_pair(cert: &Path, key: &Path) -> Result<(FileStamp, FileStamp), TlsError> {
    let stamp = |what, path: &Path| {
        FileStamp::of(path).map_err(|source| TlsError::Read {
            what,
            path: path.to_owned(),
            source,
        })
    };
    Ok((stamp("certificate", cert)?, stamp("key", key)?))
}

fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        what,
        path: path.to_owned(),
        source,
    })
}

fn pem_error(what: &'static str, path: &Path) -> impl FnOnce(pem::Error) -> TlsError {
    let path = path.to_owned();
    move |source| TlsError::Pem { what, path, source }
}

fn load_pair(
    cert_path: &Path,
    key_path: &Path,
    provider: &CryptoProvider,
) -> Result<CertifiedKey, TlsError> {
    let cert_pem = read("certificate", cert_path)?;
    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(pem_error("certificate", cert_path))?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate {
            path: cert_path.to_owned(),
        });
    }
    let key_pem = read("key", key_path)?;
    let key = match PrivateKeyDer::from_pem_slice(&key_pem) {
        Ok(key) => key,
        Err(pem::Error::NoItemsFound) => {
            return Err(TlsError::NoPrivateKey {
                path: key_path.to_owned(),
            });
        }
        Err(source) => return Err(pem_error("key", key_path)(source)),
    };
    CertifiedKey::from_der(chain, key, provider).map_err(|source| match source {
        rustls::Error::InconsistentKeys(InconsistentKeys::KeyMismatch) => TlsError::KeyMismatch {
            cert: cert_path.to_owned(),
            key: key_path.to_owned(),
        },
        source => TlsError::Unusable {
            cert: cert_path.to_owned(),
            key: key_path.to_owned(),
            source,
        },
    })
}
