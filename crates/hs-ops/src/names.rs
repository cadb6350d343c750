//! Whether a deployment name given on the command line is one the repository or the
//! config knows, so that a typo (`backup mian`, `list mian`) is refused with
//! `notfound.deployment` and a "did you mean" instead of an empty answer or a new,
//! misnamed deployment. The rule is in docs/cli.md ("Deployment names").

use hs_base::code;
use hs_repo::Repository;

use crate::{Error, Result, Settings};

/// What the command does with the name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameUse {
    /// It reads what the repository holds (list, restore, status, wal list).
    Read,
    /// `backup`, which may start a new deployment; `new_deployment` is the
    /// `--new-deployment` flag (the name is meant to be new).
    Backup {
        /// The caller said the name is new.
        new_deployment: bool,
    },
}

/// Checks `name` against the repository and the config (see [`NameUse`]):
///
/// - A name the repository holds anything of (backup, catalog, WAL) or the config
///   defines is known.
/// - Otherwise, for reading: unknown when the repository or the config knows another
///   deployment (in a repository with no deployments at all, an empty answer is true).
/// - Otherwise, for `backup`: unknown only when the name is a near miss of a known
///   deployment (see [`near_miss`]) and `--new-deployment` was not given; a first backup
///   under any other new name goes ahead.
///
/// Unknown is `notfound.deployment` (exit 6), naming the closest known deployment.
/// Costs one small listing for a deployment with backups; the list of known names
/// (every object under `deployments/`) is read only when the name is not known.
pub async fn check_deployment_name(
    settings: &Settings,
    repo: &Repository,
    name: &str,
    usage: NameUse,
) -> Result<()> {
    if settings.deployment(name).is_some() || repo.has_deployment(name).await? {
        return Ok(());
    }
    let mut known = repo.deployment_names().await?;
    if let Some(c) = settings.config() {
        known.extend(c.deployments.keys().cloned());
    }
    known.sort();
    known.dedup();
    known.retain(|k| k != name);
    let closest = known
        .iter()
        .map(|k| (edit_distance(name, k), k))
        .min()
        .map(|(_, k)| k.clone());
    let refuse = match usage {
        NameUse::Read => !known.is_empty(),
        NameUse::Backup { new_deployment } => {
            !new_deployment && known.iter().any(|k| near_miss(name, k))
        }
    };
    if !refuse {
        return Ok(());
    }
    let mut message = format!("no such deployment {name} in repository {}", repo.url());
    if let Some(c) = closest.as_deref().filter(|c| near_miss(name, c)) {
        message.push_str(&format!("; did you mean {c}?"));
    }
    let mut suggestion = format!("known deployments: {}", known.join(", "));
    if matches!(usage, NameUse::Backup { .. }) {
        suggestion.push_str(&format!(
            "; to start a new deployment named {name}, pass --new-deployment or define it \
             in pg_hardstorage.yaml"
        ));
    }
    Err(Error::new(code::NOTFOUND_DEPLOYMENT, message).with_suggestion(suggestion))
}

/// Whether `a` looks like a typo of `b`: at most one edit (insert, delete, substitute
/// or swap two neighbours) for names up to 4 characters, at most two for longer ones.
pub fn near_miss(a: &str, b: &str) -> bool {
    let limit = if a.len().max(b.len()) <= 4 { 1 } else { 2 };
    edit_distance(a, b) <= limit
}

/// The optimal string alignment distance: insertions, deletions, substitutions and
/// swaps of two neighbouring characters each count one.
fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut v = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                v = v.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = v;
        }
    }
    d[a.len()][b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typos_are_near_misses_and_other_names_are_not() {
        assert_eq!(edit_distance("mian", "main"), 1);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert!(near_miss("mian", "main"));
        assert!(near_miss("mai", "main"));
        assert!(near_miss("maiin", "main"));
        assert!(near_miss("billing", "biling"));
        assert!(near_miss("orders_db", "ordersdb2"));
        assert!(!near_miss("reports", "main"));
        assert!(!near_miss("ab", "cd"));
        assert!(!near_miss("demo", "main"));
    }
}
