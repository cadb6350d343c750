//! Redaction of credentials in repository URLs and free text.
//!
//! Repository URLs should not hold credentials (the object stores read them
//! from the environment, ssh from its own configuration), but an operator may
//! still write `s3://AKIA:secret@bucket/p`, `?secret_access_key=...`, a SAS
//! `?sig=...`, `?token=...`, `sftp://user:secret@host/x` or an `endpoint=`
//! that itself carries a password. Every message, log line and JSON document
//! that names a repository URL shows it through [`redact_url`]; text that may
//! embed such URLs (errors from libraries, log events) goes through
//! [`redact_text`] before it leaves the process.
//!
//! What is replaced by [`REDACTED`]:
//! - the password of a URL's userinfo (`user:***@host`); for the object-store
//!   schemes (`s3`, `gcs`, `azblob`), which take no userinfo at all, the whole
//!   userinfo (`***@bucket`), as an access key id there may be a token;
//! - the value of every query (or fragment) parameter whose name, without
//!   case, contains `secret`, `sig`, `token`, `password`, `passwd`, `pwd`,
//!   `key`, `credential`, `sas` or `auth` (but not `key=` and `credential_path=`
//!   naming a file by its absolute path, as `sftp://` and `gcs://` URLs do);
//! - inside every other parameter value that is itself a URL or holds a `@`
//!   (an `endpoint=` with userinfo), the same, recursively;
//! - in free text, also the value of a conninfo `password=` setting.

/// What a secret is replaced with.
pub const REDACTED: &str = "***";

/// Query parameter names (lower case) whose values are secrets when the
/// name contains one of these.
const SECRET_NAMES: &[&str] = &[
    "secret",
    "sig",
    "token",
    "password",
    "passwd",
    "pwd",
    "key",
    "credential",
    "sas",
    "auth",
];

/// Schemes whose URLs never carry a user name: any userinfo is a secret.
const NO_USER_SCHEMES: &[&str] = &["s3", "gcs", "azblob"];

fn percent_decode_lossy(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            if let Some(v) = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
            {
                out.push(v);
                i += 3;
                continue;
            }
        }
        if b[i] == b'+' {
            out.push(b' ');
        } else {
            out.push(b[i]);
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn is_secret_name(name: &str) -> bool {
    let n = percent_decode_lossy(name).to_ascii_lowercase();
    SECRET_NAMES.iter().any(|s| n.contains(s))
}

/// Our own path parameters (`sftp://...?key=FILE`, `gcs://...?credential_path=FILE`)
/// name a file, which is not a secret, when the value is an absolute path.
fn is_key_file(name: &str, value: &str) -> bool {
    matches!(name, "key" | "credential_path") && value.starts_with('/')
}

/// `a=b&c=d` (or `;`-separated) with secret values replaced.
fn redact_params(q: &str) -> String {
    let mut out = String::with_capacity(q.len());
    let mut rest = q;
    loop {
        let end = rest.find(['&', ';', '#']).unwrap_or(rest.len());
        let (kv, tail) = rest.split_at(end);
        match kv.split_once('=') {
            Some((k, v)) if is_secret_name(k) && !is_key_file(k, v) => {
                out.push_str(k);
                out.push('=');
                out.push_str(REDACTED);
            }
            Some((k, v)) => {
                out.push_str(k);
                out.push('=');
                let decoded = percent_decode_lossy(v);
                if decoded.contains("://") || decoded.contains('@') || decoded.contains('?') {
                    // A URL (an `endpoint=` with userinfo or its own query).
                    let red = redact_url(&decoded);
                    out.push_str(if red == decoded { v } else { &red });
                } else {
                    out.push_str(v);
                }
            }
            None => out.push_str(kv),
        }
        match tail.chars().next() {
            Some(sep) => {
                out.push(sep);
                rest = &tail[sep.len_utf8()..];
            }
            None => break,
        }
    }
    out
}

/// Where the parameters (query or fragment) of `rest` (a URL after its
/// `scheme://`) begin: the first `?` or `#` followed by something shaped
/// like `name=`, `name&` or `name;`, or the end. A `?` or `#` inside a
/// password (`user:pa?ss@host`) is not followed by that shape before its
/// `@`.
fn params_start(rest: &str) -> Option<usize> {
    rest.char_indices()
        .filter(|(_, c)| matches!(c, '?' | '#'))
        .map(|(i, _)| i)
        .find(|&i| {
            let after = &rest[i + 1..];
            let name_end = after
                .find(|c: char| {
                    !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '%' | '+' | '-'))
                })
                .unwrap_or(after.len());
            matches!(
                after[name_end..].chars().next(),
                None | Some('=' | '&' | ';')
            )
        })
}

