//! Configuration file and profiles (`--config`, `--profile`).
//!
//! A TOML file holds named profiles; a profile may `inherit` another (deep merge: tables merge,
//! every other value of the child replaces the parent's). A profile is applied to the parsed
//! command line: a value typed on the command line always wins, then the profile, then the
//! environment (`VAULT_REPOSITORY` …), then the built-in default. The file is parsed into typed
//! structures that refuse unknown keys, so a typo names the file, line and key.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};
use clap::ArgMatches;
use clap::parser::ValueSource;
use serde::{Deserialize, Serialize};

/// The configuration file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    #[serde(default)]
    profiles: BTreeMap<String, Profile>,
}

/// One command or several, run by `sh -c`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(untagged)]
pub enum Commands {
    /// One shell command.
    One(String),
    /// Several, run in order (the first failure stops the rest).
    Many(Vec<String>),
}

impl Commands {
    /// The commands in order.
    pub fn list(&self) -> Vec<String> {
        match self {
            Commands::One(c) => vec![c.clone()],
            Commands::Many(v) => v.clone(),
        }
    }
}

/// Hooks: shell commands run around a command.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Hooks {
    /// Before the command; a failure aborts the run (nothing is done, exit 1).
    pub before: Option<Commands>,
    /// After a successful run; a failure makes the exit code 1.
    pub after: Option<Commands>,
    /// After a failed run (any non-zero exit code, anomalies included).
    pub failure: Option<Commands>,
    /// Always, last.
    pub finally: Option<Commands>,
    /// A hook still running after this long is killed (humantime, default 10m).
    pub timeout: Option<String>,
}

/// `[profiles.NAME.snapshot]`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SnapshotSection {
    /// Files and directories to back up.
    pub paths: Option<Vec<PathBuf>>,
    /// A command whose standard output is backed up (e.g. `["pg_dump", "shop"]`).
    pub stdin_command: Option<Vec<String>>,
    /// File name of the stream in the snapshot.
    pub stdin_name: Option<String>,
    /// Exclude globs.
    pub exclude: Option<Vec<String>>,
    /// Files of exclude globs.
    pub exclude_file: Option<Vec<PathBuf>>,
    /// Tags of the snapshot.
    pub tags: Option<Vec<String>>,
    /// Host name recorded instead of the machine's.
    pub host: Option<String>,
    /// Do not cross file-system boundaries.
    pub one_file_system: Option<bool>,
    /// Hooks of `snapshot` only.
    pub hooks: Option<Hooks>,
}

/// `[profiles.NAME.retention]`: the policy of `forget` and `prune`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Retention {
    pub keep_last: Option<u32>,
    pub keep_hourly: Option<u32>,
    pub keep_daily: Option<u32>,
    pub keep_weekly: Option<u32>,
    pub keep_monthly: Option<u32>,
    pub keep_yearly: Option<u32>,
    /// A span such as `30d`.
    pub keep_within: Option<String>,
    pub keep_tag: Option<Vec<String>>,
    /// `host,paths` (default), `host`, `tags`, … or `""`.
    pub group_by: Option<String>,
}

/// `[profiles.NAME.prune]`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PruneSection {
    /// `5%`, a size, or `unlimited`.
    pub max_unused: Option<String>,
    pub hooks: Option<Hooks>,
}

/// `[profiles.NAME.forget]`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ForgetSection {
    pub hooks: Option<Hooks>,
}

/// `[profiles.NAME.check]`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CheckSection {
    /// Read every pack.
    pub verify_data: Option<bool>,
    /// `n/m`, `10%` or a size.
    pub verify_data_subset: Option<String>,
    /// Run a restore test with every check.
    pub restore_test: Option<bool>,
    /// Share of the files the restore test restores (`10%`).
    pub restore_test_sample: Option<String>,
    /// Scratch directory of the restore test.
    pub restore_test_target: Option<PathBuf>,
    pub hooks: Option<Hooks>,
}

