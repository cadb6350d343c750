//! TLS client configuration for each sslmode (rustls with the ring provider) and the
//! `tls-server-end-point` channel-binding hash.

use std::path::Path;
use std::sync::Arc;

use hs_base::{code, Code};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use sha2::{Digest, Sha256, Sha384, Sha512};

use crate::conninfo::SslMode;
use crate::error::{Error, ErrorKind, Result};

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn tls_error(code: Code, msg: impl Into<String>) -> Error {
    Error::of_kind(ErrorKind::Auth, code, msg)
}

/// The verifier of the sslmodes that do not check the host name: `require` / `prefer`
/// accept any certificate (`chain: None`), `verify-ca` checks the chain against the root
/// certificates. Handshake signatures are checked in every mode.
#[derive(Debug)]
struct Lenient {
    chain: Option<Arc<WebPkiServerVerifier>>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for Lenient {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(chain) = &self.chain else {
            return Ok(ServerCertVerified::assertion());
        };
        match chain.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now) {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

fn load_roots(path: &Path) -> Result<RootCertStore> {
    let suggestion = "point sslrootcert at a PEM file holding the CA certificate that signed the server's certificate";
    let iter = CertificateDer::pem_file_iter(path).map_err(|e| {
        tls_error(
            code::AUTH_TLS_ROOTCERT_UNREADABLE,
            format!("cannot read root certificate file {}: {e}", path.display()),
        )
        .with_suggestion(suggestion)
    })?;
    let mut roots = RootCertStore::empty();
    for cert in iter {
        let cert = cert.map_err(|e| {
            tls_error(
                code::AUTH_TLS_ROOTCERT_UNREADABLE,
                format!("invalid PEM in {}: {e}", path.display()),
            )
            .with_suggestion(suggestion)
        })?;
        roots.add(cert).map_err(|e| {
            tls_error(
                code::AUTH_TLS_ROOTCERT_UNREADABLE,
                format!("unusable certificate in {}: {e}", path.display()),
            )
        })?;
    }
    if roots.is_empty() {
        return Err(tls_error(
            code::AUTH_TLS_ROOTCERT_UNREADABLE,
            format!("no certificates found in {}", path.display()),
        )
        .with_suggestion(suggestion));
    }
    Ok(roots)
}

/// Default root certificate location, like libpq: `~/.postgresql/root.crt`.
fn default_rootcert() -> Option<std::path::PathBuf> {
    std::env::var_os("HOME").map(|h| Path::new(&h).join(".postgresql").join("root.crt"))
}

/// Builds the rustls client config for `mode`. `rootcert` is the configured
/// `sslrootcert`; with `require` and a root certificate, verification is verify-ca, as in
/// libpq.
pub(crate) fn client_config(mode: SslMode, rootcert: Option<&Path>) -> Result<Arc<ClientConfig>> {
    let provider = provider();
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| {
            tls_error(
                code::AUTH_TLS_SETUP_FAILED,
                format!("TLS setup failed: {e}"),
            )
        })?;
    let verify = match mode {
        SslMode::VerifyCa | SslMode::VerifyFull => true,
        SslMode::Require => rootcert.is_some(),
        _ => false,
    };
    let config = if verify {
        let path = match rootcert {
            Some(p) => p.to_path_buf(),
            None => default_rootcert()
                .filter(|p| p.exists())
                .ok_or_else(|| {
                    tls_error(
                        code::AUTH_TLS_ROOTCERT_MISSING,
                        format!(
                            "sslmode={} needs a root certificate, and none was given",
                            mode.as_str()
                        ),
                    )
                    .with_suggestion(
                        "set sslrootcert=/path/to/ca.pem (or PGSSLROOTCERT), or use sslmode=require to encrypt without verifying",
                    )
                })?,
        };
        let roots = Arc::new(load_roots(&path)?);
        let webpki = WebPkiServerVerifier::builder_with_provider(roots, provider.clone())
            .build()
            .map_err(|e| {
                tls_error(
                    code::AUTH_TLS_SETUP_FAILED,
                    format!("TLS setup failed: {e}"),
                )
            })?;
        if mode == SslMode::VerifyFull {
            builder.with_webpki_verifier(webpki).with_no_client_auth()
        } else {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(Lenient {
                    chain: Some(webpki),
                    algorithms: provider.signature_verification_algorithms,
                }))
                .with_no_client_auth()
        }
    } else {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(Lenient {
                chain: None,
                algorithms: provider.signature_verification_algorithms,
            }))
            .with_no_client_auth()
    };
    Ok(Arc::new(config))
}

/// Server name for SNI / verification: an IP address or a DNS name.
pub(crate) fn server_name(host: &str) -> Result<ServerName<'static>> {
    ServerName::try_from(host.to_string()).map_err(|_| {
        crate::error::usage(
            code::USAGE_CONNINFO_INVALID,
            format!("host {host:?} is not a valid DNS name or IP address for TLS"),
        )
    })
}

