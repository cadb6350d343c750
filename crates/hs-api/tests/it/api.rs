//! The HTTP surface without PostgreSQL: authentication, the loopback rule, errors in the
//! envelope, health, version, deployments, an empty repository, metrics and the OpenAPI
//! document against the route table.

use std::collections::BTreeSet;

use hs_api::{ApiServer, Deployment, ROUTES};
use serde_json::Value;

use crate::support::{config, repo_env, request, start, R, TOKEN};

#[tokio::test]
async fn auth_is_required_when_a_token_is_set() -> R {
    let env = repo_env().await?;
    let srv = start(config(&env, vec![Deployment::new("main", &env.url)], true)).await?;

    let r = request(srv.addr, "GET", "/v1/deployments", None, None).await?;
    assert_eq!(r.status, 401, "{}", r.text());
    assert_eq!(r.header("www-authenticate"), Some("Bearer"));
    let j = r.json();
    assert_eq!(j["schema"], "pg_hardstorage.v1");
    assert_eq!(j["ok"], false);
    assert_eq!(j["error"]["code"], "auth.api_token_missing");

    let r = request(
        srv.addr,
        "GET",
        "/v1/deployments",
        Some("wrong-token-0123456789"),
        None,
    )
    .await?;
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["error"]["code"], "auth.api_token_invalid");
    assert!(!r.text().contains(TOKEN), "the token leaked into an answer");

    // A token one character short of the real one is still wrong.
    let r = request(
        srv.addr,
        "GET",
        "/metrics",
        Some(&TOKEN[..TOKEN.len() - 1]),
        None,
    )
    .await?;
    assert_eq!(r.status, 401);

    let r = request(srv.addr, "GET", "/v1/deployments", Some(TOKEN), None).await?;
    assert_eq!(r.status, 200, "{}", r.text());
    let j = r.json();
    assert_eq!(j["ok"], true);
    assert_eq!(j["result"]["deployments"][0]["name"], "main");
    assert_eq!(
        j["result"]["deployments"][0]["pg_connection_configured"],
        false
    );

    // Liveness and the API description need no token.
    let r = request(srv.addr, "GET", "/v1/healthz", None, None).await?;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["result"]["status"], "ok");
    let r = request(srv.addr, "GET", "/v1/openapi.json", None, None).await?;
    assert_eq!(r.status, 200);
    Ok(())
}

#[tokio::test]
async fn without_a_token_only_loopback_is_allowed() -> R {
    let env = repo_env().await?;
    let e = match ApiServer::bind("0.0.0.0:0".parse()?, config(&env, vec![], false)).await {
        Ok(_) => panic!("bound a public address without a token"),
        Err(e) => e,
    };
    assert_eq!(e.code(), "usage.api_token_required");
    assert!(e
        .suggestion()
        .is_some_and(|s| s.contains("PG_HARDSTORAGE_API_TOKEN")));
    // With a token the same address is fine.
    let s = ApiServer::bind("0.0.0.0:0".parse()?, config(&env, vec![], true)).await?;
    assert_ne!(s.local_addr().port(), 0);
    // Loopback without a token works, and every route is open.
    let srv = start(config(&env, vec![], false)).await?;
    let r = request(srv.addr, "GET", "/v1/version", None, None).await?;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["result"]["version"], "9.9.9-test");
    Ok(())
}