/// A repository `copy` replicates into.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CopyTarget {
    pub repository: String,
    pub options: Option<BTreeMap<String, String>>,
    pub password_file: Option<PathBuf>,
    pub password_command: Option<String>,
}

/// `[profiles.NAME.copy]`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CopySection {
    pub targets: Option<Vec<CopyTarget>>,
    pub hooks: Option<Hooks>,
}

/// `[profiles.NAME.anomaly]`: thresholds of the size anomaly alarm (README, "Anomalies").
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AnomalySection {
    pub enabled: Option<bool>,
    pub history: Option<u32>,
    pub shrink_percent: Option<f64>,
    pub growth_factor: Option<f64>,
    pub min_added_bytes: Option<u64>,
    pub changed_percent: Option<f64>,
    pub incompressible_percent: Option<f64>,
}

/// `[profiles.NAME.audit]`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AuditSection {
    /// How long prune keeps audit records (a span such as `7y`).
    pub retention: Option<String>,
}

/// A profile.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    /// The profile this one starts from.
    pub inherit: Option<String>,
    pub repository: Option<String>,
    /// Backend options (`-o KEY=VALUE`).
    pub options: Option<BTreeMap<String, String>>,
    pub password_file: Option<PathBuf>,
    pub password_command: Option<String>,
    pub cache_dir: Option<PathBuf>,
    /// Never delete anything (`--append-only`).
    pub append_only: Option<bool>,
    pub metrics_file: Option<PathBuf>,
    pub metrics_push: Option<String>,
    /// Hooks of every command run with this profile.
    pub hooks: Option<Hooks>,
    pub snapshot: Option<SnapshotSection>,
    pub retention: Option<Retention>,
    pub forget: Option<ForgetSection>,
    pub prune: Option<PruneSection>,
    pub check: Option<CheckSection>,
    pub copy: Option<CopySection>,
    pub anomaly: Option<AnomalySection>,
    pub audit: Option<AuditSection>,
}

/// A profile resolved from a file, with where it came from.
#[derive(Debug, Clone)]
pub struct Resolved {
    /// Profile name.
    pub name: String,
    /// The file it was read from.
    pub file: PathBuf,
    /// Effective settings (inheritance applied).
    pub profile: Profile,
}

impl Resolved {
    /// The hooks for `command`: the profile's, then the command's own.
    pub fn hooks(&self, command: &str) -> Vec<Hooks> {
        let p = &self.profile;
        let own = match command {
            "snapshot" => p.snapshot.as_ref().and_then(|s| s.hooks.clone()),
            "prune" => p.prune.as_ref().and_then(|s| s.hooks.clone()),
            "forget" => p.forget.as_ref().and_then(|s| s.hooks.clone()),
            "check" => p.check.as_ref().and_then(|s| s.hooks.clone()),
            "copy" => p.copy.as_ref().and_then(|s| s.hooks.clone()),
            _ => None,
        };
        p.hooks.clone().into_iter().chain(own).collect()
    }
}

/// The configuration file to read: `--config`, else `$VAULT_CONFIG`, else the first of
/// `~/.config/vault/vault.toml` and `/etc/vault/vault.toml` that exists.
pub fn config_path(flag: Option<&Path>) -> Result<PathBuf> {
    if let Some(f) = flag {
        return Ok(f.to_path_buf());
    }
    if let Some(f) = std::env::var_os("VAULT_CONFIG").filter(|v| !v.is_empty()) {
        return Ok(PathBuf::from(f));
    }
    let mut tried = Vec::new();
    let user = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".config")));
    if let Some(u) = user {
        tried.push(u.join("vault").join("vault.toml"));
    }
    tried.push(PathBuf::from("/etc/vault/vault.toml"));
    for t in &tried {
        if t.exists() {
            return Ok(t.clone());
        }
    }
    bail!(
        "no configuration file: give --config FILE, set VAULT_CONFIG, or create one of {}",
        tried
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    )
}

