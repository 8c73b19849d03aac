//! Prometheus metrics: the textfile-collector file (`--metrics-file`) and Pushgateway pushes
//! (`--metrics-push`).
//!
//! Every sample carries the labels `profile`, `host` and `repository`. The file holds the
//! metrics of every command and profile that wrote it: a run replaces only its own samples
//! (the metrics named `vault_<command>_…` and `vault_repository_…` with its labels), and a
//! failed run keeps the previous `last_success` timestamp. The file is replaced atomically
//! (temporary file in the same directory, then rename), so the collector never reads half.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result, bail};
use base64::Engine;

use super::facts::Gauge;

/// The identity of a run's samples.
pub struct Identity {
    /// Command name (`snapshot`).
    pub command: String,
    /// Profile name ("" without one).
    pub profile: String,
    /// Host name.
    pub host: String,
    /// Repository location (secrets masked).
    pub repository: String,
}

impl Identity {
    fn labels(&self) -> Vec<(String, String)> {
        vec![
            ("profile".into(), self.profile.clone()),
            ("host".into(), self.host.clone()),
            ("repository".into(), self.repository.clone()),
        ]
    }

    /// Whether a sample belongs to this run's identity (and so is replaced by it).
    fn owns(&self, name: &str, labels: &str, with_repository: bool) -> bool {
        let own_name = name.starts_with(&format!("vault_{}_", self.command))
            || (with_repository && name.starts_with("vault_repository_"));
        own_name && labels_match(labels, &self.labels())
    }
}

/// The samples of one run, from its outcome and facts.
pub fn run_samples(
    id: &Identity,
    started: f64,
    duration: f64,
    exit_code: i32,
    gauges: &[Gauge],
) -> Vec<Gauge> {
    let c = &id.command;
    let g = |name: &str, help: &str, value: f64| Gauge {
        name: format!("vault_{c}_{name}"),
        help: help.to_string(),
        labels: vec![],
        value,
    };
    let mut out = vec![
        g(
            "last_run_timestamp_seconds",
            "Start time of the last run (Unix seconds).",
            started,
        ),
        g(
            "duration_seconds",
            "Duration of the last run in seconds.",
            duration,
        ),
        g(
            "exit_code",
            "Exit code of the last run (0 success; see the README).",
            exit_code as f64,
        ),
        g(
            "success",
            "1 if the last run succeeded, else 0.",
            if exit_code == 0 { 1.0 } else { 0.0 },
        ),
    ];
    if exit_code == 0 {
        out.push(g(
            "last_success_timestamp_seconds",
            "Start time of the last successful run (Unix seconds).",
            started,
        ));
    }
    out.extend(gauges.iter().cloned());
    out
}

fn escape(v: &str) -> String {
    v.replace('\\', r"\\")
        .replace('"', "\\\"")
        .replace('\n', r"\n")
}

fn render_labels(labels: &[(String, String)]) -> String {
    let inner: Vec<String> = labels
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
        .collect();
    format!("{{{}}}", inner.join(","))
}

/// Whether the rendered label set `rendered` contains every label of `want`.
fn labels_match(rendered: &str, want: &[(String, String)]) -> bool {
    want.iter()
        .all(|(k, v)| rendered.contains(&format!("{k}=\"{}\"", escape(v))))
}

fn format_value(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

/// Metric name → (help, samples as `labels → value`).
type Families = BTreeMap<String, (String, BTreeMap<String, String>)>;

fn add(families: &mut Families, id: &Identity, s: &Gauge) {
    let mut labels = id.labels();
    labels.extend(s.labels.iter().cloned());
    let fam = families
        .entry(s.name.clone())
        .or_insert_with(|| (s.help.clone(), BTreeMap::new()));
    fam.1.insert(render_labels(&labels), format_value(s.value));
}

/// Parses a file this module wrote (lines it cannot read are dropped).
fn parse(text: &str) -> Families {
    let mut f = Families::new();
    let mut help: BTreeMap<String, String> = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            if let Some((name, h)) = rest.split_once(' ') {
                help.insert(name.into(), h.into());
            }
            continue;
        }
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let (Some(open), Some(close)) = (line.find('{'), line.rfind('}')) else {
            continue;
        };
        if close < open {
            continue;
        }
        let name = &line[..open];
        let labels = &line[open..=close];
        let value = line[close + 1..].trim();
        if name.is_empty() || value.is_empty() {
            continue;
        }
        let h = help.get(name).cloned().unwrap_or_default();
        f.entry(name.to_string())
            .or_insert_with(|| (h, BTreeMap::new()))
            .1
            .insert(labels.to_string(), value.to_string());
    }
    f
}

fn render(f: &Families) -> String {
    let mut s = String::new();
    for (name, (help, samples)) in f {
        if samples.is_empty() {
            continue;
        }
        s.push_str(&format!("# HELP {name} {help}\n# TYPE {name} gauge\n"));
        for (labels, value) in samples {
            s.push_str(&format!("{name}{labels} {value}\n"));
        }
    }
    s
}