/// `url` with its credentials replaced by [`REDACTED`] (see the module
/// documentation). Anything else, including text that is not a URL at all,
/// is kept as written, so the result still says which repository is meant.
pub fn redact_url(url: &str) -> String {
    let (scheme, rest) = match url.split_once("://") {
        Some((s, r)) => (Some(s), r),
        None => (None, url),
    };
    let (loc, params) = match params_start(rest) {
        Some(i) => (&rest[..i], Some(&rest[i..])),
        None => (rest, None),
    };
    let mut out = String::with_capacity(url.len());
    if let Some(s) = scheme {
        out.push_str(s);
        out.push_str("://");
    }
    // The userinfo ends at the last `@` before the parameters: a password
    // may hold `/`, `:` or `@`, a host none of them.
    match loc.rfind('@') {
        Some(at) => {
            let (userinfo, host) = (&loc[..at], &loc[at + 1..]);
            let no_user =
                scheme.is_some_and(|s| NO_USER_SCHEMES.contains(&s.to_ascii_lowercase().as_str()));
            match userinfo.split_once(':') {
                _ if no_user => out.push_str(REDACTED),
                Some((user, _)) => {
                    out.push_str(user);
                    out.push(':');
                    out.push_str(REDACTED);
                }
                None => out.push_str(userinfo),
            }
            out.push('@');
            out.push_str(host);
        }
        None => out.push_str(loc),
    }
    if let Some(p) = params {
        // The separator, then `a=b&c=d`.
        out.push_str(&p[..1]);
        out.push_str(&redact_params(&p[1..]));
    }
    out
}

fn is_scheme_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.')
}

/// Where a URL (or a conninfo value) embedded in text ends.
fn is_token_end(c: char) -> bool {
    c.is_whitespace() || matches!(c, '"' | '\'' | '`' | '<' | '>' | '\\')
}

/// `text` with every embedded `scheme://...` URL (and every
/// `user:password@host` word without a scheme) passed through
/// [`redact_url`], and the value of every conninfo `password=` replaced.
/// Meant as the last step before a message, log event or JSON document
/// leaves the process.
pub fn redact_text(text: &str) -> String {
    if !text.contains("://")
        && !text.contains('@')
        && !text.to_ascii_lowercase().contains("password")
    {
        return text.to_owned();
    }
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    let b = text.as_bytes();
    while i < text.len() {
        // A token shaped like `user:password@host/...` without a scheme (a
        // URL written without one, quoted back by an argument parser).
        if i == 0 || text[..i].ends_with(is_token_end) {
            let end = text[i..].find(is_token_end).map_or(text.len(), |e| i + e);
            let tok = &text[i..end];
            if is_schemeless_userinfo(tok) {
                out.push_str(&redact_url(tok));
                i = end;
                continue;
            }
        }
        if text[i..].starts_with("://") {
            // The scheme is the run of scheme characters before "://".
            let start = text[..i]
                .char_indices()
                .rev()
                .take_while(|(_, c)| is_scheme_char(*c))
                .last()
                .map_or(i, |(j, _)| j);
            let end = text[i..].find(is_token_end).map_or(text.len(), |e| i + e);
            out.truncate(out.len() - (i - start));
            out.push_str(&redact_url(&text[start..end]));
            i = end;
            continue;
        }
        if b[i].eq_ignore_ascii_case(&b'p') && starts_with_ignore_case(&text[i..], "password=") {
            // Also `PGPASSWORD=` and `db_password=`.
            out.push_str(&text[i..i + "password=".len()]);
            out.push_str(REDACTED);
            i = skip_conninfo_value(text, i + "password=".len());
            continue;
        }
        let c = text[i..].chars().next().unwrap_or(' ');
        out.push(c);
        i += c.len_utf8();
    }
    out
}

