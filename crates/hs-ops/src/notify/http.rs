//! The webhook sinks: a generic JSON webhook signed with HMAC-SHA256, and a
//! Slack-compatible incoming webhook. Messages name the endpoint by scheme, host and
//! port only: the path and query of such URLs are often the token.

use ring::hmac;

use super::{Event, SIGNATURE_HEADER};

/// `scheme://host[:port]` of `url`, for messages; `the webhook URL` when it does not parse.
pub(super) fn endpoint(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(u) => match (u.host_str(), u.port()) {
            (Some(h), Some(p)) => format!("{}://{h}:{p}", u.scheme()),
            (Some(h), None) => format!("{}://{h}", u.scheme()),
            _ => "the webhook URL".to_owned(),
        },
        Err(_) => "the webhook URL".to_owned(),
    }
}

/// `sha256=<hex>`: the HMAC-SHA256 of `body` under `secret`.
pub fn signature(secret: &str, body: &[u8]) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes());
    format!("sha256={}", hex::encode(hmac::sign(&key, body).as_ref()))
}

fn client() -> Result<reqwest::Client, String> {
    // The one TLS stack of the workspace: rustls with ring (as hs-repo's HTTP client).
    let _ = rustls::crypto::ring::default_provider().install_default();
    // No timeout here: the whole delivery is bounded by the sink's timeout in
    // Notifier::send, which then says so; a second, racing limit would only blur the
    // message.
    reqwest::Client::builder()
        // A redirect would send the body (and its signature) somewhere not configured.
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("pg_hardstorage/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| format!("cannot build the HTTP client: {}", chain(&e.without_url())))
}

/// An error and its causes, `: `-joined (reqwest's own text says little).
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let t = c.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        cur = c.source();
    }
    s
}

async fn post(url: &str, body: Vec<u8>, headers: &[(&str, String)]) -> Result<(), String> {
    let at = endpoint(url);
    let parsed = reqwest::Url::parse(url).map_err(|_| "the URL does not parse".to_owned())?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err("the URL is not http:// or https://".to_owned());
    }
    let mut req = client()?
        .post(parsed)
        .header("Content-Type", "application/json");
    for (k, v) in headers {
        req = req.header(*k, v);
    }
    let resp = req
        .body(body)
        .send()
        .await
        .map_err(|e| format!("POST to {at} failed: {}", chain(&e.without_url())))?;
    let status = resp.status();
    if status.is_success() {
        return Ok(());
    }
    let text = resp.text().await.unwrap_or_default();
    let text: String = text
        .chars()
        .take(200)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    Err(format!(
        "{at} answered HTTP {}{}",
        status.as_u16(),
        if text.trim().is_empty() {
            String::new()
        } else {
            format!(": {}", text.trim())
        }
    ))
}

/// POSTs the event's JSON ([`Event::to_json`]); with a secret, signed in
/// [`SIGNATURE_HEADER`].
pub(super) async fn post_webhook(
    url: &str,
    secret: Option<&str>,
    event: &Event,
) -> Result<(), String> {
    let body = event.to_json().to_string().into_bytes();
    let mut headers = vec![("X-Hardstorage-Event", event.name.to_owned())];
    if let Some(s) = secret {
        headers.push((SIGNATURE_HEADER, signature(s, &body)));
    }
    post(url, body, &headers).await
}

/// The Slack message: a marker, the title in bold, then the text.
pub(super) fn slack_text(event: &Event) -> String {
    let mark = match event.severity {
        super::Severity::Failure => ":red_circle:",
        super::Severity::Warning => ":warning:",
        super::Severity::Success => ":white_check_mark:",
    };
    // Slack's mrkdwn gives `&`, `<` and `>` a meaning: escape them.
    let esc = |s: &str| {
        s.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
    };
    format!(
        "{mark} *{}*\n{}",
        esc(&event.title()),
        esc(event.text().trim_end())
    )
}

/// POSTs `{"text": ...}` ([`slack_text`]).
pub(super) async fn post_slack(url: &str, event: &Event) -> Result<(), String> {
    let body = serde_json::json!({ "text": slack_text(event) })
        .to_string()
        .into_bytes();
    post(url, body, &[]).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_is_rfc4231_hmac_sha256() {
        // RFC 4231 test case 2.
        assert_eq!(
            signature("Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn endpoints_hide_paths_and_queries() {
        assert_eq!(
            endpoint("https://hooks.slack.com/services/T0/B0/SECRETTOKEN"),
            "https://hooks.slack.com"
        );
        assert_eq!(
            endpoint("http://127.0.0.1:8080/hook?token=abc"),
            "http://127.0.0.1:8080"
        );
        assert_eq!(endpoint("not a url"), "the webhook URL");
    }
}
