//! `wal stream`'s notifications: a [`StreamNotifier`] observes the streamer (a recorded
//! gap becomes an event at once) and a [`Watchdog`] samples its [`StreamMetrics`] every
//! second: no WAL made durable for `wal_stall_after` while the server has more (or while
//! not connected) is a stall, a durable lag over `wal_max_age` is lagging, and each is
//! reported once when it starts and once when it clears (`wal_stream.recovered`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use hs_backup::{StreamMetrics, StreamObserver};
use hs_proto::Lsn;
use hs_repo::WalGap;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::{Event, Notifier};

/// Default `wal_stall_after`.
pub const DEFAULT_WAL_STALL_AFTER: Duration = Duration::from_secs(5 * 60);

/// How often the watchdog samples the stream.
const TICK: Duration = Duration::from_secs(1);

/// When the stream's state is worth a notification.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StreamThresholds {
    /// No WAL made durable for this long, while the server has more or while not
    /// connected, is a stall (`wal_stall_after`).
    pub stall_after: Duration,
    /// A durable lag (the recovery point objective) longer than this is lagging
    /// (`wal_max_age`, which `doctor` checks too).
    pub max_lag: Duration,
}

/// What the watchdog reads from the stream at one instant.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct WatchSample {
    /// Connected and streaming.
    pub streaming: bool,
    /// The newest position durable in the repository (the `.partial` counted).
    pub durable: u64,
    /// The server's end of WAL, as last reported.
    pub server_end: u64,
    /// Seconds since the server first had WAL beyond `durable` (0 when caught up).
    pub lag_seconds: f64,
}

impl WatchSample {
    /// The current values of `m`.
    pub fn of(m: &StreamMetrics) -> WatchSample {
        WatchSample {
            streaming: m.is_streaming(),
            durable: m.durable_lsn(),
            server_end: m.server_end_lsn(),
            lag_seconds: m.durable_lag_seconds(),
        }
    }

    fn lag_bytes(&self) -> u64 {
        self.server_end.saturating_sub(self.durable)
    }
}

/// The stall and lag state machine, fed one [`WatchSample`] per tick.
#[derive(Debug)]
pub struct Watchdog {
    deployment: String,
    t: StreamThresholds,
    last_durable: Option<u64>,
    last_progress: Instant,
    stalled: bool,
    lagging: bool,
}

fn secs_text(secs: f64) -> String {
    humantime::format_duration(Duration::from_secs(secs.max(0.0) as u64)).to_string()
}

impl Watchdog {
    /// A watchdog whose clock starts at `now`.
    pub fn new(deployment: &str, t: StreamThresholds, now: Instant) -> Watchdog {
        Watchdog {
            deployment: deployment.to_owned(),
            t,
            last_durable: None,
            last_progress: now,
            stalled: false,
            lagging: false,
        }
    }

    fn event(&self, name: &'static str, message: String, s: &WatchSample) -> Event {
        Event::new(name, Some(&self.deployment), message)
            .figure("streaming", s.streaming)
            .figure("durable_lsn", Lsn(s.durable).to_string())
            .figure("server_lsn", Lsn(s.server_end).to_string())
            .figure("lag_bytes", s.lag_bytes())
            .figure("lag_seconds", s.lag_seconds.round() as u64)
    }

