//! Flags every scenario shares: which broker processes to sample, where the JSON
//! report goes, and whether progress is shown.

use std::path::PathBuf;

use anyhow::Context;
use serde::Serialize;

use crate::tiers::BrokerPid;

#[derive(clap::Args, Debug, Clone)]
pub struct OutputArgs {
    /// Broker process to sample (VmRSS, CPU time) through /proc, as `[LABEL=]PID`;
    /// repeatable. All are summed; processes that share a LABEL (a tier, e.g.
    /// `agent=123`, `handler=456`, `handler=789`) are also reported together, an
    /// unlabeled pid on its own.
    #[arg(long = "broker-pid", value_name = "[LABEL=]PID")]
    pub broker_pid: Vec<BrokerPid>,
    /// Write the machine-readable report here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// No progress lines on stderr.
    #[arg(long, short)]
    pub quiet: bool,
}

impl OutputArgs {
    /// Writes `report` as pretty JSON to `--json`, if given.
    pub fn write_json(&self, report: &impl Serialize) -> anyhow::Result<()> {
        if let Some(path) = &self.json {
            let mut text = serde_json::to_string_pretty(report)?;
            text.push('\n');
            std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
        }
        Ok(())
    }
}
