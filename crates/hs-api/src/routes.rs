//! The route table: every method and path the server answers, and path matching.

/// Which handler a route runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RouteId {
    Healthz,
    Readyz,
    Version,
    OpenApi,
    Metrics,
    Deployments,
    BackupsList,
    BackupsTrigger,
    BackupShow,
    BackupVerify,
    JobsList,
    JobShow,
    RestorePreview,
    WalStatus,
    Doctor,
}

/// One route of the API.
#[derive(Debug, Clone, Copy)]
pub struct Route {
    /// HTTP method.
    pub method: &'static str,
    /// Path template; `{name}` matches one path segment.
    pub path: &'static str,
    /// Whether the bearer token is required (when the server has one).
    pub auth: bool,
    pub(crate) id: RouteId,
}

const fn route(method: &'static str, path: &'static str, auth: bool, id: RouteId) -> Route {
    Route {
        method,
        path,
        auth,
        id,
    }
}

/// Every route the server answers. `crates/hs-api/openapi.json` lists exactly these.
pub const ROUTES: &[Route] = &[
    route("GET", "/v1/healthz", false, RouteId::Healthz),
    route("GET", "/v1/readyz", true, RouteId::Readyz),
    route("GET", "/v1/version", true, RouteId::Version),
    route("GET", "/v1/openapi.json", false, RouteId::OpenApi),
    route("GET", "/metrics", true, RouteId::Metrics),
    route("GET", "/v1/deployments", true, RouteId::Deployments),
    route(
        "GET",
        "/v1/deployments/{deployment}/backups",
        true,
        RouteId::BackupsList,
    ),
    route(
        "POST",
        "/v1/deployments/{deployment}/backups",
        true,
        RouteId::BackupsTrigger,
    ),
    route(
        "GET",
        "/v1/deployments/{deployment}/backups/{backup_id}",
        true,
        RouteId::BackupShow,
    ),
    route(
        "POST",
        "/v1/deployments/{deployment}/backups/{backup_id}/verify",
        true,
        RouteId::BackupVerify,
    ),
    route("GET", "/v1/jobs", true, RouteId::JobsList),
    route("GET", "/v1/jobs/{job_id}", true, RouteId::JobShow),
    route(
        "POST",
        "/v1/deployments/{deployment}/restores/preview",
        true,
        RouteId::RestorePreview,
    ),
    route(
        "GET",
        "/v1/deployments/{deployment}/wal",
        true,
        RouteId::WalStatus,
    ),
    route(
        "GET",
        "/v1/deployments/{deployment}/doctor",
        true,
        RouteId::Doctor,
    ),
];

/// Longest path accepted, in bytes.
const MAX_PATH: usize = 1024;

/// What a request path and method resolve to.
pub(crate) enum Matched {
    /// A route, with the values of its `{name}` segments in order.
    Route(&'static Route, Vec<String>),
    /// The path exists, but not for this method: these methods are allowed.
    WrongMethod(Vec<&'static str>),
    /// No route has this path.
    NotFound,
}

/// Matches `path` (without the query string) against [`ROUTES`].
pub(crate) fn match_route(method: &str, path: &str) -> Matched {
    if path.len() > MAX_PATH {
        return Matched::NotFound;
    }
    let segments: Vec<&str> = path.split('/').collect();
    let mut allowed = Vec::new();
    for r in ROUTES {
        let Some(params) = match_path(r.path, &segments) else {
            continue;
        };
        if r.method == method || (method == "HEAD" && r.method == "GET") {
            return Matched::Route(r, params);
        }
        allowed.push(r.method);
    }
    if allowed.is_empty() {
        Matched::NotFound
    } else {
        Matched::WrongMethod(allowed)
    }
}

fn match_path(template: &str, segments: &[&str]) -> Option<Vec<String>> {
    let parts: Vec<&str> = template.split('/').collect();
    if parts.len() != segments.len() {
        return None;
    }
    let mut params = Vec::new();
    for (t, s) in parts.iter().zip(segments) {
        if t.starts_with('{') && t.ends_with('}') {
            if s.is_empty() {
                return None;
            }
            params.push((*s).to_owned());
        } else if t != s {
            return None;
        }
    }
    Some(params)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_match_with_parameters() {
        match match_route("GET", "/v1/deployments/main/backups/20261126T010203Z") {
            Matched::Route(r, p) => {
                assert_eq!(r.id, RouteId::BackupShow);
                assert_eq!(p, vec!["main", "20261126T010203Z"]);
            }
            _ => panic!("no match"),
        }
        assert!(matches!(
            match_route("DELETE", "/v1/deployments/main/backups"),
            Matched::WrongMethod(m) if m == vec!["GET", "POST"]
        ));
        assert!(matches!(
            match_route("GET", "/v1/deployments//backups"),
            Matched::NotFound
        ));
        assert!(matches!(
            match_route("GET", "/v1/nothing"),
            Matched::NotFound
        ));
        assert!(matches!(
            match_route("HEAD", "/v1/healthz"),
            Matched::Route(r, _) if r.id == RouteId::Healthz
        ));
    }

    #[test]
    fn no_two_routes_share_method_and_path() {
        for (i, a) in ROUTES.iter().enumerate() {
            for b in &ROUTES[i + 1..] {
                assert!(
                    !(a.method == b.method && a.path == b.path),
                    "{} {}",
                    a.method,
                    a.path
                );
            }
        }
    }
}
