//! appmon's TLS: each side's identity and trust on disk, the rustls
//! configurations built from them (TLS 1.3 only, a certificate required on
//! both sides), and the key generation behind `heartline appserver keygen`
//! and `heartline appmgr keygen`.
//!
//! Each side makes its own small certificate authority, signs its own
//! certificate with it and throws the authority's key away: the authority's
//! certificate (`appserver-ca.crt`, `appmgr-ca.crt`) is what the other side
//! trusts, and nothing else can ever be issued under it. Setup is one
//! keygen per side and one public file copied each way; no secret leaves
//! the machine it was made on. A trust file may hold several authorities
//! (a guest managed from several cluster nodes, a node managing several
//! guests): concatenate them.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};

/// Where keys and certificates live unless told otherwise.
pub const DEFAULT_DIR: &str = "/etc/heartline/appmon";

/// Which side of the protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The server on the guest.
    Appserver,
    /// The manager on a cluster node.
    Appmgr,
}

impl Role {
    /// The side's name, which prefixes its files.
    pub fn name(self) -> &'static str {
        match self {
            Role::Appserver => "appserver",
            Role::Appmgr => "appmgr",
        }
    }

    fn peer(self) -> Role {
        match self {
            Role::Appserver => Role::Appmgr,
            Role::Appmgr => Role::Appserver,
        }
    }
}

/// One side's files: its certificate and key, and the authorities it
/// trusts for the other side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// This side's certificate (PEM).
    pub cert: PathBuf,
    /// This side's private key (PEM).
    pub key: PathBuf,
    /// The other side's authorities (PEM, one or more).
    pub trust: PathBuf,
    role: Role,
}

impl TlsFiles {
    /// The files keygen writes into `dir` for `role`, trusting the file
    /// the other side's keygen writes.
    pub fn in_dir(dir: &Path, role: Role) -> TlsFiles {
        TlsFiles {
            cert: dir.join(format!("{}.crt", role.name())),
            key: dir.join(format!("{}.key", role.name())),
            trust: authority_file(dir, role.peer()),
            role,
        }
    }

    /// The same, trusting the authorities in `trust` instead.
    pub fn trusting(mut self, trust: PathBuf) -> TlsFiles {
        self.trust = trust;
        self
    }
}

/// The authority certificate `role`'s keygen writes into `dir`.
pub fn authority_file(dir: &Path, role: Role) -> PathBuf {
    dir.join(format!("{}-ca.crt", role.name()))
}

/// Why TLS could not be set up.
#[derive(Debug)]
pub enum TlsError {
    /// A file could not be read or holds nothing usable.
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong and what to do.
        problem: String,
    },
    /// rustls refused the certificates or key.
    Rustls(String),
    /// Key or certificate generation failed.
    Generate(rcgen::Error),
    /// keygen would overwrite a file.
    Exists(PathBuf),
    /// keygen could not write a file.
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        error: io::Error,
    },
}

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TlsError::File { path, problem } => write!(f, "{}: {problem}", path.display()),
            TlsError::Rustls(e) => write!(f, "TLS setup: {e}"),
            TlsError::Generate(e) => write!(f, "cannot generate a key or certificate: {e}"),
            TlsError::Exists(path) => write!(
                f,
                "{} exists; keygen does not overwrite keys (remove the old ones, or pass --force)",
                path.display()
            ),
            TlsError::Write { path, error } => {
                write!(f, "cannot write {}: {error}", path.display())
            }
        }
    }
}

impl std::error::Error for TlsError {}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn missing_hint(path: &Path, role: Role) -> String {
    let made_by = if path.file_name().is_some_and(|n| {
        n.to_string_lossy()
            .starts_with(&format!("{}-ca", role.peer().name()))
    }) {
        format!(
            "copy it from the {} side, where `heartline {} keygen` made it",
            role.peer().name(),
            role.peer().name()
        )
    } else {
        format!("run `heartline {} keygen` first", role.name())
    };
    format!("cannot read it ({made_by})")
}

