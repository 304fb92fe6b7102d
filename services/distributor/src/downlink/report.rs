//! The consumer's metrics (lag, pending, dead letters) and the trimming of
//! acknowledged entries, on one periodic task.

use std::sync::Arc;
use std::time::Duration;

use throng_downlink::Consumer;
use tokio_util::sync::CancellationToken;

use crate::hub::Hub;

/// Period of the lag / pending / dead-letter metrics.
const METRICS_EVERY: Duration = Duration::from_secs(1);
/// Acknowledged entries are trimmed from the stream every this many metric ticks.
const TRIM_EVERY_TICKS: u64 = 10;

/// Keeps the lag, pending and dead-letter metrics current, and the stream
/// trimmed of acknowledged entries, until `done`.
pub(super) async fn report(hub: Arc<Hub>, consumer: Arc<Consumer>, done: CancellationToken) {
    let metrics = hub.metrics();
    let mut reported = 0;
    let mut sync_dead_letters = || {
        let total = consumer.dead_letters_total();
        metrics.dead_letters.inc_by(total.saturating_sub(reported));
        reported = reported.max(total);
    };
    let mut tick = tokio::time::interval(METRICS_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut ticks: u64 = 0;
    loop {
        tokio::select! {
            () = done.cancelled() => break,
            _ = tick.tick() => {}
        }
        sync_dead_letters();
        ticks += 1;
        if ticks.is_multiple_of(TRIM_EVERY_TICKS) {
            match consumer.trim_acknowledged().await {
                Ok(removed) if removed > 0 => {
                    tracing::debug!(removed, "trimmed acknowledged downlink entries")
                }
                Ok(_) => {}
                Err(err) => tracing::debug!(error = %err, "downlink trim failed"),
            }
        }
        let info = tokio::select! {
            () = done.cancelled() => break,
            info = consumer.group_info() => info,
        };
        match info {
            Ok((lag, pending)) => {
                // Without a lag from Redis (after deletions) the last value stands.
                if let Some(lag) = lag {
                    metrics
                        .queue_lag
                        .set(i64::try_from(lag).unwrap_or(i64::MAX));
                }
                metrics
                    .pending
                    .set(i64::try_from(pending).unwrap_or(i64::MAX));
            }
            Err(err) => tracing::debug!(error = %err, "downlink group info unavailable"),
        }
    }
    sync_dead_letters();
}