/// `user:password@host...` without `://` (and not a conninfo setting).
fn is_schemeless_userinfo(tok: &str) -> bool {
    let Some(at) = tok.rfind('@') else {
        return false;
    };
    !tok.contains("://") && !tok.contains('=') && at + 1 < tok.len() && tok[..at].contains(':')
}

fn starts_with_ignore_case(s: &str, prefix: &str) -> bool {
    s.len() >= prefix.len() && s.as_bytes()[..prefix.len()].eq_ignore_ascii_case(prefix.as_bytes())
}

/// The end of a conninfo value starting at `i`: a single-quoted string
/// (with `\'` escapes; an unterminated one ends with its line) or a run up
/// to whitespace, `"` or `&`.
fn skip_conninfo_value(text: &str, mut i: usize) -> usize {
    let b = text.as_bytes();
    if b.get(i) == Some(&b'\'') {
        i += 1;
        while i < b.len() {
            match b[i] {
                b'\\' => i += 2,
                b'\'' => return i + 1,
                // Unterminated: the value ends with the line, not the text.
                b'\n' => return i,
                _ => i += 1,
            }
        }
        return b.len().min(i);
    }
    while i < b.len() && !matches!(b[i], b' ' | b'\t' | b'\n' | b'\r' | b'"' | b'&') {
        i += 1;
    }
    i
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every form of issue 13 item 5: the secret goes, the rest stays.
    #[test]
    fn redacts_every_credential_form() {
        let cases = [
            ("s3://AKIA:hunter2@bucket/p", "s3://***@bucket/p"),
            ("S3://AKIA:hunter2@bucket/p", "S3://***@bucket/p"),
            ("s3://hunter2@bucket/p", "s3://***@bucket/p"),
            (
                "s3://bucket/p?region=eu-west-1&secret_access_key=hunter2",
                "s3://bucket/p?region=eu-west-1&secret_access_key=***",
            ),
            (
                "s3://bucket/p?access_key_id=AKIA&Secret_Access_Key=hunter2",
                "s3://bucket/p?access_key_id=***&Secret_Access_Key=***",
            ),
            (
                "azblob://acct.blob.core.windows.net/c/p?sv=2022-11-02&sig=hunter2%2Bx%3D",
                "azblob://acct.blob.core.windows.net/c/p?sv=2022-11-02&sig=***",
            ),
            ("gcs://bucket/p?token=hunter2", "gcs://bucket/p?token=***"),
            (
                "gcs://bucket/p?access_token=hunter2#x",
                "gcs://bucket/p?access_token=***#x",
            ),
            ("file://user:hunter2@host/x", "file://user:***@host/x"),
            ("sftp://user:hunter2@host/x", "sftp://user:***@host/x"),
            (
                "scp://user:hunter2@host:2222/x?key=/k",
                "scp://user:***@host:2222/x?key=/k",
            ),
            ("sftp://user@host/x", "sftp://user@host/x"),
            ("scp://host/x?key=hunter2", "scp://host/x?key=***"),
            (
                "gcs://b/p?credential_path=hunter2",
                "gcs://b/p?credential_path=***",
            ),
            (
                "s3://bucket/p?endpoint=http://minio:hunter2@localhost:9000&region=x",
                "s3://bucket/p?endpoint=http://minio:***@localhost:9000&region=x",
            ),
            (
                "s3://bucket/p?endpoint=http%3A%2F%2Fminio%3Ahunter2%40localhost%3A9000",
                "s3://bucket/p?endpoint=http://minio:***@localhost:9000",
            ),
            ("AKIA:hunter2@bucket/p", "AKIA:***@bucket/p"),
            ("s3://AKIA:se/cr+e:t=@bucket/p", "s3://***@bucket/p"),
            (
                "sftp://u:pa?ss#w@hunter2@h/x?key=/k",
                "sftp://u:***@h/x?key=/k",
            ),
            ("s3://bucket/p#sig=hunter2", "s3://bucket/p#sig=***"),
            (
                "s3://bucket/p?X-Amz-Signature=hunter2",
                "s3://bucket/p?X-Amz-Signature=***",
            ),
            (
                "s3://bucket/p?x=1;password=hunter2",
                "s3://bucket/p?x=1;password=***",
            ),
        ];
        for (url, want) in cases {
            let got = redact_url(url);
            assert_eq!(got, want, "{url}");
            assert!(!got.contains("hunter2"), "{url} -> {got}");
        }
        // Without credentials a URL is kept as written.
        for url in [
            "file:///var/lib/pg_hardstorage/repo",
            "s3://bucket/p?region=eu-west-1&endpoint=http://localhost:9000&addressing=path",
            "azblob://acct.blob.core.windows.net/c/p",
            "sftp://backup@db1:22/srv/repo?key=/etc/id&known_hosts=/etc/kh&connect_timeout=5",
            "gcs://b/p?credential_path=/etc/gcs.json",
            "file:///srv/a@b/repo",
            "not a url",
            "",
        ] {
            assert_eq!(redact_url(url), url);
        }
    }

    #[test]
    fn redacts_urls_and_passwords_in_text() {
        let text = r#"repository URL "s3://AKIA:secret@bucket/p?sig=secret2": unknown parameter; cannot reach the store at sftp://u:secret3@h/x: refused"#;
        let got = redact_text(text);
        assert_eq!(
            got,
            r#"repository URL "s3://***@bucket/p?sig=***": unknown parameter; cannot reach the store at sftp://u:***@h/x: refused"#
        );
        let json = r#"{"message":"no repository at file://user:secret@host/x","url":"gcs://b/p?token=secret"}"#;
        let got = redact_text(json);
        assert!(!got.contains("secret"), "{got}");
        assert!(got.contains(r#""url":"gcs://b/p?token=***""#), "{got}");
        let conninfo = "could not connect with host=db user=x password=secret dbname=y; \
                        PASSWORD='sec ret\\' x' port=5; postgres://u:secret@h/db";
        let got = redact_text(conninfo);
        assert!(!got.contains("secret") && !got.contains("sec ret"), "{got}");
        assert!(got.contains("password=*** dbname=y"), "{got}");
        assert!(got.contains("PASSWORD=*** port=5"), "{got}");
        assert!(got.contains("postgres://u:***@h/db"), "{got}");
        // Text without secrets is unchanged, including non-ASCII.
        for t in [
            "plain é text",
            "a password_file=x",
            "ok: file:///x/y done",
            "://",
        ] {
            assert_eq!(redact_text(t), t);
        }
    }

    proptest::proptest! {
        #[test]
        fn redaction_never_panics_and_removes_marked_passwords(
            user in "[a-z]{1,8}", host in "[a-z]{1,8}", pw in "[A-Za-z0-9]{12}", noise in ".{0,40}",
        ) {
            let url = format!("sftp://{user}:SECRET{pw}@{host}/x?token=SECRET{pw}");
            let r = redact_url(&url);
            proptest::prop_assert!(!r.contains(&format!("SECRET{pw}")), "{}", r);
            let t = redact_text(&format!("{noise} {url} {noise}"));
            proptest::prop_assert!(!t.contains(&format!("SECRET{pw}")), "{}", t);
            let _ = redact_url(&noise);
            let _ = redact_text(&noise);
        }
    }
}
