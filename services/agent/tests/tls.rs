//! TLS termination: real tokio-rustls handshakes against a listener using the
//! watcher's acceptor; certificate rotation seen by new connections while old ones
//! keep going; bad new files keep the old pair; clear load errors; PKCS#8, PKCS#1
//! RSA and SEC1 EC keys. Certificates come from rcgen (a test CA issuing
//! `localhost` leaves), except the fixed RSA/EC fixtures below.

use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, SerialNumber,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use throng_agent::tls::{TlsConfigWatcher, TlsError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::client::TlsStream;
use tokio_rustls::{TlsAcceptor, TlsConnector};

type Ca = CertifiedIssuer<'static, KeyPair>;

fn test_ca() -> Ca {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(DnType::CommonName, "throng test ca");
    CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap()
}

struct Leaf {
    /// Leaf then CA: a full chain, as cert-manager writes `tls.crt`.
    chain_pem: String,
    key_pem: String,
    der: CertificateDer<'static>,
}

fn leaf(ca: &Ca, common_name: &str, serial: u64) -> Leaf {
    let mut params = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    params.serial_number = Some(SerialNumber::from(serial));
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, ca).unwrap();
    Leaf {
        chain_pem: format!("{}{}", cert.pem(), ca.pem()),
        key_pem: key.serialize_pem(),
        der: cert.der().clone(),
    }
}

fn roots(ca_pem: &str) -> RootCertStore {
    let mut roots = RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(ca_pem.as_bytes()).unwrap())
        .unwrap();
    roots
}

fn write_atomically(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

struct Files {
    _dir: tempfile::TempDir,
    cert: std::path::PathBuf,
    key: std::path::PathBuf,
}

impl Files {
    fn new(leaf: &Leaf) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let files = Files {
            cert: dir.path().join("tls.crt"),
            key: dir.path().join("tls.key"),
            _dir: dir,
        };
        files.install(leaf);
        files
    }

    fn install(&self, leaf: &Leaf) {
        write_atomically(&self.cert, &leaf.chain_pem);
        write_atomically(&self.key, &leaf.key_pem);
    }
}

/// Accepts TLS connections with `acceptor` (or the watcher's current one per
/// connection) and echoes what each client sends.
async fn serve(acceptor: impl Fn() -> TlsAcceptor + Send + 'static) -> SocketAddr {
    serve_with_task(acceptor).await.0
}

async fn serve_with_task(
    acceptor: impl Fn() -> TlsAcceptor + Send + 'static,
) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            let acceptor = acceptor();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut buf = [0u8; 256];
                while let Ok(n @ 1..) = tls.read(&mut buf).await {
                    if tls.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr, task)
}

async fn connect(
    addr: SocketAddr,
    roots: &RootCertStore,
    alpn: &[&[u8]],
) -> io::Result<TlsStream<TcpStream>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots.clone())
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::try_from("localhost").unwrap();
    TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
}

async fn echo(stream: &mut TlsStream<TcpStream>, msg: &[u8]) {
    stream.write_all(msg).await.unwrap();
    let mut back = vec![0u8; msg.len()];
    stream.read_exact(&mut back).await.unwrap();
    assert_eq!(back, msg);
}

fn served_leaf(stream: &TlsStream<TcpStream>) -> CertificateDer<'static> {
    stream.get_ref().1.peer_certificates().unwrap()[0].clone()
}

