//! Who publishes where and who receives what: the topology of a `pubsub` run,
//! shared by the parent and every worker.

use serde::{Deserialize, Serialize};

/// How publishers and subscribers are wired.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// Every publisher on one topic; every subscriber receives every message.
    FanOut,
    /// Publisher i on its own topic `…/in/i`; every subscriber on `…/in/+`.
    FanIn,
    /// Publisher i on `…/pair/i`, received by subscriber i only.
    OneToOne,
}

/// The publishers a subscriber receives from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sources {
    All,
    One(u32),
}

/// The topology and the load of a run.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Plan {
    pub mode: Mode,
    pub publishers: u32,
    pub subscribers: u32,
    /// Client ids are `<prefix>-p<i>` and `<prefix>-s<j>`.
    pub client_prefix: String,
    /// Every topic starts with it (one per run, so runs never mix).
    pub topic_prefix: String,
    /// QoS of the PUBLISHes.
    pub qos: u8,
    /// QoS the subscribers ask for.
    pub sub_qos: u8,
    pub payload_size: usize,
    /// Unacknowledged QoS 1/2 PUBLISHes per publisher at most.
    pub inflight: u16,
    /// Messages per second, all publishers together (warmup included).
    pub rate: Option<f64>,
    /// Measured messages, all publishers together (else `duration_s`).
    pub messages: Option<u64>,
    /// Length of the measured window (else `messages`).
    pub duration_s: Option<f64>,
}

impl Plan {
    /// The topic publisher `i` publishes on.
    pub fn topic(&self, i: u32) -> String {
        let tp = &self.topic_prefix;
        match self.mode {
            Mode::FanOut => format!("{tp}/all"),
            Mode::FanIn => format!("{tp}/in/{i}"),
            Mode::OneToOne => format!("{tp}/pair/{i}"),
        }
    }

    /// The filter subscriber `j` subscribes to.
    pub fn filter(&self, j: u32) -> String {
        match self.mode {
            Mode::FanOut => self.topic(0),
            Mode::FanIn => format!("{}/in/+", self.topic_prefix),
            Mode::OneToOne => self.topic(j),
        }
    }

    pub fn sources(&self, j: u32) -> Sources {
        match self.mode {
            Mode::FanOut | Mode::FanIn => Sources::All,
            Mode::OneToOne => Sources::One(j),
        }
    }

    /// Measured messages of publisher `i` (with --messages).
    pub fn messages_of(&self, i: u32) -> Option<u64> {
        let n = self.messages?;
        let p = u64::from(self.publishers);
        Some(n / p + u64::from(u64::from(i) < n % p))
    }

    /// Messages per second of one publisher (with --rate).
    pub fn rate_of_one(&self) -> Option<f64> {
        self.rate.map(|r| r / f64::from(self.publishers))
    }

    /// Lowest QoS a delivery can have: what losses are judged by.
    pub fn effective_qos(&self) -> u8 {
        self.qos.min(self.sub_qos)
    }

    pub fn publisher_id(&self, i: u32) -> String {
        format!("{}-p{i}", self.client_prefix)
    }

    pub fn subscriber_id(&self, j: u32) -> String {
        format!("{}-s{j}", self.client_prefix)
    }

    /// Which of `n` targets publisher `i` connects to.
    pub fn publisher_target(i: u32, n: usize) -> usize {
        i as usize % n
    }

    /// Which of `n` targets subscriber `j` connects to: shifted by one from
    /// publisher `j`, so that with several targets a one-to-one pair spans two.
    pub fn subscriber_target(j: u32, n: usize) -> usize {
        (j as usize + 1) % n
    }

    /// Deliveries the subscribers should get when publisher i sent `published[i]`.
    pub fn expected_deliveries(&self, published: &[u64]) -> u64 {
        let all: u64 = published.iter().sum();
        match self.mode {
            Mode::FanOut | Mode::FanIn => all * u64::from(self.subscribers),
            Mode::OneToOne => all,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(mode: Mode, publishers: u32, subscribers: u32) -> Plan {
        Plan {
            mode,
            publishers,
            subscribers,
            client_prefix: "ps1".into(),
            topic_prefix: "tl/ps1".into(),
            qos: 1,
            sub_qos: 2,
            payload_size: 64,
            inflight: 8,
            rate: Some(1000.0),
            messages: Some(10),
            duration_s: None,
        }
    }

    #[test]
    fn topologies() {
        let p = plan(Mode::FanOut, 3, 4);
        assert_eq!(
            (p.topic(2), p.filter(3)),
            ("tl/ps1/all".into(), "tl/ps1/all".into())
        );
        assert_eq!(p.sources(3), Sources::All);
        assert_eq!(p.expected_deliveries(&[4, 3, 3]), 40);
        let p = plan(Mode::FanIn, 3, 2);
        assert_eq!(
            (p.topic(2), p.filter(1)),
            ("tl/ps1/in/2".into(), "tl/ps1/in/+".into())
        );
        assert_eq!(p.sources(1), Sources::All);
        assert_eq!(p.expected_deliveries(&[4, 3, 3]), 20);
        let p = plan(Mode::OneToOne, 3, 3);
        assert_eq!(
            (p.topic(2), p.filter(2)),
            ("tl/ps1/pair/2".into(), "tl/ps1/pair/2".into())
        );
        assert_eq!(p.sources(1), Sources::One(1));
        assert_eq!(p.expected_deliveries(&[4, 3, 3]), 10);
        assert_eq!(
            (p.publisher_id(1), p.subscriber_id(2)),
            ("ps1-p1".into(), "ps1-s2".into())
        );
        assert_eq!(p.effective_qos(), 1);
    }

    #[test]
    fn shares_add_up() {
        let p = plan(Mode::FanOut, 3, 1);
        let shares: Vec<u64> = (0..3).map(|i| p.messages_of(i).unwrap()).collect();
        assert_eq!(shares, vec![4, 3, 3]);
        assert_eq!(p.rate_of_one(), Some(1000.0 / 3.0));
    }

    #[test]
    fn pairs_span_two_targets() {
        for j in 0..10 {
            assert_ne!(Plan::publisher_target(j, 2), Plan::subscriber_target(j, 2));
            assert_eq!(Plan::subscriber_target(j, 1), 0);
        }
    }
}
