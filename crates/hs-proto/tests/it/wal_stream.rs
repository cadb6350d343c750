//! WAL streaming against real PostgreSQL 15: slot commands, START_REPLICATION PHYSICAL with
//! status updates (driven from `tokio::select!` to exercise cancel-safety), comparison of
//! streamed bytes with the server's segment file, and timeline switches on a promoted copy.

use std::time::{Duration, Instant};

use hs_proto::{
    parse_timeline_history, parse_wal_segment_size, Lsn, ReplicationClient, SegmentName, SqlState,
    StreamMessage, TimelineId, DEFAULT_WAL_SEGMENT_SIZE,
};
use hs_testkit::{PgCluster, PgOptions};

use crate::support::{blocking, cfg, slot_restart_lsn, R};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slots_stream_status_updates() -> R {
    let pg = PgCluster::start(PgOptions::default())?;
    let mut client = ReplicationClient::connect(&cfg(&pg.replication_conninfo())).await?;
    let seg = parse_wal_segment_size(&client.show("wal_segment_size").await?)?;
    assert_eq!(seg, DEFAULT_WAL_SEGMENT_SIZE);
    let id = client.identify_system().await?;

    // Slot commands.
    assert_eq!(client.read_replication_slot("hs_absent").await?, None);
    let slot = client.create_physical_slot("hs_it", true).await?;
    assert_eq!(slot.name, "hs_it");
    let restart = slot.restart_lsn.expect("RESERVE_WAL reserves WAL");
    assert!(restart > Lsn(0));
    let e = client
        .create_physical_slot("hs_it", true)
        .await
        .unwrap_err();
    assert_eq!(e.code(), "conflict.slot_exists", "{e}");
    assert_eq!(e.sqlstate(), Some("42710"));
    let read = client
        .read_replication_slot("hs_it")
        .await?
        .expect("slot exists");
    assert_eq!(read.slot_type, "physical");
    assert_eq!(read.restart_lsn, Some(restart));
    assert_eq!(read.restart_tli, Some(id.timeline));
    assert_eq!(slot_restart_lsn(&pg, "hs_it")?, Some(restart));
    let e = client.drop_slot("hs_absent", false).await.unwrap_err();
    assert_eq!(e.code(), "notfound.slot", "{e}");
    let e = client
        .create_physical_slot("Bad-Name", true)
        .await
        .unwrap_err();
    assert_eq!(e.code(), "usage.slot_name_invalid");

    // Stream from the start of the slot's segment, as pg_receivewal does.
    let first = SegmentName::from_lsn(id.timeline, restart, seg)?;
    let start = first.start_lsn(seg);
    let seg_end = first.end_lsn();
    let mut stream = client
        .start_physical(Some("hs_it"), start, id.timeline)
        .await?;
    assert_eq!(stream.timeline(), id.timeline);

    // Generate WAL: a few MB of inserts, then a segment switch (done before reading: the
    // server does not wait for us).
    blocking(|| -> std::io::Result<()> {
        pg.psql("CREATE TABLE t (i int, pad text)")?;
        pg.psql("INSERT INTO t SELECT g, repeat('x', 200) FROM generate_series(1, 20000) g")?;
        pg.psql("SELECT pg_switch_wal()")?;
        pg.psql("INSERT INTO t SELECT g, 'after the switch' FROM generate_series(1, 100) g")?;
        Ok(())
    })?;

    // Receive until the first segment is complete, with a fast status timer in a select!
    // so that many pending next() futures are dropped: any lost or duplicated byte would
    // break the contiguity check.
    let mut segment: Vec<u8> = Vec::with_capacity(seg as usize);
    let mut pos = start;
    let mut tick = tokio::time::interval(Duration::from_millis(5));
    let (mut xlog_msgs, mut keepalives, mut ticks) = (0u32, 0u32, 0u32);
    let deadline = Instant::now() + Duration::from_secs(90);
    while pos < seg_end {
        assert!(Instant::now() < deadline, "stream stalled at {pos}");
        tokio::select! {
            m = stream.next() => match m?.expect("stream ended early") {
                StreamMessage::XLogData { wal_start, wal_end, server_time, data } => {
                    assert_eq!(wal_start, pos, "WAL must arrive contiguously");
                    assert!(wal_end >= wal_start && server_time > 0);
                    let take = data.len().min((seg_end.0 - pos.0) as usize);
                    segment.extend_from_slice(&data[..take]);
                    pos = Lsn(pos.0 + data.len() as u64);
                    xlog_msgs += 1;
                }
                StreamMessage::Keepalive { reply_requested, .. } => {
                    keepalives += 1;
                    if reply_requested {
                        stream.send_status(pos, Lsn::INVALID, Lsn::INVALID, false).await?;
                    }
                }
                other => panic!("unexpected {other:?}"),
            },
            _ = tick.tick() => {
                // Flush 0/0: the server leaves the slot alone until we report durability.
                stream.send_status(pos, Lsn::INVALID, Lsn::INVALID, false).await?;
                ticks += 1;
            }
        }
    }
    assert!(xlog_msgs > 10, "{xlog_msgs} XLogData messages");
    assert!(ticks > 0, "the timer branch ran");
    eprintln!("{xlog_msgs} XLogData, {keepalives} keepalives, {ticks} status ticks");
    assert_eq!(segment.len() as u64, seg);
    let file = pg.data_dir().join("pg_wal").join(first.to_string());
    let on_disk = std::fs::read(&file)?;
    assert!(
        on_disk == segment,
        "streamed bytes differ from {}",
        file.display()
    );

    // Report the segment durable: the slot's restart_lsn follows our flush position.
    assert_eq!(slot_restart_lsn(&pg, "hs_it")?, Some(restart));
    stream.send_status(pos, seg_end, seg_end, true).await?;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if slot_restart_lsn(&pg, "hs_it")? == Some(seg_end) {
            break;
        }
        assert!(Instant::now() < deadline, "restart_lsn did not advance");
        // Keep reading meanwhile (the reply_requested keepalive comes back).
        let _ = tokio::time::timeout(Duration::from_millis(100), stream.next()).await;
    }

    // Clean end; the connection is usable afterwards, and the slot can be dropped.
    assert_eq!(stream.finish().await?, None);
    assert_eq!(client.identify_system().await?.timeline, id.timeline);
    client.drop_slot("hs_it", true).await?;
    assert_eq!(client.read_replication_slot("hs_it").await?, None);
    assert_eq!(slot_restart_lsn(&pg, "hs_it")?, None);

    // A start point ahead of the server's WAL: the error comes from next(), then the
    // connection is idle again.
    let far = Lsn(id.xlogpos.0 + 64 * seg);
    let mut stream = client.start_physical(None, far, id.timeline).await?;
    let e = stream.next().await.unwrap_err();
    assert!(e.sqlstate().is_some(), "{e:?}");
    drop(stream);
    client.identify_system().await?;
    client.close().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeline_switch_on_promoted_copy() -> R {
    let pg = PgCluster::start(PgOptions::default())?;
    blocking(|| pg.psql("CREATE TABLE t AS SELECT generate_series(1, 1000) AS i"))?;
    // Archive recovery that runs out of WAL and promotes onto timeline 2.
    let promoted = blocking(|| pg.promoted_copy(""))?;

    let mut client = ReplicationClient::connect(&cfg(&promoted.replication_conninfo())).await?;
    let id = client.identify_system().await?;
    assert_eq!(id.timeline, TimelineId(2));
    let (name, content) = client.timeline_history(TimelineId(2)).await?;
    assert_eq!(name, "00000002.history");
    assert_eq!(name, TimelineId(2).history_file_name());
    let history = parse_timeline_history(std::str::from_utf8(&content)?)?;
    assert_eq!(history.len(), 1, "{history:?}");
    assert_eq!(history[0].tli, TimelineId(1));
    let switch = history[0].switch_lsn;
    assert!(switch > Lsn(0));
    let e = client.timeline_history(TimelineId(7)).await.unwrap_err();
    assert!(e.sqlstate().is_some(), "{e:?}");

    // Stream the old timeline from the start of the switch segment: WAL up to the switch
    // point, then EndOfTimeline, then the end of the stream.
    let seg = parse_wal_segment_size(&client.show("wal_segment_size").await?)?;
    let start = switch.segment_start(seg);
    let mut stream = client.start_physical(None, start, TimelineId(1)).await?;
    let mut pos = start;
    let mut end = None;
    let deadline = Instant::now() + Duration::from_secs(60);
    while let Some(m) = tokio::time::timeout_at(deadline.into(), stream.next()).await?? {
        match m {
            StreamMessage::XLogData {
                wal_start, data, ..
            } => {
                assert_eq!(wal_start, pos);
                pos = Lsn(pos.0 + data.len() as u64);
            }
            StreamMessage::Keepalive { .. } => {}
            StreamMessage::EndOfTimeline {
                next_tli,
                next_tli_start,
            } => {
                assert!(end.is_none());
                end = Some((next_tli, next_tli_start));
            }
        }
    }
    assert_eq!(
        pos, switch,
        "WAL of the old timeline ends at the switch point"
    );
    assert_eq!(end, Some((TimelineId(2), switch)));
    // finish() after the end reports the switch too.
    let sw = stream.finish().await?.expect("switch reported");
    assert_eq!((sw.next_tli, sw.next_tli_start), (TimelineId(2), switch));

    // Starting exactly at the switch point: nothing to stream, only EndOfTimeline.
    let mut stream = client.start_physical(None, switch, TimelineId(1)).await?;
    assert_eq!(
        stream.next().await?,
        Some(StreamMessage::EndOfTimeline {
            next_tli: TimelineId(2),
            next_tli_start: switch
        })
    );
    assert_eq!(stream.next().await?, None);
    drop(stream);

    // And the new timeline streams from the switch point.
    let mut stream = client.start_physical(None, switch, TimelineId(2)).await?;
    match tokio::time::timeout(Duration::from_secs(30), stream.next()).await?? {
        Some(StreamMessage::XLogData { wal_start, .. }) => assert_eq!(wal_start, switch),
        other => panic!("expected WAL on timeline 2, got {other:?}"),
    }
    assert_eq!(stream.finish().await?, None);
    client.identify_system().await?;
    Ok(())
}