#[tokio::test]
async fn handshake_echo_and_mqtt_alpn() {
    let ca = test_ca();
    let leaf1 = leaf(&ca, "agent-1", 1);
    let files = Files::new(&leaf1);
    let watcher = TlsConfigWatcher::load(&files.cert, &files.key).unwrap();
    assert_eq!(watcher.current_chain().len(), 2);
    let addr = serve(move || watcher.acceptor()).await;
    let roots = roots(&ca.pem());

    let mut with_alpn = connect(addr, &roots, &[b"mqtt"]).await.unwrap();
    echo(&mut with_alpn, b"\x10\x0c\x00\x04MQTT").await;
    assert_eq!(with_alpn.get_ref().1.alpn_protocol(), Some(&b"mqtt"[..]));
    assert_eq!(served_leaf(&with_alpn), leaf1.der);

    let mut without = connect(addr, &roots, &[]).await.unwrap();
    echo(&mut without, b"hello").await;
    assert_eq!(without.get_ref().1.alpn_protocol(), None);

    let mut among_others = connect(addr, &roots, &[b"x-other", b"mqtt"]).await.unwrap();
    echo(&mut among_others, b"x").await;
    assert_eq!(among_others.get_ref().1.alpn_protocol(), Some(&b"mqtt"[..]));

    let refused = connect(addr, &roots, &[b"h2"]).await;
    assert!(refused.is_err(), "ALPN offered without mqtt is refused");
}

#[tokio::test]
async fn rotation_reaches_new_connections_and_bad_files_keep_the_old_pair() {
    let ca = test_ca();
    let roots = roots(&ca.pem());
    let (leaf1, leaf2, leaf3) = (
        leaf(&ca, "agent-1", 1),
        leaf(&ca, "agent-2", 2),
        leaf(&ca, "agent-3", 3),
    );
    let files = Files::new(&leaf1);
    let watcher = TlsConfigWatcher::load(&files.cert, &files.key).unwrap();
    // One acceptor made before any rotation serves every later certificate.
    let acceptor = watcher.acceptor();
    let addr = serve(move || acceptor.clone()).await;

    let mut old = connect(addr, &roots, &[b"mqtt"]).await.unwrap();
    echo(&mut old, b"before").await;
    assert_eq!(served_leaf(&old), leaf1.der);
    assert!(!watcher.check().unwrap(), "nothing changed yet");

    files.install(&leaf2);
    assert!(watcher.check().unwrap());
    assert_eq!(watcher.reloads(), 1);
    let mut new = connect(addr, &roots, &[b"mqtt"]).await.unwrap();
    echo(&mut new, b"after").await;
    assert_eq!(served_leaf(&new), leaf2.der);
    assert_ne!(leaf1.der, leaf2.der);
    echo(&mut old, b"old connection still works").await;

    // A cert file that is not PEM.
    write_atomically(&files.cert, "this is not a certificate\n");
    let err = watcher.check().unwrap_err();
    assert!(matches!(err, TlsError::NoCertificate { .. }), "{err}");
    // A certificate whose key has not arrived yet.
    write_atomically(&files.cert, &leaf3.chain_pem);
    let err = watcher.check().unwrap_err();
    assert!(matches!(err, TlsError::KeyMismatch { .. }), "{err}");
    assert!(watcher.last_error().unwrap().contains("does not match"));
    assert_eq!(watcher.reload_failures(), 2);
    assert!(!watcher.check().unwrap(), "a bad pair is reported once");
    let mut still = connect(addr, &roots, &[b"mqtt"]).await.unwrap();
    echo(&mut still, b"still").await;
    assert_eq!(served_leaf(&still), leaf2.der);

    write_atomically(&files.key, &leaf3.key_pem);
    assert!(watcher.check().unwrap());
    assert_eq!(watcher.last_error(), None);
    let mut third = connect(addr, &roots, &[]).await.unwrap();
    echo(&mut third, b"third").await;
    assert_eq!(served_leaf(&third), leaf3.der);
    assert_eq!(watcher.reloads(), 2);
}

#[tokio::test]
async fn the_watch_task_picks_up_new_files_and_ends_when_nothing_uses_it() {
    let ca = test_ca();
    let roots = roots(&ca.pem());
    let (leaf1, leaf2) = (leaf(&ca, "agent-1", 10), leaf(&ca, "agent-2", 11));
    let files = Files::new(&leaf1);
    let watcher = TlsConfigWatcher::load(&files.cert, &files.key).unwrap();
    let task = watcher.watch(Duration::from_millis(20));
    let acceptor = watcher.acceptor();
    let (addr, server) = serve_with_task(move || acceptor.clone()).await;

    files.install(&leaf2);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut client = connect(addr, &roots, &[b"mqtt"]).await.unwrap();
        echo(&mut client, b"ping").await;
        if served_leaf(&client) == leaf2.der {
            break;
        }
        assert!(Instant::now() < deadline, "new certificate not served");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(watcher.reloads(), 1);

    // The server's acceptor alone keeps the reloads going.
    drop(watcher);
    files.install(&leaf1);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut client = connect(addr, &roots, &[]).await.unwrap();
        echo(&mut client, b"ping").await;
        if served_leaf(&client) == leaf1.der {
            break;
        }
        assert!(Instant::now() < deadline, "reload stopped with the watcher");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    server.abort();
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("watch task ends once no acceptor is left")
        .unwrap();
}

