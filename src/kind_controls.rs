//! What [`Errands::controls`](crate::Errands::controls) shows: per kind,
//! the limit the code sets, the override stored by an operator, the limit
//! in force in this process, and every hold (pause, throttle) with its end.
//!
//! `Serialize` like the rest of inspection: times as RFC 3339 strings, so a
//! status endpoint can return it as it is.

use std::time::SystemTime;

use serde::Serialize;

use crate::actors::dispatcher::KindState;
use crate::clock::ms_to_system_time;
use crate::store::ControlRow;

/// One kind's knobs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct KindControls {
    /// The queue.
    pub queue: String,
    /// The kind.
    pub kind: String,
    /// The code's limit (`JobConfig::concurrency`); `None` if this process
    /// does not run the kind.
    pub default_concurrency: Option<usize>,
    /// The stored override ([`Errands::set_concurrency`](crate::Errands::set_concurrency)),
    /// which wins over the code's limit in every process until reset.
    pub override_concurrency: Option<usize>,
    /// The limit this process applies now: the override, else an adaptive
    /// kind's current value, else the code's. `None` if not run here.
    pub concurrency: Option<usize>,
    /// Adaptive concurrency's range `[min, max]`, if on.
    pub adaptive: Option<[usize; 2]>,
    /// The rate limit: at most `[n, per_ms]` starts per window, if any.
    pub rate_limit: Option<[u64; 2]>,
    /// Jobs of the kind running in this process now.
    pub running_here: Option<usize>,
    /// The kind is paused (its own pause); see `paused_until`.
    pub paused: bool,
    /// When the kind's pause ends by itself; `None` if it lasts until resumed.
    #[serde(serialize_with = "crate::clock::rfc3339_serde::option")]
    pub paused_until: Option<SystemTime>,
    /// The kind's queue is paused; see `queue_paused_until`.
    pub queue_paused: bool,
    /// When the queue's pause ends by itself; `None` if until resumed.
    #[serde(serialize_with = "crate::clock::rfc3339_serde::option")]
    pub queue_paused_until: Option<SystemTime>,
    /// A handler throttled the kind ([`JobError::throttle`](crate::JobError::throttle))
    /// until then.
    #[serde(serialize_with = "crate::clock::rfc3339_serde::option")]
    pub throttled_until: Option<SystemTime>,
}

impl KindControls {
    /// A kind with no knob known yet: not run here, nothing stored.
    fn blank(queue: &str, kind: &str) -> KindControls {
        KindControls {
            queue: queue.to_string(),
            kind: kind.to_string(),
            default_concurrency: None,
            override_concurrency: None,
            concurrency: None,
            adaptive: None,
            rate_limit: None,
            running_here: None,
            paused: false,
            paused_until: None,
            queue_paused: false,
            queue_paused_until: None,
            throttled_until: None,
        }
    }

    /// Stored rows and this process's kinds, one entry per kind, sorted by
    /// queue and kind. Holds that have ended are left out.
    pub(crate) fn merge(
        rows: &[ControlRow],
        here: &[(&'static str, KindState)],
        now: i64,
    ) -> Vec<KindControls> {
        let mut out: Vec<KindControls> = here
            .iter()
            .map(|(queue, state)| KindControls {
                default_concurrency: Some(state.default_limit),
                concurrency: Some(state.limit),
                adaptive: state.adaptive.map(|(min, max)| [min, max]),
                rate_limit: state
                    .rate
                    .map(|(n, per)| [n as u64, u64::try_from(per).unwrap_or(0)]),
                running_here: Some(state.running),
                ..KindControls::blank(queue, state.kind)
            })
            .collect();
        for row in rows.iter().filter(|r| !r.kind.is_empty()) {
            if !out
                .iter()
                .any(|k| k.queue == row.queue && k.kind == row.kind)
            {
                out.push(KindControls::blank(&row.queue, &row.kind));
            }
        }
        let hold = |until: Option<i64>| -> (bool, Option<SystemTime>) {
            match until {
                Some(at) if at > now => (true, (at != i64::MAX).then(|| ms_to_system_time(at))),
                _ => (false, None),
            }
        };
        for entry in &mut out {
            if let Some(row) = rows
                .iter()
                .find(|r| r.queue == entry.queue && r.kind == entry.kind)
            {
                entry.override_concurrency = row.concurrency;
                (entry.paused, entry.paused_until) = hold(row.paused_until);
                entry.throttled_until = hold(row.throttled_until).1;
            }
            if let Some(row) = rows
                .iter()
                .find(|r| r.queue == entry.queue && r.kind.is_empty())
            {
                (entry.queue_paused, entry.queue_paused_until) = hold(row.paused_until);
            }
        }
        out.sort_by(|a, b| (&a.queue, &a.kind).cmp(&(&b.queue, &b.kind)));
        out
    }
}