/// Reads `file` and resolves profile `name` (inheritance applied, every profile validated).
pub fn load(file: &Path, name: &str) -> Result<Resolved> {
    let text = std::fs::read_to_string(file)
        .with_context(|| format!("reading configuration file {}", file.display()))?;
    // Typed parse first: unknown keys and wrong types are reported with line and key.
    let parsed: ConfigFile =
        toml::from_str(&text).map_err(|e| anyhow!("configuration file {}: {e}", file.display()))?;
    let raw: toml::Table =
        toml::from_str(&text).map_err(|e| anyhow!("configuration file {}: {e}", file.display()))?;
    let raw_profiles = raw
        .get("profiles")
        .and_then(|p| p.as_table())
        .cloned()
        .unwrap_or_default();
    if !parsed.profiles.contains_key(name) {
        bail!(
            "configuration file {}: no profile {name:?} (profiles: {})",
            file.display(),
            parsed
                .profiles
                .keys()
                .map(String::as_str)
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    // Walk the inheritance chain from the named profile up, refusing cycles.
    let mut chain: Vec<&str> = Vec::new();
    let mut cur = name;
    loop {
        if chain.contains(&cur) {
            bail!(
                "configuration file {}: profile {name:?} inherits in a cycle ({} → {cur})",
                file.display(),
                chain.join(" → ")
            );
        }
        chain.push(cur);
        let p = parsed.profiles.get(cur).ok_or_else(|| {
            anyhow!(
                "configuration file {}: profile {:?} inherits unknown profile {cur:?}",
                file.display(),
                chain[chain.len() - 2]
            )
        })?;
        match &p.inherit {
            Some(parent) => cur = parent,
            None => break,
        }
    }
    let mut merged = toml::Table::new();
    for n in chain.iter().rev() {
        if let Some(t) = raw_profiles.get(*n).and_then(|v| v.as_table()) {
            deep_merge(&mut merged, t);
        }
    }
    merged.remove("inherit");
    let profile: Profile = toml::Value::Table(merged).try_into().map_err(|e| {
        anyhow!(
            "configuration file {}: profile {name:?}: {e}",
            file.display()
        )
    })?;
    validate(&profile).map_err(|e| {
        anyhow!(
            "configuration file {}: profile {name:?}: {e}",
            file.display()
        )
    })?;
    Ok(Resolved {
        name: name.to_string(),
        file: file.to_path_buf(),
        profile,
    })
}

fn deep_merge(into: &mut toml::Table, from: &toml::Table) {
    for (k, v) in from {
        match (into.get_mut(k), v) {
            (Some(toml::Value::Table(a)), toml::Value::Table(b)) => deep_merge(a, b),
            _ => {
                into.insert(k.clone(), v.clone());
            }
        }
    }
}

/// Checks values whose syntax the types cannot express, so that a bad value is reported
/// against the profile rather than as a command-line flag.
fn validate(p: &Profile) -> Result<()> {
    if let Some(s) = &p.snapshot
        && s.paths.as_ref().is_some_and(|v| !v.is_empty())
        && s.stdin_command.is_some()
    {
        bail!("snapshot: give `paths` or `stdin_command`, not both");
    }
    if let Some(c) = p.snapshot.as_ref().and_then(|s| s.stdin_command.as_ref())
        && c.is_empty()
    {
        bail!("snapshot.stdin_command is empty");
    }
    if let Some(r) = &p.retention {
        if let Some(w) = &r.keep_within {
            vault::pruner::Span::parse(w).map_err(|e| anyhow!("retention.keep_within: {e}"))?;
        }
        if let Some(g) = &r.group_by {
            vault::pruner::GroupBy::parse(g).map_err(|e| anyhow!("retention.group_by: {e}"))?;
        }
    }
    if let Some(m) = p.prune.as_ref().and_then(|s| s.max_unused.as_ref()) {
        vault::pruner::MaxUnused::parse(m).map_err(|e| anyhow!("prune.max_unused: {e}"))?;
    }
    if let Some(s) = p.check.as_ref().and_then(|c| c.verify_data_subset.as_ref()) {
        vault::checker::Subset::parse(s).map_err(|e| anyhow!("check.verify_data_subset: {e}"))?;
    }
    if let Some(v) = p
        .check
        .as_ref()
        .and_then(|c| c.restore_test_sample.as_ref())
    {
        super::check::parse_percent(v).map_err(|e| anyhow!("check.restore_test_sample: {e}"))?;
    }
    if let Some(r) = p.audit.as_ref().and_then(|a| a.retention.as_ref()) {
        vault::pruner::Span::parse(r).map_err(|e| anyhow!("audit.retention: {e}"))?;
    }
    if let Some(u) = &p.metrics_push
        && !(u.starts_with("http://") || u.starts_with("https://"))
    {
        bail!("metrics_push must be an http:// or https:// URL, not {u:?}");
    }
    let all_hooks = [
        p.hooks.as_ref(),
        p.snapshot.as_ref().and_then(|s| s.hooks.as_ref()),
        p.prune.as_ref().and_then(|s| s.hooks.as_ref()),
        p.forget.as_ref().and_then(|s| s.hooks.as_ref()),
        p.check.as_ref().and_then(|s| s.hooks.as_ref()),
        p.copy.as_ref().and_then(|s| s.hooks.as_ref()),
    ];
    for h in all_hooks.into_iter().flatten() {
        if let Some(t) = &h.timeout {
            humantime::parse_duration(t).map_err(|e| anyhow!("hooks.timeout {t:?}: {e}"))?;
        }
    }
    if let Some(a) = &p.anomaly {
        for (k, v) in [
            ("shrink_percent", a.shrink_percent),
            ("changed_percent", a.changed_percent),
            ("incompressible_percent", a.incompressible_percent),
        ] {
            if let Some(v) = v
                && !(0.0..=100.0).contains(&v)
            {
                bail!("anomaly.{k} must be between 0 and 100, not {v}");
            }
        }
        if let Some(g) = a.growth_factor
            && g.partial_cmp(&1.0) != Some(std::cmp::Ordering::Greater)
        {
            bail!("anomaly.growth_factor must be greater than 1, not {g}");
        }
    }
    Ok(())
}

/// Whether an argument was typed on the command line (flags beat the profile; the
/// environment and defaults do not).
pub fn typed(m: &ArgMatches, id: &str) -> bool {
    matches!(
        m.try_get_raw(id).ok().flatten().and(m.value_source(id)),
        Some(ValueSource::CommandLine)
    )
}

/// Sets `dst` from the profile unless the flag was typed.
pub fn fill<T>(m: &ArgMatches, id: &str, dst: &mut T, value: Option<T>) {
    if !typed(m, id)
        && let Some(v) = value
    {
        *dst = v;
    }
}

/// Sets an optional `dst` from the profile unless the flag was typed.
pub fn fill_opt<T>(m: &ArgMatches, id: &str, dst: &mut Option<T>, value: Option<T>) {
    if !typed(m, id)
        && let Some(v) = value
    {
        *dst = Some(v);
    }
}

/// Backend options as `KEY=VALUE` strings.
pub fn option_strings(o: &BTreeMap<String, String>) -> Vec<String> {
    o.iter().map(|(k, v)| format!("{k}={v}")).collect()
}

/// Whether a backend option key names a secret (masked by `config show`).
fn is_secret_key(k: &str) -> bool {
    let k = k.to_ascii_lowercase();
    ["secret", "password", "token", "key", "credential", "sas"]
        .iter()
        .any(|s| k.contains(s))
}

/// Masks the secrets of a profile for display.
pub fn masked(p: &Profile) -> Profile {
    let mut p = p.clone();
    let mask = |o: &mut Option<BTreeMap<String, String>>| {
        if let Some(o) = o {
            for (k, v) in o.iter_mut() {
                if is_secret_key(k) {
                    *v = "***".into();
                }
            }
        }
    };
    mask(&mut p.options);
    if let Some(c) = p.copy.as_mut().and_then(|c| c.targets.as_mut()) {
        for t in c {
            mask(&mut t.options);
            t.repository = mask_url(&t.repository);
        }
    }
    if let Some(r) = p.repository.as_mut() {
        *r = mask_url(r);
    }
    if let Some(u) = p.metrics_push.as_mut() {
        *u = mask_url(u);
    }
    p
}

/// Replaces the password of `scheme://user:password@host` with `***`.
pub fn mask_url(u: &str) -> String {
    if let Some(scheme_end) = u.find("://") {
        let rest = &u[scheme_end + 3..];
        let host_end = rest.find('/').unwrap_or(rest.len());
        if let Some(at) = rest[..host_end].rfind('@')
            && let Some(colon) = rest[..at].find(':')
        {
            return format!(
                "{}{}:***{}",
                &u[..scheme_end + 3],
                &rest[..colon],
                &rest[at..]
            );
        }
    }
    u.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(text: &str) -> (tempfile::TempDir, PathBuf) {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("vault.toml");
        std::fs::write(&f, text).unwrap();
        (d, f)
    }

    #[test]
    fn inheritance_merges_tables_and_replaces_values() {
        let (_d, f) = write(
            r#"
[profiles.base]
repository = "/srv/a"
options = { a = "1" }
[profiles.base.retention]
keep_daily = 7
keep_weekly = 4
[profiles.db]
inherit = "base"
options = { b = "2" }
[profiles.db.retention]
keep_daily = 30
"#,
        );
        let r = load(&f, "db").unwrap();
        assert_eq!(r.profile.repository.as_deref(), Some("/srv/a"));
        let o = r.profile.options.unwrap();
        assert_eq!(o.len(), 2);
        let ret = r.profile.retention.unwrap();
        assert_eq!(ret.keep_daily, Some(30));
        assert_eq!(ret.keep_weekly, Some(4));
    }

    #[test]
    fn unknown_keys_wrong_types_and_cycles_are_named() {
        let (_d, f) = write("[profiles.db]\nrepository = \"/x\"\nkeep_dayly = 3\n");
        let e = format!("{:#}", load(&f, "db").unwrap_err());
        assert!(e.contains("line 3") && e.contains("keep_dayly"), "{e}");
        assert!(e.contains(&f.display().to_string()), "{e}");
        let (_d, f) = write("[profiles.db.retention]\nkeep_daily = \"many\"\n");
        let e = format!("{:#}", load(&f, "db").unwrap_err());
        assert!(e.contains("line 2") && e.contains("keep_daily"), "{e}");
        let (_d, f) = write("[profiles.a]\ninherit = \"b\"\n[profiles.b]\ninherit = \"a\"\n");
        let e = format!("{:#}", load(&f, "a").unwrap_err());
        assert!(e.contains("cycle"), "{e}");
        let (_d, f) = write("[profiles.a]\ninherit = \"zzz\"\n");
        assert!(format!("{:#}", load(&f, "a").unwrap_err()).contains("zzz"));
        let (_d, f) = write("[profiles.a.retention]\nkeep_within = \"soon\"\n");
        assert!(format!("{:#}", load(&f, "a").unwrap_err()).contains("keep_within"));
        assert!(format!("{:#}", load(&f, "nope").unwrap_err()).contains("no profile"));
    }

    #[test]
    fn secrets_are_masked() {
        let mut p = Profile {
            options: Some(BTreeMap::from([
                ("secret_access_key".to_string(), "s3cr3t".to_string()),
                ("region".to_string(), "eu".to_string()),
            ])),
            metrics_push: Some("https://u:pw@gw:9091/x".into()),
            ..Profile::default()
        };
        p = masked(&p);
        let o = p.options.unwrap();
        assert_eq!(o["secret_access_key"], "***");
        assert_eq!(o["region"], "eu");
        assert_eq!(p.metrics_push.unwrap(), "https://u:***@gw:9091/x");
    }
}
