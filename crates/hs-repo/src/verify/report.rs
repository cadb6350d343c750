//! The report verification returns: problems, warnings and the checks that ran.

use serde::Serialize;

use super::MAX_PROBLEMS;
use crate::error::Error;

/// One problem (or warning) found by verification.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct VerifyProblem {
    /// Dotted code, e.g. `verify.pack_corrupt`.
    pub code: &'static str,
    /// The repository object (or WAL segment) concerned.
    pub object: String,
    /// What is wrong, for humans (the first occurrence's message).
    pub message: String,
    /// How many times this code was reported for this object (for example
    /// the number of unreadable chunks in one pack).
    pub count: u64,
    /// The backups it touches, as `<deployment>/<backup id>`, sorted: for a damaged or
    /// missing pack, the backups that read a damaged chunk from it (`repo verify`); for
    /// a manifest or a chunk of one backup, that backup. Empty when none is known.
    pub backups: Vec<String>,
    /// Whether the object is a quarantined pack (`repo verify --quarantine`).
    pub quarantined: bool,
}

/// One line of the report: what was checked and how many problems it found.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct VerifyCheck {
    /// Short name of the check, e.g. `packs`.
    pub name: String,
    /// How many objects (chunks, segments, ...) it checked.
    pub checked: u64,
    /// How many problems it reported.
    pub failed: u64,
    /// A short description of what was checked.
    pub detail: String,
}

/// The result of [`Repository::verify_backup`] or [`Repository::verify_repo`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct VerifyReport {
    /// The checks that ran, in order.
    pub checks: Vec<VerifyCheck>,
    /// Problems: the data is damaged, missing or forged.
    pub problems: Vec<VerifyProblem>,
    /// Findings that are not damage (e.g. a pack no index names).
    pub warnings: Vec<VerifyProblem>,
    /// Problems beyond [`MAX_PROBLEMS`] that were counted but not kept.
    pub problems_omitted: u64,
    /// Bytes read from the repository.
    pub bytes_read: u64,
    #[serde(skip)]
    pub(super) events: u64,
}

impl VerifyReport {
    /// Whether no problem was found (warnings do not count).
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty() && self.problems_omitted == 0
    }

    /// The error to report for a report with problems: the first problem's
    /// code, a message naming its object, and the total count. `None` if
    /// the report is clean.
    pub fn to_error(&self) -> Option<Error> {
        let first = self.problems.first()?;
        let total = self.problems.len() as u64 + self.problems_omitted;
        let more = if total > 1 {
            format!(" (and {} more problem(s))", total - 1)
        } else {
            String::new()
        };
        Some(
            Error::new(
                first.code,
                format!("{}: {}{more}", first.object, first.message),
            )
            .with_suggestion(
                "do not rely on the damaged objects: restore another backup, keep a second copy \
                 of the repository, and investigate the storage",
            ),
        )
    }

    pub(super) fn push(list: &mut Vec<VerifyProblem>, p: VerifyProblem) -> bool {
        if let Some(q) = list
            .iter_mut()
            .find(|q| q.code == p.code && q.object == p.object)
        {
            q.count += p.count;
            for b in p.backups {
                if let Err(i) = q.backups.binary_search(&b) {
                    q.backups.insert(i, b);
                }
            }
            q.quarantined |= p.quarantined;
            return true;
        }
        if list.len() >= MAX_PROBLEMS {
            return false;
        }
        list.push(p);
        true
    }

    pub(super) fn entry(code: &'static str, object: &str, message: String) -> VerifyProblem {
        VerifyProblem {
            code,
            object: object.to_string(),
            message,
            count: 1,
            backups: Vec::new(),
            quarantined: false,
        }
    }

    pub(crate) fn problem(&mut self, code: &'static str, object: &str, message: impl Into<String>) {
        self.add_problem(Self::entry(code, object, message.into()));
    }

    pub(super) fn add_problem(&mut self, mut p: VerifyProblem) {
        self.events += 1;
        p.backups.sort();
        p.backups.dedup();
        if !Self::push(&mut self.problems, p) {
            self.problems_omitted += 1;
        }
    }

    pub(crate) fn warn(&mut self, code: &'static str, object: &str, message: impl Into<String>) {
        let _ = Self::push(
            &mut self.warnings,
            Self::entry(code, object, message.into()),
        );
    }

    /// Appends `other` (checks, problems, warnings, counts) after what is here.
    pub(super) fn absorb(&mut self, other: VerifyReport) {
        self.checks.extend(other.checks);
        for p in other.problems {
            if !Self::push(&mut self.problems, p) {
                self.problems_omitted += 1;
            }
        }
        for w in other.warnings {
            let _ = Self::push(&mut self.warnings, w);
        }
        self.problems_omitted += other.problems_omitted;
        self.bytes_read += other.bytes_read;
        self.events += other.events;
    }

    /// Records a check: `since` is the event count when it started.
    pub(super) fn check(
        &mut self,
        name: &str,
        checked: u64,
        since: u64,
        detail: impl Into<String>,
    ) {
        self.checks.push(VerifyCheck {
            name: name.to_string(),
            checked,
            failed: self.events - since,
            detail: detail.into(),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problems_merge_and_cap() {
        let mut r = VerifyReport::default();
        r.problem("verify.pack_corrupt", "data/aa/x", "first");
        r.problem("verify.pack_corrupt", "data/aa/x", "second");
        r.problem("verify.chunk_missing", "m", "third");
        assert_eq!(r.problems.len(), 2);
        assert_eq!(r.problems[0].count, 2);
        assert_eq!(r.problems[0].message, "first");
        let e = r.to_error().unwrap();
        assert_eq!(e.code(), "verify.pack_corrupt");
        assert!(e.to_string().contains("data/aa/x"));
        for i in 0..MAX_PROBLEMS + 5 {
            r.problem("verify.wal_missing", &format!("s{i}"), "x");
        }
        assert_eq!(r.problems.len(), MAX_PROBLEMS);
        assert!(r.problems_omitted > 0);
        assert!(!r.is_ok());
        assert!(VerifyReport::default().to_error().is_none());
    }
}
