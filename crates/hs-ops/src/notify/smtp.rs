//! The e-mail sink: a small SMTP client (RFC 5321) over tokio, with STARTTLS
//! (RFC 3207) through rustls and AUTH PLAIN (RFC 4616) only on an encrypted session.
//! One message per event: EHLO, STARTTLS, EHLO again, AUTH, MAIL, RCPT per recipient,
//! DATA with dot-stuffing, QUIT.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use super::config::{SinkConfig, StartTls};
use super::Event;

/// The submission port, where STARTTLS is the rule.
pub const DEFAULT_SMTP_PORT: u16 = 587;

/// Longest reply line read, and most lines of one reply: a server that sends more is
/// not an SMTP server.
const MAX_LINE: usize = 4096;
const MAX_REPLY_LINES: usize = 100;

/// A server reply: its code and the text of each line.
#[derive(Debug)]
struct Reply {
    code: u16,
    lines: Vec<String>,
}

impl Reply {
    fn text(&self) -> String {
        self.lines.join(" / ")
    }
}

async fn read_reply<S: AsyncRead + Unpin>(r: &mut BufReader<S>) -> Result<Reply, String> {
    let mut lines = Vec::new();
    loop {
        let mut raw = Vec::new();
        let n = (&mut *r)
            .take(MAX_LINE as u64)
            .read_until(b'\n', &mut raw)
            .await
            .map_err(|e| format!("reading the server's reply failed: {e}"))?;
        if n == 0 {
            return Err("the server closed the connection".to_owned());
        }
        let line = String::from_utf8_lossy(&raw).trim_end().to_owned();
        let code = line
            .get(..3)
            .and_then(|c| c.parse::<u16>().ok())
            .ok_or_else(|| format!("not an SMTP reply: {:?}", truncate(&line)))?;
        let more = line.as_bytes().get(3) == Some(&b'-');
        lines.push(line.get(4..).unwrap_or("").to_owned());
        if !more {
            return Ok(Reply { code, lines });
        }
        if lines.len() >= MAX_REPLY_LINES {
            return Err("the server's reply is too long".to_owned());
        }
    }
}

fn truncate(s: &str) -> String {
    s.chars().take(120).collect()
}

/// Sends `line` (CRLF added) and reads the reply; `what` names the step in errors,
/// `ok` is the set of codes that mean success.
async fn command<S: AsyncRead + AsyncWrite + Unpin>(
    r: &mut BufReader<S>,
    line: &str,
    what: &str,
    ok: &[u16],
) -> Result<Reply, String> {
    let s = r.get_mut();
    s.write_all(format!("{line}\r\n").as_bytes())
        .await
        .map_err(|e| format!("sending {what} failed: {e}"))?;
    s.flush()
        .await
        .map_err(|e| format!("sending {what} failed: {e}"))?;
    let reply = read_reply(r).await?;
    if ok.contains(&reply.code) {
        return Ok(reply);
    }
    // A server that echoes the command must not echo the credentials into our log.
    let mut text = reply.text();
    if let Some(token) = line.strip_prefix("AUTH PLAIN ") {
        text = text.replace(token, "***");
    }
    Err(format!(
        "the server refused {what}: {} {}",
        reply.code,
        truncate(&text)
    ))
}

/// The EHLO keywords the server announced (upper case, each with its parameters).
fn extensions(reply: &Reply) -> Vec<String> {
    reply
        .lines
        .iter()
        .skip(1)
        .map(|l| l.to_ascii_uppercase())
        .collect()
}

fn has_auth_plain(ext: &[String]) -> bool {
    ext.iter().any(|e| {
        let mut w = e.split_whitespace();
        w.next() == Some("AUTH") && w.any(|m| m == "PLAIN")
    })
}

