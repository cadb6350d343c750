//! `wal fetch` and `wal list` (the restore side of WAL archiving).

use anyhow::Result;
use serde_json::json;

use crate::cli::{GlobalArgs, WalFetchArgs, WalListArgs};
use crate::output::{human_bytes, Output};

pub async fn fetch(g: &GlobalArgs, a: WalFetchArgs) -> Result<Output> {
    // Resolved once: the prefetcher gets the same URL as --repo.
    let url = g
        .settings
        .repo_url(Some(&a.deployment), Some(&a.repo.repo))?;
    hs_backup::validate_deployment(&a.deployment)?;
    let repo = g.settings.open_url(&url).await?;
    let mut opts = hs_pitr::FetchOptions::for_dest(&a.dest);
    if a.prefetch_only {
        let size = a.segment_size.unwrap_or(hs_repo::DEFAULT_WAL_SEGMENT_SIZE);
        let done = hs_pitr::wal_prefetch(&repo, &a.deployment, &a.segment, size, &opts).await?;
        return Ok(Output::new(
            json!({"prefetched": done.fetched, "locked": done.locked}),
            String::new(),
        ));
    }
    opts.segment_size = a.segment_size;
    let out = hs_pitr::wal_fetch(&repo, &a.deployment, &a.segment, &a.dest, &opts).await?;
    if let (true, Some(size)) = (out.wants_prefetch(), out.segment_size) {
        // Fetch the next segments into the spool in the background, so the
        // server's next restore_command call finds them locally.
        let mut cmd = std::process::Command::new(std::env::current_exe()?);
        cmd.args(["wal", "fetch", &a.deployment, &a.segment])
            .arg(&a.dest)
            .args(["--repo", &url, "--prefetch-only", "--segment-size"])
            .arg(size.to_string());
        if let Some(k) = &g.keyring {
            cmd.arg("--keyring").arg(k);
        }
        // A failed prefetch only costs latency later; the fetch itself succeeded.
        if let Err(e) = hs_pitr::spawn_detached(cmd) {
            tracing::warn!(code = e.code(), "could not start the WAL prefetcher: {e}");
        }
    }
    let source = match out.source {
        hs_pitr::FetchSource::Spool => "spool",
        hs_pitr::FetchSource::Repository => "repository",
        hs_pitr::FetchSource::Partial => "partial",
    };
    Ok(Output::new(
        json!({"name": out.name, "bytes": out.bytes, "source": source}),
        String::new(),
    ))
}

pub async fn list(g: &GlobalArgs, a: WalListArgs) -> Result<Output> {
    let url = g
        .settings
        .repo_url(Some(&a.deployment), Some(&a.repo.repo))?;
    hs_backup::validate_deployment(&a.deployment)?;
    let repo = g.settings.open_url(&url).await?;
    let mut listing = repo.list_wal(&a.deployment).await?;
    if listing.segments.is_empty() && listing.partials.is_empty() && listing.histories.is_empty() {
        let read = hs_ops::NameUse::Read;
        hs_ops::check_deployment_name(&g.settings, &repo, &a.deployment, read).await?;
    }
    // The segment size is the size of any complete segment (re-listing when one has gone).
    let seg_size = hs_pitr::wal_segment_size(&repo, &a.deployment, &mut listing, None)
        .await?
        .unwrap_or(hs_repo::DEFAULT_WAL_SEGMENT_SIZE);
    let gaps = hs_pitr::wal_gaps(&listing, seg_size);

    // Contiguous runs per timeline.
    let mut ranges: Vec<(u32, String, String, u64, u64)> = Vec::new();
    let mut prev: Option<(u32, u64)> = None;
    for s in &listing.segments {
        let segno = s.segno(seg_size);
        match (ranges.last_mut(), prev) {
            (Some(r), Some((tli, p))) if tli == s.timeline && segno == p + 1 => {
                r.2 = s.name.clone();
                r.3 += 1;
                r.4 += s.stored_bytes;
            }
            _ => ranges.push((
                s.timeline,
                s.name.clone(),
                s.name.clone(),
                1,
                s.stored_bytes,
            )),
        }
        prev = Some((s.timeline, segno));
    }

    let partial_states = partial_states(&listing);
    let mut human = String::new();
    if !a.gaps_only {
        if ranges.is_empty() {
            human.push_str(&format!(
                "No WAL archived for deployment {}.\n",
                a.deployment
            ));
        }
        for (tli, first, last, n, bytes) in &ranges {
            human.push_str(&format!(
                "timeline {tli}: {first} .. {last}  {n} segments, {} stored\n",
                human_bytes(*bytes)
            ));
        }
        for (p, state) in listing.partials.iter().zip(&partial_states) {
            human.push_str(&format!("partial: {} ({})\n", p.name, state.human()));
        }
        for h in &listing.histories {
            human.push_str(&format!("history: {h:08X}.history\n"));
        }
    }
    if gaps.is_empty() {
        if a.gaps_only {
            human.push_str("No gaps.\n");
        }
    } else {
        for (from, to) in &gaps {
            human.push_str(&format!("GAP: {from} .. {to} missing\n"));
        }
    }
    let json_ranges: Vec<_> = ranges
        .iter()
        .map(|(tli, first, last, n, bytes)| {
            json!({"timeline": tli, "first": first, "last": last, "segments": n, "stored_bytes": bytes})
        })
        .collect();
    let json_gaps: Vec<_> = gaps
        .iter()
        .map(|(from, to)| json!({"from": from, "to": to}))
        .collect();
    let partials: Vec<_> = listing.partials.iter().map(|p| p.name.clone()).collect();
    let partial_json: Vec<_> = listing
        .partials
        .iter()
        .zip(&partial_states)
        .map(|(p, state)| state.json(p))
        .collect();
    let json = if a.gaps_only {
        json!({"deployment": a.deployment, "gaps": json_gaps})
    } else {
        json!({
            "deployment": a.deployment,
            "segment_size": seg_size,
            "ranges": json_ranges,
            "partials": partials,
            "partial_states": partial_json,
            "histories": listing.histories,
            "gaps": json_gaps,
        })
    };
    Ok(Output::new(json, human))
}

