//! Reading WAL objects that a listing named, while writers move on.
//!
//! A [`WalListing`] is a snapshot. Between it and a read, `wal stream` may
//! complete the in-progress segment (it stores `<segment>`, then deletes
//! `<segment>.partial`), and retention may delete old segments. A read of a
//! listed object that finds it gone (`notfound.wal_segment`) is therefore not
//! an error by itself: the reader lists again (at most [`RELISTS`] times) and
//! reads what the fresh listing names. Every list-then-read of WAL segments in
//! this crate goes through [`read_listed_segment`] or [`wal_segment_size`].

use bytes::Bytes;
use hs_base::code;
use hs_repo::{Repository, WalListing};

use crate::error::Result;

/// How many times a read of a listed WAL object that has gone re-lists
/// before the `notfound` error is returned.
pub(crate) const RELISTS: usize = 3;

/// How a segment was stored when it was read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stored {
    /// The completed segment `<segment>`.
    Complete,
    /// The in-progress `<segment>.partial`.
    Partial,
}

/// Reads the WAL object `pick` names in `listing` (`None`: nothing to
/// read). When that object has gone, `listing` is replaced by a fresh
/// listing and `pick` asked again, at most [`RELISTS`] times. Returns the
/// name read and its content; on return `listing` agrees with it.
async fn read_listed(
    repo: &Repository,
    deployment: &str,
    listing: &mut WalListing,
    pick: impl Fn(&WalListing) -> Option<String>,
) -> Result<Option<(String, Bytes)>> {
    let mut relists = 0;
    loop {
        let Some(name) = pick(listing) else {
            return Ok(None);
        };
        match repo.get_wal(deployment, &name).await {
            Ok(data) => return Ok(Some((name, data))),
            Err(e) if e.code() == code::NOTFOUND_WAL_SEGMENT && relists < RELISTS => {
                relists += 1;
                tracing::debug!(
                    "{name} was listed but is gone (a writer moved on); listing the WAL again"
                );
                *listing = repo.list_wal(deployment).await?;
            }
            Err(e) => return Err(e),
        }
    }
}

/// Reads WAL segment `segment` (24 hex digits) of `deployment` as `listing`
/// names it: the completed segment when it is listed, else
/// `<segment>.partial`; once the streamer has moved on, the completed
/// segment (see [`read_listed`]). `None` when the (fresh) listing holds the
/// segment neither way.
pub(crate) async fn read_listed_segment(
    repo: &Repository,
    deployment: &str,
    listing: &mut WalListing,
    segment: &str,
) -> Result<Option<(Stored, Bytes)>> {
    let read = read_listed(repo, deployment, listing, |l| {
        if l.segments.iter().any(|s| s.name == segment) {
            Some(segment.to_owned())
        } else if l.partials.iter().any(|s| s.name == segment) {
            Some(format!("{segment}.partial"))
        } else {
            None
        }
    })
    .await?;
    Ok(read.map(|(name, data)| {
        let stored = if name.ends_with(".partial") {
            Stored::Partial
        } else {
            Stored::Complete
        };
        (stored, data)
    }))
}

/// The WAL segment size of `deployment`: the length of a completed segment
/// in `listing` (the first of timeline `tli` when there is one, else the
/// first listed; another one when retention removed it meanwhile, see
/// [`read_listed`]). `None` when no completed segment is stored.
pub async fn wal_segment_size(
    repo: &Repository,
    deployment: &str,
    listing: &mut WalListing,
    tli: Option<u32>,
) -> Result<Option<u64>> {
    let read = read_listed(repo, deployment, listing, |l| {
        l.segments
            .iter()
            .find(|s| Some(s.timeline) == tli)
            .or_else(|| l.segments.first())
            .map(|s| s.name.clone())
    })
    .await?;
    Ok(read.map(|(_, data)| data.len() as u64))
}
