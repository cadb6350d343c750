//! `plan_restore` against a real repository with synthetic WAL: backup
//! choice, gaps, unreachable targets and targets before every backup.

use hs_pg::Lsn;
use hs_pitr::{plan_restore, BackupSelector, PitrTarget};
use hs_repo::BackupManifest;
use time::macros::datetime;

use crate::support::{segment, Env, D};

const MIB: u64 = 1 << 20;

fn name(segno: u64) -> String {
    hs_repo::wal_segment_name(1, segno, MIB)
}

fn manifest(id: &str, stop_lsn: &str, stop_time: &str) -> BackupManifest {
    crate::support::manifest(id, stop_lsn, stop_time, "plan test")
}

/// Backups A (ends in segment 1, 03:00) and B (segment 3, 03:10); WAL
/// segments 1-4 and 6-7 (5 is missing).
async fn setup() -> Env {
    let env = Env::new().await;
    env.repo
        .put_manifest(&manifest("A", "0/100100", "2026-11-26T03:00:00Z"))
        .await
        .unwrap();
    env.repo
        .put_manifest(&manifest("B", "0/300100", "2026-11-26T03:10:00Z"))
        .await
        .unwrap();
    for s in [1u64, 2, 3, 4, 6, 7] {
        env.repo
            .put_wal_segment(D, &name(s), &segment(s, MIB as usize))
            .await
            .unwrap();
    }
    env
}

async fn code(env: &Env, sel: &BackupSelector, t: PitrTarget) -> String {
    plan_restore(&env.repo, D, sel, &t)
        .await
        .unwrap_err()
        .code()
        .to_owned()
}

#[tokio::test]
async fn lsn_targets_choose_the_backup_and_check_wal() {
    let env = setup().await;
    let latest = BackupSelector::Latest;
    let p = plan_restore(&env.repo, D, &latest, &PitrTarget::Lsn(Lsn(0x48_0000)))
        .await
        .unwrap();
    assert_eq!(p.backup.backup_id, "B");
    assert_eq!(p.wal_segment_size, MIB);
    assert_eq!(p.wal_from.as_deref(), Some(name(3).as_str()));
    assert_eq!(p.wal_to.as_deref(), Some(name(4).as_str()));
    assert_eq!(p.wal_segments, 2);
    assert_eq!(p.resolved_lsn, Some(Lsn(0x48_0000)));

    // Before B's end: the older backup A serves it.
    let p = plan_restore(&env.repo, D, &latest, &PitrTarget::Lsn(Lsn(0x25_0000)))
        .await
        .unwrap();
    assert_eq!(p.backup.backup_id, "A");
    assert_eq!(p.wal_from.as_deref(), Some(name(1).as_str()));
    assert_eq!(p.wal_to.as_deref(), Some(name(2).as_str()));
    // ... but not when B is asked for explicitly.
    let b = BackupSelector::Id("B".into());
    assert_eq!(
        code(&env, &b, PitrTarget::Lsn(Lsn(0x25_0000))).await,
        "conflict.target_before_backup"
    );
    assert_eq!(
        code(&env, &latest, PitrTarget::Lsn(Lsn(0x5_0000))).await,
        "conflict.target_before_backup"
    );

    // In the missing segment 5, or past it.
    let e = plan_restore(&env.repo, D, &latest, &PitrTarget::Lsn(Lsn(0x58_0000)))
        .await
        .unwrap_err();
    assert_eq!(e.code(), "conflict.target_in_wal_gap");
    assert!(e.to_string().contains(&name(5)), "{e}");
    assert!(e.suggestion().is_some());
    assert_eq!(
        code(&env, &latest, PitrTarget::Lsn(Lsn(0x68_0000))).await,
        "conflict.target_in_wal_gap"
    );
    let e = plan_restore(&env.repo, D, &latest, &PitrTarget::Lsn(Lsn(0xFF0_0000)))
        .await
        .unwrap_err();
    assert_eq!(e.code(), "conflict.target_unreachable");
    assert!(e.to_string().contains(&name(7)), "{e}");

    // Latest: the gap after B is reported, not skipped silently.
    assert_eq!(
        code(&env, &latest, PitrTarget::Latest).await,
        "conflict.target_in_wal_gap"
    );
}

#[tokio::test]
async fn time_and_name_targets_scan_wal() {
    let env = setup().await;
    let latest = BackupSelector::Latest;
    assert_eq!(
        code(
            &env,
            &latest,
            PitrTarget::Time(datetime!(2026-11-26 02:00 UTC))
        )
        .await,
        "conflict.target_before_backup"
    );
    // The synthetic WAL has no commits: the scan runs into the gap.
    assert_eq!(
        code(
            &env,
            &latest,
            PitrTarget::Time(datetime!(2026-11-26 03:05 UTC))
        )
        .await,
        "conflict.target_in_wal_gap"
    );
    assert_eq!(
        code(&env, &latest, PitrTarget::Name("nope".into())).await,
        "conflict.target_in_wal_gap"
    );
    // Summaries of the scanned complete segments were stored, and are used.
    for s in [1u64, 2, 3, 4] {
        assert!(
            env.repo
                .get_wal_summary(D, &name(s))
                .await
                .unwrap()
                .is_some(),
            "segment {s}"
        );
    }
    assert_eq!(
        code(&env, &latest, PitrTarget::Name("nope".into())).await,
        "conflict.target_in_wal_gap"
    );
    // Summaries are not WAL segments.
    let listing = env.repo.list_wal(D).await.unwrap();
    assert_eq!(listing.segments.len(), 6);
    assert!(listing.partials.is_empty());

    // Without the gap, the end of the archive is "unreachable".
    env.repo
        .put_wal_segment(D, &name(5), &segment(5, MIB as usize))
        .await
        .unwrap();
    let e = plan_restore(
        &env.repo,
        D,
        &latest,
        &PitrTarget::Time(datetime!(2026-11-26 03:05 UTC)),
    )
    .await
    .unwrap_err();
    assert_eq!(e.code(), "conflict.target_unreachable", "{e}");
    assert!(e.to_string().contains(&name(7)), "{e}");
    let p = plan_restore(&env.repo, D, &latest, &PitrTarget::Latest)
        .await
        .unwrap();
    assert_eq!(p.backup.backup_id, "B");
    assert_eq!(p.wal_to.as_deref(), Some(name(7).as_str()));
}

#[tokio::test]
async fn no_backups_is_notfound() {
    let env = Env::new().await;
    assert_eq!(
        code(&env, &BackupSelector::Latest, PitrTarget::Latest).await,
        "notfound.backup"
    );
}
