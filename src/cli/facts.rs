//! What a command did, recorded as it runs, for hooks (environment variables) and metrics.

use std::cell::RefCell;
use std::rc::Rc;

/// One gauge sample: full metric name, help text, extra labels, value.
#[derive(Debug, Clone)]
pub struct Gauge {
    /// Metric name (`vault_snapshot_bytes_added`).
    pub name: String,
    /// `# HELP` text.
    pub help: String,
    /// Labels beyond profile, host and repository.
    pub labels: Vec<(String, String)>,
    /// Value.
    pub value: f64,
}

/// The facts of one run.
#[derive(Debug, Default, Clone)]
pub struct RunFacts {
    /// Snapshot written (or tested).
    pub snapshot_id: Option<String>,
    /// Bytes added to the repository.
    pub bytes_added: Option<u64>,
    /// Anomalies found (kinds).
    pub anomalies: Vec<String>,
    /// Gauges for the metrics.
    pub gauges: Vec<Gauge>,
    /// Snapshots created, removed, restored or held (audit trail).
    pub snapshots: Vec<[u8; 32]>,
    /// Bytes added, restored or freed (audit trail).
    pub bytes: Option<u64>,
    /// What was done, in words (audit trail).
    pub summary: Option<String>,
    /// Repositories the command opened: each gets the audit record.
    pub repos: Vec<vault::repo::Repository>,
    /// A dry run: it wrote nothing, so it leaves no audit record either.
    pub dry_run: bool,
}

/// Shared, filled in by the command through `GlobalArgs::facts`.
#[derive(Debug, Default, Clone)]
pub struct Facts(Rc<RefCell<RunFacts>>);

impl Facts {
    /// Adds a gauge.
    pub fn gauge(&self, name: &str, help: &str, value: f64) {
        self.gauge_with(name, help, &[], value);
    }

    /// Adds a gauge with extra labels.
    pub fn gauge_with(&self, name: &str, help: &str, labels: &[(&str, &str)], value: f64) {
        self.0.borrow_mut().gauges.push(Gauge {
            name: name.into(),
            help: help.into(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            value,
        });
    }

    /// Changes the facts.
    pub fn update(&self, f: impl FnOnce(&mut RunFacts)) {
        f(&mut self.0.borrow_mut());
    }

    /// Registers a repository the command opened (it receives the audit record).
    pub fn opened(&self, repo: &vault::repo::Repository) {
        self.0.borrow_mut().repos.push(repo.clone());
    }

    /// Forgets the repositories (before they are dropped, so that their caches close).
    pub fn take_repos(&self) -> Vec<vault::repo::Repository> {
        std::mem::take(&mut self.0.borrow_mut().repos)
    }

    /// A copy of the facts.
    pub fn get(&self) -> RunFacts {
        self.0.borrow().clone()
    }
}