fn certificates(path: &Path, role: Role) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let file_problem = |problem: String| TlsError::File {
        path: path.to_path_buf(),
        problem,
    };
    if !path.exists() {
        return Err(file_problem(missing_hint(path, role)));
    }
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| file_problem(format!("not a PEM certificate file: {e}")))?;
    if certs.is_empty() {
        return Err(file_problem("holds no certificate".into()));
    }
    Ok(certs)
}

fn private_key(path: &Path, role: Role) -> Result<PrivateKeyDer<'static>, TlsError> {
    if !path.exists() {
        return Err(TlsError::File {
            path: path.to_path_buf(),
            problem: missing_hint(path, role),
        });
    }
    PrivateKeyDer::from_pem_file(path).map_err(|e| TlsError::File {
        path: path.to_path_buf(),
        problem: format!("not a PEM private key: {e}"),
    })
}

fn trust_store(files: &TlsFiles) -> Result<Arc<RootCertStore>, TlsError> {
    let mut roots = RootCertStore::empty();
    let (added, _ignored) =
        roots.add_parsable_certificates(certificates(&files.trust, files.role)?);
    if added == 0 {
        return Err(TlsError::File {
            path: files.trust.clone(),
            problem: "holds no usable certificate authority".into(),
        });
    }
    Ok(Arc::new(roots))
}

fn rustls_error(e: impl fmt::Display) -> TlsError {
    TlsError::Rustls(e.to_string())
}

/// The appserver's TLS: its certificate, and a client certificate that
/// chains to one of the trusted authorities required of every manager.
pub fn server_config(files: &TlsFiles) -> Result<Arc<ServerConfig>, TlsError> {
    let verifier = WebPkiClientVerifier::builder_with_provider(trust_store(files)?, provider())
        .build()
        .map_err(rustls_error)?;
    let config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(rustls_error)?
        .with_client_cert_verifier(verifier)
        .with_single_cert(
            certificates(&files.cert, files.role)?,
            private_key(&files.key, files.role)?,
        )
        .map_err(rustls_error)?;
    Ok(Arc::new(config))
}

/// The manager's TLS: the appserver's certificate must chain to a trusted
/// authority and name the host connected to; this side shows its own.
pub fn client_config(files: &TlsFiles) -> Result<Arc<ClientConfig>, TlsError> {
    let config = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(rustls_error)?
        .with_root_certificates(trust_store(files)?)
        .with_client_auth_cert(
            certificates(&files.cert, files.role)?,
            private_key(&files.key, files.role)?,
        )
        .map_err(rustls_error)?;
    Ok(Arc::new(config))
}

/// What keygen wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Generated {
    /// The side's files (its trust file is not written by keygen).
    pub files: TlsFiles,
    /// The authority certificate to copy to the other side.
    pub authority: PathBuf,
}

/// Makes `role`'s authority and certificate in `dir`. `names` are the DNS
/// names and IP addresses the certificate is valid for (the appserver's
/// must include the name managers connect to).
pub fn generate(
    dir: &Path,
    role: Role,
    names: &[String],
    force: bool,
) -> Result<Generated, TlsError> {
    let files = TlsFiles::in_dir(dir, role);
    let authority = authority_file(dir, role);
    if !force {
        for path in [&files.cert, &files.key, &authority] {
            if path.exists() {
                return Err(TlsError::Exists(path.clone()));
            }
        }
    }
    let host = hostname();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(TlsError::Generate)?;
    ca_params.distinguished_name.push(
        DnType::CommonName,
        format!("heartline {} authority ({host})", role.name()),
    );
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_key = KeyPair::generate().map_err(TlsError::Generate)?;
    let ca_cert = ca_params.self_signed(&ca_key).map_err(TlsError::Generate)?;
    let issuer = Issuer::new(ca_params, ca_key);

    let mut params = CertificateParams::new(names.to_vec()).map_err(TlsError::Generate)?;
    params.distinguished_name.push(
        DnType::CommonName,
        format!("heartline {} on {host}", role.name()),
    );
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![match role {
        Role::Appserver => ExtendedKeyUsagePurpose::ServerAuth,
        Role::Appmgr => ExtendedKeyUsagePurpose::ClientAuth,
    }];
    let key = KeyPair::generate().map_err(TlsError::Generate)?;
    let cert = params
        .signed_by(&key, &issuer)
        .map_err(TlsError::Generate)?;

    std::fs::create_dir_all(dir).map_err(|error| TlsError::Write {
        path: dir.to_path_buf(),
        error,
    })?;
    write_file(&files.key, &key.serialize_pem(), true)?;
    write_file(&files.cert, &cert.pem(), false)?;
    write_file(&authority, &ca_cert.pem(), false)?;
    Ok(Generated { files, authority })
}