/// The text of one run's samples alone (what is pushed).
pub fn render_run(id: &Identity, samples: &[Gauge]) -> String {
    let mut f = Families::new();
    for s in samples {
        add(&mut f, id, s);
    }
    render(&f)
}

/// Merges the run's samples into `path` and replaces it atomically.
pub fn write_file(path: &Path, id: &Identity, samples: &[Gauge]) -> Result<()> {
    let old = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let mut f = parse(&old);
    let with_repository = samples
        .iter()
        .any(|s| s.name.starts_with("vault_repository_"));
    let keep_success = !samples
        .iter()
        .any(|s| s.name.ends_with("_last_success_timestamp_seconds"));
    for (name, (_, fam)) in f.iter_mut() {
        if keep_success && name == &format!("vault_{}_last_success_timestamp_seconds", id.command) {
            continue;
        }
        fam.retain(|labels, _| !id.owns(name, labels, with_repository));
    }
    for s in samples {
        add(&mut f, id, s);
    }
    let text = render(&f);
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "metrics".into());
    // Not `*.prom`: the collector must not read the temporary file.
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let result = (|| -> std::io::Result<()> {
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(text.as_bytes())?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(e).with_context(|| format!("writing metrics file {}", path.display()));
    }
    Ok(())
}

/// The Pushgateway URL of the run's group: job `vault`, grouped by profile, host and
/// repository (values base64url-encoded, as the Pushgateway API allows for any bytes).
pub fn push_url(base: &str, id: &Identity) -> String {
    let enc = |v: &str| {
        if v.is_empty() {
            "=".to_string()
        } else {
            base64::engine::general_purpose::URL_SAFE.encode(v)
        }
    };
    format!(
        "{}/metrics/job/vault/profile@base64/{}/host@base64/{}/repository@base64/{}",
        base.trim_end_matches('/'),
        enc(&id.profile),
        enc(&id.host),
        enc(&id.repository)
    )
}

/// Pushes the run's samples (POST: only the metrics pushed are replaced in the group, so
/// the other commands' metrics and the last success of a failed run stay).
pub fn push(base: &str, id: &Identity, samples: &[Gauge]) -> Result<()> {
    let url = push_url(base, id);
    let body = render_run(id, samples);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the HTTP client")?;
    let status = rt.block_on(async {
        reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(30))
            .build()?
            .post(&url)
            .header("Content-Type", "text/plain; version=0.0.4")
            .body(body)
            .send()
            .await
            .map(|r| r.status())
    });
    let status =
        status.with_context(|| format!("pushing metrics to {}", super::profile::mask_url(base)))?;
    if !status.is_success() {
        bail!(
            "pushing metrics to {}: the Pushgateway answered {status}",
            super::profile::mask_url(base)
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(command: &str) -> Identity {
        Identity {
            command: command.into(),
            profile: "db".into(),
            host: "h".into(),
            repository: "/r".into(),
        }
    }

    #[test]
    fn a_failed_run_keeps_the_last_success_and_other_commands() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("vault.prom");
        let snap = id("snapshot");
        write_file(&f, &snap, &run_samples(&snap, 100.0, 1.0, 0, &[])).unwrap();
        let prune = id("prune");
        write_file(&f, &prune, &run_samples(&prune, 150.0, 1.0, 0, &[])).unwrap();
        write_file(&f, &snap, &run_samples(&snap, 200.0, 1.0, 1, &[])).unwrap();
        let text = std::fs::read_to_string(&f).unwrap();
        let line = |name: &str| {
            text.lines()
                .find(|l| l.starts_with(name) && l.contains('{'))
                .map(|l| l.rsplit(' ').next().unwrap().to_string())
        };
        assert_eq!(
            line("vault_snapshot_last_success_timestamp_seconds").as_deref(),
            Some("100")
        );
        assert_eq!(
            line("vault_snapshot_last_run_timestamp_seconds").as_deref(),
            Some("200")
        );
        assert_eq!(line("vault_snapshot_exit_code").as_deref(), Some("1"));
        assert_eq!(
            line("vault_prune_last_run_timestamp_seconds").as_deref(),
            Some("150")
        );
        assert_eq!(
            text.matches("# TYPE vault_snapshot_exit_code gauge")
                .count(),
            1
        );
    }

    #[test]
    fn label_values_are_escaped_and_urls_encoded() {
        let mut i = id("check");
        i.repository = "s3:b/p\"x".into();
        let t = render_run(&i, &run_samples(&i, 1.0, 1.0, 0, &[]));
        assert!(t.contains(r#"repository="s3:b/p\"x""#), "{t}");
        let u = push_url("http://gw:9091/", &i);
        assert!(
            u.starts_with("http://gw:9091/metrics/job/vault/profile@base64/ZGI="),
            "{u}"
        );
        assert!(!u["http://".len()..].contains("//"), "{u}");
    }
}