#[tokio::test]
async fn errors_use_the_envelope_and_the_right_status() -> R {
    let env = repo_env().await?;
    let srv = start(config(&env, vec![Deployment::new("main", &env.url)], true)).await?;
    let t = Some(TOKEN);

    let r = request(srv.addr, "GET", "/v1/nothing/here", t, None).await?;
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["error"]["code"], "notfound.route");

    let r = request(srv.addr, "DELETE", "/v1/deployments/main/backups", t, None).await?;
    assert_eq!(r.status, 405);
    assert_eq!(r.json()["error"]["code"], "usage.method_not_allowed");
    assert_eq!(r.header("allow"), Some("GET, POST"));

    let r = request(srv.addr, "GET", "/v1/deployments/other/backups", t, None).await?;
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["error"]["code"], "notfound.deployment");

    // No backups yet: an empty list, and `latest` does not exist.
    let r = request(srv.addr, "GET", "/v1/deployments/main/backups", t, None).await?;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["result"]["backups"], Value::Array(vec![]));
    let r = request(
        srv.addr,
        "GET",
        "/v1/deployments/main/backups/latest",
        t,
        None,
    )
    .await?;
    assert_eq!(r.status, 404, "{}", r.text());
    assert_eq!(r.json()["error"]["code"], "notfound.backup");

    // Bad bodies and bad targets are 400 with a code, never a panic.
    let path = "/v1/deployments/main/restores/preview";
    let r = request(srv.addr, "POST", path, t, Some("{not json")).await?;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"]["code"], "usage.request_invalid");
    let r = request(
        srv.addr,
        "POST",
        path,
        t,
        Some(r#"{"to":"x","to_lsn":"0/1"}"#),
    )
    .await?;
    assert_eq!(r.status, 400);
    let r = request(srv.addr, "POST", path, t, Some(r#"{"unknown":1}"#)).await?;
    assert_eq!(r.status, 400);
    let r = request(srv.addr, "POST", path, t, Some(r#"{"to_lsn":"nonsense"}"#)).await?;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"]["code"], "usage.lsn_invalid");
    let big = format!(r#"{{"to_name":"{}"}}"#, "x".repeat(100_000));
    let r = request(srv.addr, "POST", path, t, Some(&big)).await?;
    assert_eq!(r.status, 413, "{}", r.text());
    assert_eq!(r.json()["error"]["code"], "usage.request_too_large");

    // A backup trigger without a pg_connection says so.
    let r = request(srv.addr, "POST", "/v1/deployments/main/backups", t, None).await?;
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(r.json()["error"]["code"], "usage.pg_connection_missing");

    let r = request(srv.addr, "GET", "/v1/jobs/job_0000", t, None).await?;
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["error"]["code"], "notfound.job");

    // An empty WAL archive.
    let r = request(srv.addr, "GET", "/v1/deployments/main/wal", t, None).await?;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["result"]["segments"], 0);
    Ok(())
}

#[tokio::test]
async fn readiness_follows_the_repository() -> R {
    let env = repo_env().await?;
    let missing = format!("file://{}/no-repo-here", env.dir.path().display());
    let srv = start(config(
        &env,
        vec![
            Deployment::new("main", &env.url),
            Deployment::new("gone", &missing),
        ],
        true,
    ))
    .await?;
    let r = request(srv.addr, "GET", "/v1/readyz", Some(TOKEN), None).await?;
    assert_eq!(r.status, 503, "{}", r.text());
    let j = r.json();
    assert_eq!(j["ok"], false);
    assert_eq!(j["error"]["code"], "unreachable.repository");
    assert_eq!(j["result"]["ready"], false);
    let repos = j["result"]["repositories"]
        .as_array()
        .ok_or("repositories")?;
    assert_eq!(repos.len(), 2);
    assert!(repos
        .iter()
        .any(|r| r["ok"] == true && r["url"] == env.url.as_str()));

    let srv = start(config(&env, vec![Deployment::new("main", &env.url)], true)).await?;
    let r = request(srv.addr, "GET", "/v1/readyz", Some(TOKEN), None).await?;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["result"]["ready"], true);
    Ok(())
}

#[tokio::test]
async fn doctor_reports_issues_as_findings() -> R {
    // A real repository, but no PostgreSQL connection configured and no backup yet:
    // the repository and keyring checks pass, the others are issues with a fix.
    let env = repo_env().await?;
    let srv = start(config(&env, vec![Deployment::new("main", &env.url)], true)).await?;
    let r = request(srv.addr, "GET", "/v1/deployments/main/doctor", None, None).await?;
    assert_eq!(r.status, 401, "{}", r.text());
    let r = request(
        srv.addr,
        "GET",
        "/v1/deployments/main/doctor",
        Some(TOKEN),
        None,
    )
    .await?;
    assert_eq!(r.status, 200, "{}", r.text());
    let j = r.json();
    assert_eq!(j["result"]["deployment"], "main");
    assert_eq!(j["result"]["healthy"], false, "{j}");
    let checks = j["result"]["checks"].as_array().ok_or("checks")?;
    let state = |name: &str| {
        checks
            .iter()
            .find(|c| c["name"] == name)
            .map(|c| c["state"].as_str().unwrap_or("").to_owned())
    };
    assert_eq!(state("repo_writable").as_deref(), Some("ok"), "{j}");
    assert_eq!(state("keyring").as_deref(), Some("ok"), "{j}");
    // Every check carries its measured numbers (none measured here: an empty object).
    assert!(checks.iter().all(|c| c["values"].is_object()), "{j}");
    assert!(
        checks
            .iter()
            .any(|c| c["state"] == "issue" && c["fix"].as_str().is_some_and(|f| !f.is_empty())),
        "{j}"
    );
    let r = request(
        srv.addr,
        "GET",
        "/v1/deployments/nope/doctor",
        Some(TOKEN),
        None,
    )
    .await?;
    assert_eq!(r.status, 404, "{}", r.text());
    Ok(())
}

#[tokio::test]
async fn metrics_count_requests_in_prometheus_text() -> R {
    let env = repo_env().await?;
    let srv = start(config(&env, vec![Deployment::new("main", &env.url)], true)).await?;
    for _ in 0..3 {
        request(srv.addr, "GET", "/v1/healthz", None, None).await?;
    }
    request(srv.addr, "GET", "/v1/version", None, None).await?;
    let r = request(srv.addr, "GET", "/metrics", Some(TOKEN), None).await?;
    assert_eq!(r.status, 200);
    assert!(r
        .header("content-type")
        .is_some_and(|c| c.starts_with("text/plain; version=0.0.4")));
    let text = r.text();
    assert!(
        text.contains(
            r#"pg_hardstorage_api_requests_total{method="GET",route="/v1/healthz",status="200"} 3"#
        ),
        "{text}"
    );
    assert!(
        text.contains(
            r#"pg_hardstorage_api_requests_total{method="GET",route="/v1/version",status="401"} 1"#
        ),
        "{text}"
    );
    assert!(text.contains("pg_hardstorage_api_deployments 1"), "{text}");
    assert!(text.contains(r#"pg_hardstorage_build_info{version="9.9.9-test"} 1"#));
    // Every sample line is `name{labels} value` or `name value`.
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let value = line.rsplit(' ').next().ok_or("no value")?;
        value.parse::<f64>().map_err(|e| format!("{line:?}: {e}"))?;
    }
    Ok(())
}

/// The `(METHOD, path)` pairs an OpenAPI document lists.
fn openapi_routes(doc: &Value) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, _) in item.as_object().expect("path item") {
            out.insert((method.to_uppercase(), path.clone()));
        }
    }
    out
}

