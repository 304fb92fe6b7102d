//! Acknowledgement of delivered entries, batched into few XACKs.

use std::sync::Arc;

use throng_downlink::Consumer;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{ACK_BATCH, ACK_LINGER, Backoff};

/// Failed XACKs of one batch before it is given up (its entries stay pending and
/// are delivered again after a reclaim: at least once).
const ACK_TRIES: u32 = 5;
/// Batches the ids of delivered entries into XACKs until `done`, then acks
/// what is left once.
pub(super) async fn flush_acks(
    consumer: Arc<Consumer>,
    mut ids: mpsc::Receiver<String>,
    done: CancellationToken,
) {
    let mut batch: Vec<String> = Vec::with_capacity(ACK_BATCH);
    let mut backoff = Backoff::new();
    let mut failures = 0;
    loop {
        if batch.is_empty() {
            tokio::select! {
                biased;
                received = ids.recv_many(&mut batch, ACK_BATCH) => if received == 0 { return },
                () = done.cancelled() => break,
            }
            let linger = Instant::now() + ACK_LINGER;
            while batch.len() < ACK_BATCH {
                let room = ACK_BATCH - batch.len();
                let more = ids.recv_many(&mut batch, room);
                if !matches!(tokio::time::timeout_at(linger, more).await, Ok(n) if n > 0) {
                    break;
                }
            }
        }
        match consumer.ack(&batch).await {
            Ok(_) => {
                batch.clear();
                backoff.reset();
                failures = 0;
            }
            Err(err) => {
                failures += 1;
                tracing::warn!(count = batch.len(), error = %err, failures, "downlink xack failed");
                if failures >= ACK_TRIES {
                    tracing::warn!(
                        count = batch.len(),
                        "giving up on these acks; the entries will be delivered again"
                    );
                    batch.clear();
                    failures = 0;
                    continue;
                }
                tokio::select! {
                    () = done.cancelled() => break,
                    () = tokio::time::sleep(backoff.next()) => {}
                }
            }
        }
    }
    ids.close();
    while let Ok(id) = ids.try_recv() {
        batch.push(id);
    }
    for chunk in batch.chunks(ACK_BATCH) {
        if let Err(err) = consumer.ack(chunk).await {
            tracing::warn!(count = batch.len(), error = %err, "final downlink xack failed; the entries stay pending");
            return;
        }
    }
}