    /// The events `s`, taken at `now`, starts or ends.
    pub fn tick(&mut self, now: Instant, s: WatchSample) -> Vec<Event> {
        let mut out = Vec::new();
        if self.last_durable != Some(s.durable) {
            if self.last_durable.is_some() {
                self.last_progress = now;
            }
            self.last_durable = Some(s.durable);
        }
        let behind = !s.streaming || s.server_end > s.durable;
        if !behind {
            // Caught up: nothing to make durable counts as progress.
            self.last_progress = now;
        }
        let idle = now.saturating_duration_since(self.last_progress);
        let stalled = idle >= self.t.stall_after && behind;
        if stalled && !self.stalled {
            let why = if s.streaming {
                format!(
                    "the server has {} of WAL the repository lacks",
                    crate::human_bytes(s.lag_bytes())
                )
            } else {
                "not connected to the server; reconnecting".to_owned()
            };
            out.push(
                self.event(
                    "wal_stream.stalled",
                    format!(
                        "WAL stream of {} stalled: no WAL made durable for {} ({why})",
                        self.deployment,
                        secs_text(idle.as_secs_f64())
                    ),
                    &s,
                )
                .figure("seconds_without_progress", idle.as_secs())
                .figure("stall_after_seconds", self.t.stall_after.as_secs()),
            );
        } else if !stalled && self.stalled {
            out.push(
                self.event(
                    "wal_stream.recovered",
                    format!(
                        "WAL stream of {} is making WAL durable again (it was stalled)",
                        self.deployment
                    ),
                    &s,
                )
                .figure("recovered_from", "stalled"),
            );
        }
        self.stalled = stalled;

        let limit = self.t.max_lag.as_secs_f64();
        if !self.lagging && s.lag_seconds > limit {
            self.lagging = true;
            out.push(
                self.event(
                    "wal_stream.lagging",
                    format!(
                        "WAL stream of {} is {} behind the server (more than wal_max_age {}); {} of WAL not yet durable",
                        self.deployment,
                        secs_text(s.lag_seconds),
                        secs_text(limit),
                        crate::human_bytes(s.lag_bytes())
                    ),
                    &s,
                )
                .figure("max_lag_seconds", self.t.max_lag.as_secs()),
            );
        } else if self.lagging && s.lag_seconds <= limit / 2.0 {
            self.lagging = false;
            out.push(
                self.event(
                    "wal_stream.recovered",
                    format!(
                        "WAL stream of {} caught up: {} behind the server",
                        self.deployment,
                        secs_text(s.lag_seconds)
                    ),
                    &s,
                )
                .figure("recovered_from", "lagging"),
            );
        }
        out
    }
}

/// The streamer's observer for notifications (a gap becomes an event at once) plus the
/// task that delivers events and runs the [`Watchdog`]. Pass it to
/// `hs_backup::wal_stream` (beside the metrics, with `hs_backup::Tee`), then
/// [`StreamNotifier::finish`] with the stream's last event.
pub struct StreamNotifier {
    deployment: String,
    tx: Option<mpsc::UnboundedSender<Event>>,
    task: Option<JoinHandle<()>>,
    notifier: Notifier,
}

impl std::fmt::Debug for StreamNotifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamNotifier")
            .field("deployment", &self.deployment)
            .finish_non_exhaustive()
    }
}

impl StreamNotifier {
    /// Starts the delivery task; with no sink configured, it does nothing at all.
    pub fn start(
        notifier: Notifier,
        deployment: &str,
        thresholds: StreamThresholds,
        metrics: Arc<StreamMetrics>,
    ) -> StreamNotifier {
        if notifier.is_empty() {
            return StreamNotifier {
                deployment: deployment.to_owned(),
                tx: None,
                task: None,
                notifier,
            };
        }
        let (tx, mut rx) = mpsc::unbounded_channel::<Event>();
        let n = notifier.clone();
        let mut dog = Watchdog::new(deployment, thresholds, Instant::now());
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(TICK);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    ev = rx.recv() => match ev {
                        Some(e) => { n.send(&e).await; }
                        None => break,
                    },
                    _ = tick.tick() => {
                        for e in dog.tick(Instant::now(), WatchSample::of(&metrics)) {
                            n.send(&e).await;
                        }
                    }
                }
            }
        });
        StreamNotifier {
            deployment: deployment.to_owned(),
            tx: Some(tx),
            task: Some(task),
            notifier,
        }
    }

    /// Stops the watchdog, delivers what is queued, then `last` (the stream's end:
    /// `wal_stream.failed` or `wal_stream.stopped`).
    pub async fn finish(mut self, last: Event) {
        self.tx = None;
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
        self.notifier.send(&last).await;
    }
}