#[test]
fn load_errors_are_clear() {
    let ca = test_ca();
    let (leaf1, leaf2) = (leaf(&ca, "agent-1", 1), leaf(&ca, "agent-2", 2));
    let files = Files::new(&leaf1);
    let dir = files.cert.parent().unwrap();

    let missing = dir.join("missing.crt");
    let err = TlsConfigWatcher::load(&missing, &files.key).unwrap_err();
    assert!(matches!(err, TlsError::Read { .. }), "{err}");
    assert!(err.to_string().contains("missing.crt"), "{err}");

    let empty = dir.join("empty.pem");
    std::fs::write(&empty, "").unwrap();
    let err = TlsConfigWatcher::load(&empty, &files.key).unwrap_err();
    assert!(matches!(err, TlsError::NoCertificate { .. }), "{err}");

    let err = TlsConfigWatcher::load(&files.cert, &files.cert).unwrap_err();
    assert!(matches!(err, TlsError::NoPrivateKey { .. }), "{err}");
    assert!(err.to_string().contains("tls.crt"), "{err}");

    let broken = dir.join("broken.pem");
    std::fs::write(
        &broken,
        "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let err = TlsConfigWatcher::load(&broken, &files.key).unwrap_err();
    assert!(matches!(err, TlsError::Pem { .. }), "{err}");

    let other_key = dir.join("other.key");
    std::fs::write(&other_key, &leaf2.key_pem).unwrap();
    let err = TlsConfigWatcher::load(&files.cert, &other_key).unwrap_err();
    assert!(matches!(err, TlsError::KeyMismatch { .. }), "{err}");
}

#[tokio::test]
async fn rsa_pkcs1_and_ec_sec1_keys_load_and_serve() {
    for (cert, key) in [(RSA_CERT, RSA_PKCS1_KEY), (EC_CERT, EC_SEC1_KEY)] {
        let dir = tempfile::tempdir().unwrap();
        // Certificate and key in one file works too.
        let combined = dir.path().join("combined.pem");
        std::fs::write(&combined, format!("{cert}{key}")).unwrap();
        let watcher = TlsConfigWatcher::load(&combined, &combined).unwrap();
        let acceptor = watcher.acceptor();
        let addr = serve(move || acceptor.clone()).await;
        // The fixtures are self-signed `localhost` leaves: trust them directly.
        let mut client = connect(addr, &roots(cert), &[b"mqtt"]).await.unwrap();
        echo(&mut client, b"fixture").await;
        assert_eq!(
            served_leaf(&client),
            CertificateDer::from_pem_slice(cert.as_bytes()).unwrap()
        );
    }
}

// Fixed keys in the formats rcgen does not write, with self-signed `localhost`
// certificates (CA:FALSE) valid until 2126; made with openssl 3.0.
const RSA_PKCS1_KEY: &str = "\
-----BEGIN RSA PRIVATE KEY-----
MIIEogIBAAKCAQEAkMNDEVP27e6/aQNLwA70MfPssnCwPkSr94p4BB0IJFsGMk8I
G9xt3TwHMPtYOu9QdOz8+V9fKyGsGHNDkNEzdTiwqJ61JbS5aVLqW3DFMsKXRs+U
ULGjPNFUuaJVRlOmYQp0+KFlF24HlcAn8mRs8Ya/7H/mk7XyIYr0HFGdf6n1Tim8
KkI0zBGXxpsKsXAq+rZXilcgL0tDIqpC3CPdMBvs6ztM9S5/+FhTokqWwOoWkOKu
A/MI/kKCmKidmyVS7RKtMREqkeB7EQmZKafEmrIm1BiM92uMJhsJH1nsDnBZUl83
FNC9WQZefneKSUaDTomP2sdbZo1RUGWi5BOgTwIDAQABAoIBADQCAsFh8g/PO3NF
3NwWQ0MDCGGfPKJSV5nqZG3N5FPzY8mFPTuNOOdHnqnJUwxxV+16CvSof+9l/IcY
Ogj4L82IXWdnBVuTjx04zbumSyKOaHznLLjE6Ql7hz3eBVbrzJWGhTmh+kitngn9
7BwYWk93gtI7rSIaNvA4FLVr2PK5GTtqPqYVxaYAIdRGH2eNf4soySxMg9WiH3hG
KKnnTTJS1e7uqVmaG63xB8hgvq+JRVkIL+6Gme64pCao2LrntARaTgPSd0BI3kbE
QOk2fpMrYfTTQ2oQg+fG+Buct/m8d9AgZu6VW3e/FaXgUbiz1Br8vimMO5WSI+Fe
lKwZeEkCgYEAy/EPYZxF1+URQtLu9XSKnV6CA8uFZGoKxsQxMZgX1dVWDp/GVItu
GAPATyrkVy1l9Bs5xQ/2uAHC/XDkVHI55n6DgIRkoFHLHY9Jq0Uk4epv6/DdscfK
y30Fm+6p3+x+MwhplS//jcESbS7T0ggoOb6yzjk6wNPI4FEdP+yKGUUCgYEAtbcM
ZHH+oJlOglSajHNkZ7CIb3sg7fJlbjKNBQtKlvdwTrjUrjbZ3fqnMukZ9AdrrtXC
NhwLy1LSZ6SvMDWgDd7cY50F1mf2rRa74JGBAb6v98G3se5b+4MCLtQQcHCo/c2S
hrZEfcoivue9TAPz7dSAk7OBvY2gpKuJFEt8CoMCgYBAuGmHMo6/qwRFTqdi4e8z
bdCY37efXD+7QHvUH05BIAjFb1MDdZQkrtwSw6vfNpsKUrGMpjpHvtdgkrkDS5Sw
XyngWSON9SceZGCep7zCrSGDoNbaGmtzFGP5Tk4+r9CE5YCMRcU1+TWdzKSQHOKX
ILuh0mug0hUHivZbWPeieQKBgCCc05qLYvmLyi1V5c7jPtflNPddD9HkuROH+ws2
tZJWok9emL0TlxJh0/QtJb1IP6lHL+3qJqu9F4oGYnKyjSEwKDmwisWqLvltpRZu
xsp7YLWEjOVgNB31q0SgRrsHXSz/4hZPTAePaaD9klm8M+ExTEo140kTzAsBxj5g
NcjlAoGAc/g1ZEVfKdIOEQztqHWLR6ZZxpNgBZicac50vAhMiCXZQkCm+FpJMERO
WXhZhAU0YgW9OlleefGhtMLUB5Z+V1OH+wbEuddIYTS+lMP+QWUCHFerTxmr+iVg
EgjQY2gcBwoi5c2d1o98kpo38NJWVXgg0s52M9rDe+dAi9Sf6RY=
-----END RSA PRIVATE KEY-----
";

const RSA_CERT: &str = "\
-----BEGIN CERTIFICATE-----
MIIDIjCCAgqgAwIBAgIUEkFsSv5EIOHTOplz6RCmAjabSWswDQYJKoZIhvcNAQEL
BQAwFjEUMBIGA1UEAwwLcnNhLWZpeHR1cmUwIBcNMjYxMTI2MTIyMTA5WhgPMjEy
NjExMDIxMjIxMDlaMBYxFDASBgNVBAMMC3JzYS1maXh0dXJlMIIBIjANBgkqhkiG
9w0BAQEFAAOCAQ8AMIIBCgKCAQEAkMNDEVP27e6/aQNLwA70MfPssnCwPkSr94p4
BB0IJFsGMk8IG9xt3TwHMPtYOu9QdOz8+V9fKyGsGHNDkNEzdTiwqJ61JbS5aVLq
W3DFMsKXRs+UULGjPNFUuaJVRlOmYQp0+KFlF24HlcAn8mRs8Ya/7H/mk7XyIYr0
HFGdf6n1Tim8KkI0zBGXxpsKsXAq+rZXilcgL0tDIqpC3CPdMBvs6ztM9S5/+FhT
okqWwOoWkOKuA/MI/kKCmKidmyVS7RKtMREqkeB7EQmZKafEmrIm1BiM92uMJhsJ
H1nsDnBZUl83FNC9WQZefneKSUaDTomP2sdbZo1RUGWi5BOgTwIDAQABo2YwZDAd
BgNVHQ4EFgQUYormRut4HBtl1HmPgW6HcUpFW7swHwYDVR0jBBgwFoAUYormRut4
HBtl1HmPgW6HcUpFW7swDAYDVR0TAQH/BAIwADAUBgNVHREEDTALgglsb2NhbGhv
c3QwDQYJKoZIhvcNAQELBQADggEBACpIm//oWgiMIAO8qMYXoatwMmGvwu09U43I
FHi7OIuNZtdwU+Vm41nVWEi2Qfx9uZyB7VuaNasYqE2IXKoLaMtqg/Ry+isVh8TK
he6leUhtfhJj5nHGFK1rfzQoOjbfIbOjxURTH6pH2cYMAgNFJMTHCdD7R2JESzSI
M5HZ2nGruAhfyz5QI5dM7sQ6iicjvdoO9G1mn+yjQ3UxfIrflND/mAwGH1t15kPr
0UYiO/haO8+D2ytK7oqX1ilO3EG3SIPzBK65itha6j4HO6cCdUkR+DPkP7YCjQvN
wxrkzfjv0LAQ1h17kctqxEXEH1JMr49xiUNRnPueIpvFAv7iJao=
-----END CERTIFICATE-----
";

const EC_SEC1_KEY: &str = "\
-----BEGIN EC PRIVATE KEY-----
MHcCAQEEIPmlaVlSWw/XKjEVp0SsHS54+4XFdqI+9fs4gEU5GNSaoAoGCCqGSM49
AwEHoUQDQgAEKZohc8oUu90eJi0b8L9/S3ZDuEFtERjsT3Fj7j2zYHv0MUVSNT/x
3yFxuCvVZEh4qN0IF0b6tQgO4sXcOZOVtA==
-----END EC PRIVATE KEY-----
";

const EC_CERT: &str = "\
-----BEGIN CERTIFICATE-----
MIIBlTCCATqgAwIBAgIUQDyhzw19iGT9Jz4RwPsPw1SO1r0wCgYIKoZIzj0EAwIw
FTETMBEGA1UEAwwKZWMtZml4dHVyZTAgFw0yNjExMjYxMjIxMDlaGA8yMTI2MTEw
MjEyMjEwOVowFTETMBEGA1UEAwwKZWMtZml4dHVyZTBZMBMGByqGSM49AgEGCCqG
SM49AwEHA0IABCmaIXPKFLvdHiYtG/C/f0t2Q7hBbREY7E9xY+49s2B79DFFUjU/
8d8hcbgr1WRIeKjdCBdG+rUIDuLF3DmTlbSjZjBkMB0GA1UdDgQWBBT3Kg40MjRd
u82vwlZkvAgv/Yi3vTAfBgNVHSMEGDAWgBT3Kg40MjRdu82vwlZkvAgv/Yi3vTAM
BgNVHRMBAf8EAjAAMBQGA1UdEQQNMAuCCWxvY2FsaG9zdDAKBggqhkjOPQQDAgNJ
ADBGAiEAvdRbq7U9Si2wENUSwn+mArJLb77uM3XijjYWo8OlA9gCIQDsxyuWp70M
LSrSOYUwy+KBt1FLqCzdcQLA59SFvqICLA==
-----END CERTIFICATE-----
";