#[tokio::test]
async fn openapi_document_matches_the_router() -> R {
    let doc: Value = serde_json::from_str(hs_api::OPENAPI_JSON)?;
    assert_eq!(doc["openapi"], "3.1.0");
    let router: BTreeSet<(String, String)> = ROUTES
        .iter()
        .map(|r| (r.method.to_owned(), r.path.to_owned()))
        .collect();
    let documented = openapi_routes(&doc);
    let undocumented: Vec<_> = router.difference(&documented).collect();
    let phantom: Vec<_> = documented.difference(&router).collect();
    assert!(
        undocumented.is_empty(),
        "routes missing from crates/hs-api/openapi.json: {undocumented:?}"
    );
    assert!(
        phantom.is_empty(),
        "crates/hs-api/openapi.json lists routes the server lacks: {phantom:?}"
    );
    // Unauthenticated routes say so (`security: []`); the others inherit the bearer scheme.
    for r in ROUTES {
        let op = &doc["paths"][r.path][r.method.to_lowercase()];
        let open = op
            .get("security")
            .is_some_and(|s| s.as_array().is_some_and(Vec::is_empty));
        assert_eq!(
            open, !r.auth,
            "{} {}: security in the document vs the router",
            r.method, r.path
        );
        // Every `$ref` points at something that exists.
        check_refs(&doc, op);
    }

    // The server serves exactly this document.
    let env = repo_env().await?;
    let srv = start(config(&env, vec![], true)).await?;
    let r = request(srv.addr, "GET", "/v1/openapi.json", None, None).await?;
    assert_eq!(r.status, 200);
    assert_eq!(r.json(), doc);
    Ok(())
}

fn check_refs(doc: &Value, v: &Value) {
    match v {
        Value::Object(m) => {
            if let Some(Value::String(r)) = m.get("$ref") {
                let ptr = r.strip_prefix('#').expect("local $ref");
                let target = doc
                    .pointer(ptr)
                    .unwrap_or_else(|| panic!("dangling $ref {r}"));
                check_refs(doc, target);
            }
            m.values().for_each(|x| check_refs(doc, x));
        }
        Value::Array(a) => a.iter().for_each(|x| check_refs(doc, x)),
        _ => {}
    }
}