fn tls_config(ca_file: Option<&Path>) -> Result<Arc<rustls::ClientConfig>, String> {
    let mut roots = rustls::RootCertStore::empty();
    match ca_file {
        Some(path) => {
            let certs = CertificateDer::pem_file_iter(path)
                .map_err(|e| format!("cannot read ca_file {}: {e}", path.display()))?;
            for c in certs {
                let c = c.map_err(|e| format!("invalid PEM in ca_file {}: {e}", path.display()))?;
                roots.add(c).map_err(|e| {
                    format!("unusable certificate in ca_file {}: {e}", path.display())
                })?;
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            for c in found.certs {
                let _ = roots.add(c);
            }
        }
    }
    if roots.is_empty() {
        return Err(
            "no CA certificates to check the server's certificate with (set ca_file)".to_owned(),
        );
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup failed: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// Sends the event as one e-mail. The caller bounds the time it may take.
pub(super) async fn send_mail(
    sink: &SinkConfig,
    password: Option<&str>,
    event: &Event,
    base: Option<&Path>,
) -> Result<(), String> {
    let host = sink.host.clone().unwrap_or_default();
    let port = sink.port.unwrap_or(DEFAULT_SMTP_PORT);
    let at = format!("{host}:{port}");
    let fail = |e: String| format!("SMTP {at}: {e}");
    let tcp = TcpStream::connect((host.as_str(), port))
        .await
        .map_err(|e| fail(format!("cannot connect: {e}")))?;
    let mut r = BufReader::new(tcp);
    let greeting = read_reply(&mut r).await.map_err(fail)?;
    if greeting.code != 220 {
        return Err(fail(format!(
            "the server does not accept mail: {} {}",
            greeting.code,
            truncate(&greeting.text())
        )));
    }
    let me = super::host_name();
    let ehlo = format!("EHLO {me}");
    let reply = command(&mut r, &ehlo, "EHLO", &[250]).await.map_err(fail)?;
    let ext = extensions(&reply);
    if sink.starttls.unwrap_or_default() == StartTls::Off {
        return session(&mut r, sink, None, &ext, event).await.map_err(fail);
    }
    if !ext.iter().any(|e| e == "STARTTLS") {
        return Err(fail(
            "the server does not offer STARTTLS, and this sink has starttls: required; \
             nothing was sent (enable STARTTLS on the server, or set starttls: off for a \
             relay on this host)"
                .to_owned(),
        ));
    }
    command(&mut r, "STARTTLS", "STARTTLS", &[220])
        .await
        .map_err(fail)?;
    if !r.buffer().is_empty() {
        // Bytes sent before the handshake would be read as if they came over TLS.
        return Err(fail(
            "the server sent data before the TLS handshake".to_owned(),
        ));
    }
    let ca = sink.ca_file.as_ref().map(|p| match base {
        Some(b) if p.is_relative() => b.join(p),
        _ => p.clone(),
    });
    let config = tls_config(ca.as_deref()).map_err(fail)?;
    let name = ServerName::try_from(host.clone())
        .map_err(|_| fail(format!("{host:?} is not a valid name for TLS")))?;
    let tls = tokio_rustls::TlsConnector::from(config)
        .connect(name, r.into_inner())
        .await
        .map_err(|e| fail(format!("TLS handshake failed: {e}")))?;
    let mut r = BufReader::new(tls);
    let reply = command(&mut r, &ehlo, "EHLO after STARTTLS", &[250])
        .await
        .map_err(fail)?;
    let ext = extensions(&reply);
    session(&mut r, sink, password, &ext, event)
        .await
        .map_err(fail)
}

/// AUTH (when configured), MAIL, RCPT, DATA and QUIT on an established session.
async fn session<S: AsyncRead + AsyncWrite + Unpin>(
    r: &mut BufReader<S>,
    sink: &SinkConfig,
    password: Option<&str>,
    ext: &[String],
    event: &Event,
) -> Result<(), String> {
    if let (Some(user), Some(pass)) = (&sink.username, password) {
        if !has_auth_plain(ext) {
            return Err(
                "the server does not offer AUTH PLAIN, and a username is configured".to_owned(),
            );
        }
        let token = base64(format!("\0{user}\0{pass}").as_bytes());
        command(
            r,
            &format!("AUTH PLAIN {token}"),
            "AUTH PLAIN (user name or password)",
            &[235],
        )
        .await?;
    }
    let from = sink.from.clone().unwrap_or_default();
    command(r, &format!("MAIL FROM:<{from}>"), "MAIL FROM", &[250]).await?;
    for to in &sink.to {
        command(
            r,
            &format!("RCPT TO:<{to}>"),
            &format!("the recipient {to}"),
            &[250, 251],
        )
        .await?;
    }
    command(r, "DATA", "DATA", &[354]).await?;
    let message = message(&from, &sink.to, event);
    let s = r.get_mut();
    s.write_all(dot_stuff(&message).as_bytes())
        .await
        .map_err(|e| format!("sending the message failed: {e}"))?;
    command(r, ".", "the message", &[250]).await?;
    // The message is accepted; a failed QUIT changes nothing.
    let _ = command(r, "QUIT", "QUIT", &[221]).await;
    Ok(())
}

/// The message: headers, a blank line, the body (7bit when plain ASCII in short lines,
/// else base64), every line ending in CRLF.
pub(super) fn message(from: &str, to: &[String], event: &Event) -> String {
    let date = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc2822)
        .unwrap_or_default();
    let id: [u8; 16] = rand::random();
    let host = super::host_name();
    let body = event.text();
    let plain = body.is_ascii() && body.lines().all(|l| l.len() <= 900);
    let mut m = String::new();
    for (k, v) in [
        ("Date", date),
        ("From", from.to_owned()),
        ("To", to.join(", ")),
        ("Subject", encode_header(&event.title())),
        (
            "Message-ID",
            format!("<{}@{}>", hex::encode(id), header_safe(&host)),
        ),
        ("MIME-Version", "1.0".to_owned()),
        ("Content-Type", "text/plain; charset=utf-8".to_owned()),
        (
            "Content-Transfer-Encoding",
            if plain { "7bit" } else { "base64" }.to_owned(),
        ),
        ("Auto-Submitted", "auto-generated".to_owned()),
        ("X-Hardstorage-Event", event.name.to_owned()),
    ] {
        m.push_str(&format!("{k}: {v}\r\n"));
    }
    m.push_str("\r\n");
    if plain {
        for line in body.lines() {
            m.push_str(line);
            m.push_str("\r\n");
        }
    } else {
        let encoded = base64(body.as_bytes());
        for chunk in encoded.as_bytes().chunks(76) {
            m.push_str(&String::from_utf8_lossy(chunk));
            m.push_str("\r\n");
        }
    }
    m
}

/// A header value with line breaks and control characters replaced by spaces.
fn header_safe(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// A header value as it may be sent: ASCII as it is, else RFC 2047 encoded words of
/// at most 45 bytes of UTF-8 each, folded.
fn encode_header(s: &str) -> String {
    let s = header_safe(s);
    if s.is_ascii() {
        return s;
    }
    let mut words = Vec::new();
    let mut cur = String::new();
    for c in s.chars() {
        if cur.len() + c.len_utf8() > 45 {
            words.push(std::mem::take(&mut cur));
        }
        cur.push(c);
    }
    if !cur.is_empty() {
        words.push(cur);
    }
    words
        .iter()
        .map(|w| format!("=?utf-8?B?{}?=", base64(w.as_bytes())))
        .collect::<Vec<_>>()
        .join("\r\n ")
}

/// The DATA payload: every line starting with `.` gets another one (RFC 5321 4.5.2),
/// lines end in CRLF, and the terminating `.` line is not included.
pub(super) fn dot_stuff(message: &str) -> String {
    let mut out = String::with_capacity(message.len() + 16);
    for line in message.split("\r\n").flat_map(|l| l.split('\n')) {
        let line = line.trim_end_matches('\r');
        if line.starts_with('.') {
            out.push('.');
        }
        out.push_str(line);
        out.push_str("\r\n");
    }
    // `split` yields an empty last piece after a final CRLF: drop its extra CRLF.
    if message.ends_with('\n') {
        out.truncate(out.len() - 2);
    }
    out
}

/// Standard base64 with padding (RFC 4648).
fn base64(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for c in data.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= c.len() {
                out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc4648() {
        for (i, o) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(i.as_bytes()), o);
        }
    }

    #[test]
    fn dot_stuffing_doubles_leading_dots_only() {
        assert_eq!(
            dot_stuff("a\r\n.b\r\n..c\r\nd.\r\n"),
            "a\r\n..b\r\n...c\r\nd.\r\n"
        );
        assert_eq!(dot_stuff(".\n"), "..\r\n");
    }

    #[test]
    fn a_non_ascii_body_goes_as_base64_in_short_lines() {
        let e = Event::new(
            "backup.failed",
            Some("main"),
            "cannot read /srv/données: denied",
        );
        let m = message("a@b.c", &["d@e.f".to_owned()], &e);
        let (head, body) = m.split_once("\r\n\r\n").unwrap();
        assert!(head.contains("Content-Transfer-Encoding: base64"), "{head}");
        assert!(body.lines().all(|l| l.len() <= 76 && l.is_ascii()));
        let plain = Event::new("backup.failed", Some("main"), "refused");
        let m = message("a@b.c", &["d@e.f".to_owned()], &plain);
        assert!(m.contains("Content-Transfer-Encoding: 7bit\r\n"), "{m}");
        assert!(m.contains("\r\n\r\nrefused\r\n"), "{m}");
        assert!(m.split("\r\n").all(|l| !l.contains('\n')));
    }

    #[test]
    fn non_ascii_subjects_are_encoded_words() {
        let h = encode_header("backup of main failed on höst");
        assert!(h.starts_with("=?utf-8?B?"), "{h}");
        assert!(h.is_ascii());
        assert_eq!(encode_header("plain\r\nBcc: x"), "plain  Bcc: x");
    }
}