/// Reads one DER TLV at the front of `b`: (tag, contents, rest).
fn der_tlv(b: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let tag = *b.first()?;
    let first = *b.get(1)?;
    let (len, hdr) = if first < 0x80 {
        (first as usize, 2)
    } else {
        let n = (first & 0x7f) as usize;
        if n == 0 || n > 4 {
            return None;
        }
        let mut len = 0usize;
        for i in 0..n {
            len = (len << 8) | *b.get(2 + i)? as usize;
        }
        (len, 2 + n)
    };
    let end = hdr.checked_add(len)?;
    if b.len() < end {
        return None;
    }
    Some((tag, &b[hdr..end], &b[end..]))
}

/// The certificate's signatureAlgorithm OID (DER contents).
fn signature_oid(cert: &[u8]) -> Option<&[u8]> {
    let (tag, cert_body, _) = der_tlv(cert)?;
    if tag != 0x30 {
        return None;
    }
    let (_, _tbs, rest) = der_tlv(cert_body)?;
    let (tag, alg, _) = der_tlv(rest)?;
    if tag != 0x30 {
        return None;
    }
    let (tag, oid, _) = der_tlv(alg)?;
    (tag == 0x06).then_some(oid)
}

/// The `tls-server-end-point` channel binding data (RFC 5929) for a DER certificate:
/// its hash with the certificate's signature hash, where MD5 and SHA-1 become SHA-256.
/// `None` when the algorithm has no single hash (e.g. Ed25519, RSA-PSS).
pub(crate) fn server_end_point_hash(cert: &[u8]) -> Option<Vec<u8>> {
    const RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01];
    const ECDSA_SHA2: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03];
    const ECDSA_SHA1: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x01];
    enum H {
        S256,
        S384,
        S512,
    }
    let oid = signature_oid(cert)?;
    let h = if let Some(x) = oid.strip_prefix(RSA) {
        match x {
            [0x04] | [0x05] | [0x0b] | [0x0e] => H::S256, // md5, sha1, sha256, sha224
            [0x0c] => H::S384,
            [0x0d] => H::S512,
            _ => return None,
        }
    } else if let Some(x) = oid.strip_prefix(ECDSA_SHA2) {
        match x {
            [0x01] | [0x02] => H::S256,
            [0x03] => H::S384,
            [0x04] => H::S512,
            _ => return None,
        }
    } else if oid == ECDSA_SHA1 {
        H::S256
    } else {
        return None;
    };
    Some(match h {
        H::S256 => Sha256::digest(cert).to_vec(),
        H::S384 => Sha384::digest(cert).to_vec(),
        H::S512 => Sha512::digest(cert).to_vec(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_cert(oid: &[u8]) -> Vec<u8> {
        // SEQUENCE { SEQUENCE{} (tbs), SEQUENCE { OID }, BIT STRING {} }
        let mut alg = vec![0x06, oid.len() as u8];
        alg.extend_from_slice(oid);
        let mut body = vec![0x30, 0x00, 0x30, alg.len() as u8];
        body.extend_from_slice(&alg);
        body.extend_from_slice(&[0x03, 0x01, 0x00]);
        let mut c = vec![0x30, body.len() as u8];
        c.extend_from_slice(&body);
        c
    }

    #[test]
    fn end_point_hash_follows_signature_algorithm() {
        let sha256_rsa = fake_cert(&[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0b]);
        assert_eq!(server_end_point_hash(&sha256_rsa).unwrap().len(), 32);
        let sha1_rsa = fake_cert(&[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x05]);
        assert_eq!(server_end_point_hash(&sha1_rsa).unwrap().len(), 32);
        let sha384_ec = fake_cert(&[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x03]);
        assert_eq!(server_end_point_hash(&sha384_ec).unwrap().len(), 48);
        let sha512_rsa = fake_cert(&[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0d]);
        assert_eq!(server_end_point_hash(&sha512_rsa).unwrap().len(), 64);
        let ed25519 = fake_cert(&[0x2b, 0x65, 0x70]);
        assert_eq!(server_end_point_hash(&ed25519), None);
        assert_eq!(server_end_point_hash(&[0x30, 0x05, 0x00]), None);
    }

    #[test]
    fn configs_build() {
        for m in [SslMode::Require, SslMode::Prefer, SslMode::Allow] {
            assert!(client_config(m, None).is_ok());
        }
        let e =
            client_config(SslMode::VerifyFull, Some(Path::new("/nonexistent/ca.pem"))).unwrap_err();
        assert_eq!(e.code(), "auth.tls_rootcert_unreadable");
    }
}