/// What a stored `.partial` is: the segment in progress on the newest timeline, or the
/// last, incomplete segment of a timeline that ended (a failover or promotion switched
/// to `next`; that segment continues on the next timeline under its number).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PartialState {
    InProgress,
    TimelineEnded { next: u32 },
}

impl PartialState {
    fn human(self) -> String {
        match self {
            PartialState::InProgress => "in progress".to_owned(),
            PartialState::TimelineEnded { next } => {
                format!("end of its timeline, WAL continues on timeline {next}")
            }
        }
    }

    fn json(self, p: &hs_repo::WalSegmentInfo) -> serde_json::Value {
        match self {
            PartialState::InProgress => {
                json!({"name": p.name, "timeline": p.timeline, "state": "in_progress"})
            }
            PartialState::TimelineEnded { next } => json!({
                "name": p.name,
                "timeline": p.timeline,
                "state": "timeline_ended",
                "next_timeline": next,
            }),
        }
    }
}

/// The state of each partial of `listing`, in its order: only a partial on the newest
/// timeline the repository knows (segments, partials, history files) is in progress.
fn partial_states(listing: &hs_repo::WalListing) -> Vec<PartialState> {
    let timelines: std::collections::BTreeSet<u32> = listing
        .segments
        .iter()
        .chain(&listing.partials)
        .map(|s| s.timeline)
        .chain(listing.histories.iter().copied())
        .collect();
    listing
        .partials
        .iter()
        .map(|p| match timelines.range(p.timeline + 1..).next() {
            Some(&next) => PartialState::TimelineEnded { next },
            None => PartialState::InProgress,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(name: &str) -> hs_repo::WalSegmentInfo {
        hs_repo::WalSegmentInfo {
            name: name.into(),
            timeline: u32::from_str_radix(&name[..8], 16).unwrap(),
            log: 0,
            seg: u32::from_str_radix(&name[16..], 16).unwrap(),
            stored_bytes: 1,
        }
    }

    #[test]
    fn only_the_newest_timelines_partial_is_in_progress() {
        // Two failovers: the partials of timelines 1 and 2 ended their timelines.
        let mut l = hs_repo::WalListing::default();
        l.segments.push(info("000000010000000000000003"));
        l.partials.push(info("000000010000000000000004"));
        l.partials.push(info("000000020000000000000004"));
        l.partials.push(info("000000030000000000000005"));
        l.histories = vec![2, 3];
        assert_eq!(
            partial_states(&l),
            vec![
                PartialState::TimelineEnded { next: 2 },
                PartialState::TimelineEnded { next: 3 },
                PartialState::InProgress,
            ]
        );
        // A history file alone (the new timeline has no WAL yet) ends the old one too.
        l.partials.truncate(1);
        l.histories = vec![2];
        assert_eq!(
            partial_states(&l),
            vec![PartialState::TimelineEnded { next: 2 }]
        );
        l.histories.clear();
        assert_eq!(partial_states(&l), vec![PartialState::InProgress]);
    }
}
