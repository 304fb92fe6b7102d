//! The `pubsub` report as a table for people.

use super::msg::SubscriberRow;
use super::plan::Mode;
use super::report::Report;
use crate::report::{bytes, count, latency_row, micros, per_second, rate};
use crate::tiers;

impl Report {
    pub fn print(&self) {
        let mut out = format!(
            "== throng-load pubsub: {} {} publisher(s) -> {} subscriber(s), QoS {}{}, {} B, MQTT {}, at {}\n",
            match self.mode {
                Mode::FanOut => "fan-out",
                Mode::FanIn => "fan-in",
                Mode::OneToOne => "one-to-one",
            },
            count(u64::from(self.publishers)),
            count(u64::from(self.subscribers)),
            self.qos,
            if self.sub_qos == self.qos {
                String::new()
            } else {
                format!(" (subscribed at {})", self.sub_qos)
            },
            self.payload_size,
            if self.protocol == 5 { "5" } else { "3.1.1" },
            self.targets.join(",")
        );
        let mut line = |head: &str, text: String| out.push_str(&format!("{head:<20}{text}\n"));
        let s = &self.setup;
        line(
            "setup",
            format!(
                "{} of {} clients in {:.2} s (connect..SUBACK p50 {}, p99 {}){}",
                count(s.ok),
                count(s.ok + s.failed),
                s.seconds,
                micros(s.latency_us.p50_us),
                micros(s.latency_us.p99_us),
                if s.failures.is_empty() {
                    String::new()
                } else {
                    format!("; failures: {:?}", s.failures)
                }
            ),
        );
        let pr = &self.probe;
        line(
            "probe",
            format!(
                "{} of {} subscribers saw every publisher after {:.2} s{}",
                count(pr.subscribers_ready),
                count(pr.subscribers),
                pr.seconds,
                if pr.complete {
                    ""
                } else {
                    " (gave up: --probe-timeout)"
                }
            ),
        );
        let p = &self.publish;
        line(
            "published",
            format!(
                "{} in {:.3} s = {} msg/s (warmup {} more; window {}{})",
                count(p.sent),
                p.seconds,
                rate(p.messages_per_s),
                count(p.warmup_sent),
                p.window,
                self.rate_limit
                    .map_or(String::new(), |r| format!(", limited to {r}/s"))
            ),
        );
        if self.qos > 0 {
            line(
                "publish acks",
                format!(
                    "{} acked; {}",
                    count(p.acked),
                    latency_row(&p.ack_latency_us)
                ),
            );
        }
        let d = &self.delivery;
        let t = &d.counts.tally;
        line(
            "delivered",
            format!(
                "{} of {} expected in {:.3} s (first to last arrival) = {} msg/s",
                count(t.unique),
                count(t.expected),
                d.seconds,
                rate(d.messages_per_s)
            ),
        );
        line(
            "checks",
            format!(
                "lost {}, duplicates {}, out of order {}, unexpected {}, wrong topic {}, malformed {}; received at QoS 0/1/2: {}/{}/{}",
                count(t.lost),
                count(t.duplicates),
                count(t.out_of_order),
                count(d.counts.unexpected),
                count(d.counts.wrong_topic),
                count(d.counts.malformed),
                count(d.counts.by_qos[0]),
                count(d.counts.by_qos[1]),
                count(d.counts.by_qos[2]),
            ),
        );
        line(
            "per subscriber",
            format!(
                "unique {}..{}; {} with losses{}",
                count(d.unique_per_subscriber_min),
                count(d.unique_per_subscriber_max),
                count(d.subscribers_with_losses),
                self.worst_subscribers()
            ),
        );
        line("end-to-end latency", latency_row(&d.latency_us));
        line("per second", per_second(&d.timeline_per_s));
        for (head, text) in tiers::table_lines(
            &self.broker,
            self.host.as_ref(),
            "delivery, warmup included",
        ) {
            line(&head, text);
        }
        let l = &self.load_tool;
        line(
            "load tool",
            format!(
                "{} worker(s), CPU {}, RSS {}",
                l.workers,
                micros(l.cpu_us),
                bytes(l.rss_bytes as f64)
            ),
        );
        for w in &self.warnings {
            line("warning", w.clone());
        }
        line(
            "result",
            if self.problems.is_empty() {
                "OK".to_owned()
            } else {
                format!("FAILED: {}", self.problems.join("; "))
            },
        );
        print!("{out}");
    }

    /// "; worst: s3 lost 5 of 100, …" for up to 5 subscribers with losses.
    fn worst_subscribers(&self) -> String {
        let mut rows: Vec<&SubscriberRow> = self
            .per_subscriber
            .iter()
            .filter(|r| r.counts.tally.lost > 0)
            .collect();
        rows.sort_by_key(|r| std::cmp::Reverse(r.counts.tally.lost));
        let list: Vec<String> = rows
            .iter()
            .take(5)
            .map(|r| {
                format!(
                    "s{} lost {} of {}",
                    r.subscriber,
                    count(r.counts.tally.lost),
                    count(r.counts.tally.expected)
                )
            })
            .collect();
        if list.is_empty() {
            String::new()
        } else {
            format!("; worst: {}", list.join(", "))
        }
    }
}