impl StreamObserver for StreamNotifier {
    fn gap(&self, gap: &WalGap) {
        if let Some(tx) = &self.tx {
            let e = Event::new(
                "wal_stream.gap",
                Some(&self.deployment),
                format!(
                    "WAL of {} is missing from the repository: segments {} .. {} were gone from the server and are recorded as a gap ({}); a restore cannot replay across it",
                    self.deployment, gap.from_segment, gap.to_segment, gap.reason
                ),
            )
            .figure("from_segment", gap.from_segment.clone())
            .figure("to_segment", gap.to_segment.clone());
            let _ = tx.send(e);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t() -> StreamThresholds {
        StreamThresholds {
            stall_after: Duration::from_secs(60),
            max_lag: Duration::from_secs(600),
        }
    }

    fn names(v: &[Event]) -> Vec<&str> {
        v.iter().map(|e| e.name).collect()
    }

    #[test]
    fn a_stall_is_reported_once_and_its_end_once() {
        let t0 = Instant::now();
        let mut d = Watchdog::new("main", t(), t0);
        let s = |durable, end, streaming| WatchSample {
            streaming,
            durable,
            server_end: end,
            lag_seconds: 0.0,
        };
        assert!(d.tick(t0, s(100, 100, true)).is_empty());
        // Caught up and idle: never a stall.
        assert!(d
            .tick(t0 + Duration::from_secs(300), s(100, 100, true))
            .is_empty());
        // The server has more, nothing becomes durable.
        assert!(d
            .tick(t0 + Duration::from_secs(330), s(100, 200, true))
            .is_empty());
        let e = d.tick(t0 + Duration::from_secs(361), s(100, 200, true));
        assert_eq!(names(&e), ["wal_stream.stalled"]);
        assert!(e[0].message.contains("100 B of WAL"), "{}", e[0].message);
        assert!(d
            .tick(t0 + Duration::from_secs(400), s(100, 300, true))
            .is_empty());
        let e = d.tick(t0 + Duration::from_secs(401), s(150, 300, true));
        assert_eq!(names(&e), ["wal_stream.recovered"]);
        assert_eq!(e[0].figures["recovered_from"], "stalled");
    }

    #[test]
    fn not_connected_for_the_stall_time_is_a_stall() {
        let t0 = Instant::now();
        let mut d = Watchdog::new("main", t(), t0);
        let down = WatchSample::default();
        assert!(d.tick(t0, down).is_empty());
        let e = d.tick(t0 + Duration::from_secs(61), down);
        assert_eq!(names(&e), ["wal_stream.stalled"]);
        assert!(e[0].message.contains("not connected"), "{}", e[0].message);
    }

    #[test]
    fn lag_over_the_limit_and_back() {
        let t0 = Instant::now();
        let mut d = Watchdog::new("main", t(), t0);
        let lag = |secs, durable| WatchSample {
            streaming: true,
            durable,
            server_end: 1 << 30,
            lag_seconds: secs,
        };
        assert!(d.tick(t0, lag(10.0, 1)).is_empty());
        let e = d.tick(t0 + Duration::from_secs(1), lag(601.0, 2));
        assert_eq!(names(&e), ["wal_stream.lagging"]);
        assert_eq!(e[0].severity, super::super::Severity::Warning);
        // Still over, or just under the limit: nothing new.
        assert!(d
            .tick(t0 + Duration::from_secs(2), lag(900.0, 3))
            .is_empty());
        assert!(d
            .tick(t0 + Duration::from_secs(3), lag(500.0, 4))
            .is_empty());
        let e = d.tick(t0 + Duration::from_secs(4), lag(20.0, 5));
        assert_eq!(names(&e), ["wal_stream.recovered"]);
        assert_eq!(e[0].figures["recovered_from"], "lagging");
    }
}