/// The names an appserver's certificate holds by default: this machine's
/// host name and the loopback names.
pub fn default_server_names() -> Vec<String> {
    let mut names = vec![hostname()];
    for name in ["localhost", "127.0.0.1", "::1"] {
        if !names.iter().any(|n| n == name) {
            names.push(name.to_string());
        }
    }
    names
}

fn hostname() -> String {
    #[cfg(unix)]
    if let Ok(name) = nix::unistd::gethostname() {
        let name = name.to_string_lossy().into_owned();
        if !name.is_empty() {
            return name;
        }
    }
    std::env::var("COMPUTERNAME").unwrap_or_else(|_| "localhost".into())
}

fn write_file(path: &Path, text: &str, secret: bool) -> Result<(), TlsError> {
    let written = (|| {
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(if secret { 0o600 } else { 0o644 });
        }
        #[cfg(not(unix))]
        let _ = secret;
        io::Write::write_all(&mut options.open(path)?, text.as_bytes())
    })();
    written.map_err(|error| TlsError::Write {
        path: path.to_path_buf(),
        error,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn keygen_on_both_sides_gives_configurations_that_load() {
        let dir = tempfile::tempdir().unwrap();
        let server = generate(dir.path(), Role::Appserver, &default_server_names(), false).unwrap();
        let manager = generate(dir.path(), Role::Appmgr, &[], false).unwrap();
        assert_eq!(server.files.trust, manager.authority);
        assert_eq!(manager.files.trust, server.authority);
        server_config(&server.files).unwrap();
        client_config(&manager.files).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&server.files.key)
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(
                mode & 0o777,
                0o600,
                "a private key is readable by its owner only"
            );
        }
    }

    #[test]
    fn keygen_refuses_to_overwrite_unless_forced() {
        let dir = tempfile::tempdir().unwrap();
        generate(dir.path(), Role::Appmgr, &[], false).unwrap();
        let again = generate(dir.path(), Role::Appmgr, &[], false).unwrap_err();
        assert!(matches!(again, TlsError::Exists(_)), "{again}");
        generate(dir.path(), Role::Appmgr, &[], true).unwrap();
    }

    #[test]
    fn missing_files_say_which_and_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        generate(dir.path(), Role::Appmgr, &[], false).unwrap();
        let files = TlsFiles::in_dir(dir.path(), Role::Appmgr);
        let error = client_config(&files).unwrap_err().to_string();
        assert!(error.contains("appserver-ca.crt"), "{error}");
        assert!(error.contains("copy it from the appserver side"), "{error}");
        // The managers' authority is there; the appserver's own files are not.
        let files = TlsFiles::in_dir(dir.path(), Role::Appserver);
        let error = server_config(&files).unwrap_err().to_string();
        assert!(error.contains("appserver.crt"), "{error}");
        assert!(error.contains("heartline appserver keygen"), "{error}");
    }

    #[test]
    fn a_file_that_is_not_pem_is_named() {
        let dir = tempfile::tempdir().unwrap();
        generate(dir.path(), Role::Appserver, &[], false).unwrap();
        let files = TlsFiles::in_dir(dir.path(), Role::Appserver);
        std::fs::write(&files.trust, "not a certificate\n").unwrap();
        let error = server_config(&files).unwrap_err().to_string();
        assert!(error.contains("appmgr-ca.crt"), "{error}");
        assert!(error.contains("no certificate"), "{error}");
    }
}
