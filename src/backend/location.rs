//! Repository locations: parsing `--repo` strings and `-o key=value` options, and opening the
//! matching backend.
//!
//! Forms (see the README's "Backends" section):
//!
//! | form                                | service                                   |
//! |-------------------------------------|-------------------------------------------|
//! | `/path`, `./path`, `fs:/path`       | local directory                           |
//! | `s3:BUCKET[/PREFIX]`                | S3 and S3-compatible stores               |
//! | `azblob:CONTAINER[/PREFIX]`         | Azure Blob Storage                        |
//! | `gcs:BUCKET[/PREFIX]`               | Google Cloud Storage                      |
//! | `sftp:[USER@]HOST:/PATH`            | SFTP (also `sftp://[USER@]HOST[:PORT]/PATH`) |
//! | `webdav:http[s]://HOST[:PORT]/PATH` | WebDAV                                    |
//! | `opendal:SCHEME`                    | any OpenDAL service, configured by `-o`   |
//!
//! Credentials and endpoints come from each ecosystem's usual environment variables, and `-o`
//! options override them. Nothing here logs an option value: the [`Location`]'s `Display` form
//! (used in messages) carries no secrets, and [`BackendOptions`]' `Debug` form redacts values.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::DynBackend;
use super::opendal::{OpendalBackend, OpendalOptions};
pub use super::options::BackendOptions;
use crate::{Error, Result};

/// A parsed repository location.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Location {
    /// A local directory.
    Fs(PathBuf),
    /// An S3 bucket and key prefix.
    S3 {
        /// Bucket name.
        bucket: String,
        /// Key prefix ("" for the bucket's root).
        prefix: String,
    },
    /// An Azure Blob container and prefix.
    Azblob {
        /// Container name.
        container: String,
        /// Blob name prefix.
        prefix: String,
    },
    /// A Google Cloud Storage bucket and prefix.
    Gcs {
        /// Bucket name.
        bucket: String,
        /// Object name prefix.
        prefix: String,
    },
    /// A directory on an SFTP server.
    Sftp {
        /// Login name (default: ssh's own choice).
        user: Option<String>,
        /// Host name or address.
        host: String,
        /// Port (default: ssh's own choice, normally 22).
        port: Option<u16>,
        /// Directory on the server.
        path: String,
    },
    /// A collection on a WebDAV server.
    Webdav {
        /// `http[s]://host[:port]`.
        endpoint: String,
        /// Path below the endpoint.
        path: String,
    },
    /// Any OpenDAL service, configured entirely by options.
    Opendal {
        /// OpenDAL scheme name, e.g. `oss` or `b2`.
        scheme: String,
    },
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Location::Fs(p) => write!(f, "{}", p.display()),
            Location::S3 { bucket, prefix } => write!(f, "s3:{}", join(bucket, prefix)),
            Location::Azblob { container, prefix } => {
                write!(f, "azblob:{}", join(container, prefix))
            }
            Location::Gcs { bucket, prefix } => write!(f, "gcs:{}", join(bucket, prefix)),
            Location::Sftp {
                user,
                host,
                port,
                path,
            } => {
                let user = user.as_deref().map(|u| format!("{u}@")).unwrap_or_default();
                match port {
                    Some(p) => write!(f, "sftp://{user}{host}:{p}{path}"),
                    None => write!(f, "sftp:{user}{host}:{path}"),
                }
            }
            Location::Webdav { endpoint, path } => write!(f, "webdav:{endpoint}{path}"),
            Location::Opendal { scheme } => write!(f, "opendal:{scheme}"),
        }
    }
}

fn join(a: &str, b: &str) -> String {
    if b.is_empty() {
        a.to_string()
    } else {
        format!("{a}/{b}")
    }
}

/// Splits `BUCKET/PREFIX` into its parts, normalising the prefix (no leading/trailing slash).
fn bucket_and_prefix(what: &str, s: &str) -> Result<(String, String)> {
    let s = s.trim_start_matches("//");
    let (bucket, prefix) = s.split_once('/').unwrap_or((s, ""));
    if bucket.is_empty() {
        return Err(Error::InvalidInput(format!(
            "repository location needs a {what} name"
        )));
    }
    Ok((bucket.to_string(), prefix.trim_matches('/').to_string()))
}

/// Parses a `--repo` value.
pub fn parse(s: &str) -> Result<Location> {
    if s.is_empty() {
        return Err(Error::InvalidInput("empty repository location".into()));
    }
    let Some((scheme, rest)) = s.split_once(':') else {
        return Ok(Location::Fs(PathBuf::from(s)));
    };
    match scheme {
        "fs" | "local" => Ok(Location::Fs(PathBuf::from(rest))),
        "s3" => {
            let (bucket, prefix) = bucket_and_prefix("bucket", rest)?;
            Ok(Location::S3 { bucket, prefix })
        }
        "azblob" | "azure" => {
            let (container, prefix) = bucket_and_prefix("container", rest)?;
            Ok(Location::Azblob { container, prefix })
        }
        "gcs" | "gs" => {
            let (bucket, prefix) = bucket_and_prefix("bucket", rest)?;
            Ok(Location::Gcs { bucket, prefix })
        }
        "sftp" => parse_sftp(rest),
        "webdav" => parse_webdav(rest),
        "opendal" => {
            if rest.is_empty() || !rest.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(Error::InvalidInput(format!(
                    "opendal:SCHEME needs an OpenDAL service name, got {rest:?}"
                )));
            }
            Ok(Location::Opendal {
                scheme: rest.to_string(),
            })
        }
        // A single letter before the colon is no scheme (and a path may contain colons).
        _ if scheme.len() > 1
            && scheme.chars().all(|c| c.is_ascii_alphanumeric())
            && !scheme.contains('/') =>
        {
            Err(Error::Unsupported(format!(
                "repository scheme {scheme:?} is not known; use s3:, azblob:, gcs:, sftp:, \
                 webdav:, fs: or opendal:SCHEME"
            )))
        }
        _ => Ok(Location::Fs(PathBuf::from(s))),
    }
}

fn parse_sftp(rest: &str) -> Result<Location> {
    let bad = || {
        Error::InvalidInput(format!(
            "sftp location must be sftp:[USER@]HOST:/PATH or sftp://[USER@]HOST[:PORT]/PATH, got \
             {rest:?}"
        ))
    };
    let (authority, path, port) = if let Some(url) = rest.strip_prefix("//") {
        let (authority, path) = url.split_once('/').ok_or_else(bad)?;
        let (authority, port) = match authority.rsplit_once(':') {
            Some((a, p)) if !a.ends_with(']') || a.starts_with('[') => {
                (a, Some(p.parse::<u16>().map_err(|_| bad())?))
            }
            _ => (authority, None),
        };
        (authority.to_string(), format!("/{path}"), port)
    } else {
        let (authority, path) = rest.split_once(':').ok_or_else(bad)?;
        (authority.to_string(), path.to_string(), None)
    };
    let (user, host) = match authority.rsplit_once('@') {
        Some((u, h)) => (Some(u.to_string()), h.to_string()),
        None => (None, authority),
    };
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    if host.is_empty() || path.is_empty() || user.as_deref() == Some("") {
        return Err(bad());
    }
    let path = format!("/{}", path.trim_matches('/'));
    Ok(Location::Sftp {
        user,
        host,
        port,
        path,
    })
}

fn parse_webdav(rest: &str) -> Result<Location> {
    let bad = |why: &str| {
        Error::InvalidInput(format!(
            "webdav location must be webdav:http[s]://HOST[:PORT]/PATH ({why})"
        ))
    };
    let (proto, after) = rest
        .split_once("://")
        .ok_or_else(|| bad("no http:// or https://"))?;
    if proto != "http" && proto != "https" {
        return Err(bad("the protocol must be http or https"));
    }
    let (host, path) = after.split_once('/').unwrap_or((after, ""));
    if host.is_empty() {
        return Err(bad("no host"));
    }
    if host.contains('@') {
        // Credentials in the URL would end up in shell history, process lists and messages.
        return Err(bad(
            "put credentials in -o username=… -o password=… or VAULT_WEBDAV_USERNAME / \
             VAULT_WEBDAV_PASSWORD, not in the URL",
        ));
    }
    Ok(Location::Webdav {
        endpoint: format!("{proto}://{host}"),
        path: format!("/{}", path.trim_matches('/')),
    })
}

/// Environment variables a location may read credentials and endpoints from. The library
/// never reads the process environment itself: the caller (the CLI) captures these names and
/// passes them in an [`Environment`].
pub const ENV_VARS: &[&str] = &[
    "AWS_ENDPOINT_URL_S3",
    "AWS_ENDPOINT_URL",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "AZURE_STORAGE_CONNECTION_STRING",
    "AZURE_STORAGE_ACCOUNT",
    "AZURE_STORAGE_ACCOUNT_NAME",
    "AZURE_STORAGE_ENDPOINT",
    "AZURE_STORAGE_KEY",
    "AZURE_STORAGE_ACCOUNT_KEY",
    "AZURE_STORAGE_SAS_TOKEN",
    "GOOGLE_APPLICATION_CREDENTIALS",
    "STORAGE_EMULATOR_HOST",
    "VAULT_SFTP_KEY",
    "VAULT_WEBDAV_USERNAME",
    "VAULT_WEBDAV_PASSWORD",
    "VAULT_WEBDAV_TOKEN",
];

/// Values of the [`ENV_VARS`] the caller chose to pass (empty values count as unset).
#[derive(Clone, Default)]
pub struct Environment {
    vars: BTreeMap<String, String>,
}

impl std::fmt::Debug for Environment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Values may be secrets.
        f.debug_list().entries(self.vars.keys()).finish()
    }
}

impl Environment {
    /// An environment from name/value pairs.
    pub fn from_pairs<K: Into<String>, V: Into<String>>(
        pairs: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        Self {
            vars: pairs
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .filter(|(_, v)| !v.is_empty())
                .collect(),
        }
    }

    fn get(&self, name: &str) -> Option<String> {
        self.vars.get(name).cloned()
    }
}

/// How to open a backend beyond its location and options.
#[derive(Clone, Debug, Default)]
pub struct OpenSettings {
    /// Credentials and endpoints from the environment.
    pub env: Environment,
    /// Retry tuning.
    pub retry: super::retry::RetryOptions,
    /// Create a local repository directory if it does not exist (only `init` does).
    pub create: bool,
    /// Never delete anything (`--append-only`).
    pub append_only: bool,
    /// Upload limit in bytes per second.
    pub limit_upload: Option<u64>,
    /// Download limit in bytes per second.
    pub limit_download: Option<u64>,
    /// Fault injection beneath the retries (test builds only).
    #[cfg(feature = "fault-injection")]
    pub faults: Option<super::fault::FaultOptions>,
}

/// Opens the backend for a location, with retries of transient failures.
pub fn open(loc: &Location) -> Result<DynBackend> {
    open_with(loc, &BackendOptions::default(), &OpenSettings::default())
}

/// [`open`] with `-o` options and settings.
pub fn open_with(
    loc: &Location,
    options: &BackendOptions,
    settings: &OpenSettings,
) -> Result<DynBackend> {
    let mut options = options.clone();
    let lock_days =
        super::objectlock::take_option(&mut options, matches!(loc, Location::S3 { .. }))?;
    #[allow(unused_mut)]
    let mut b = open_raw(loc, options, settings)?;
    #[cfg(feature = "fault-injection")]
    if let Some(f) = &settings.faults {
        b = Arc::new(super::fault::FaultBackend::new(b, f.clone()));
    }
    let mut b: DynBackend = Arc::new(super::retry::RetryBackend::new(b, settings.retry));
    b = super::objectlock::wrap(b, lock_days);
    if settings.append_only {
        b = Arc::new(super::appendonly::AppendOnlyBackend::new(b));
    }
    if settings.limit_upload.is_some() || settings.limit_download.is_some() {
        return Ok(Arc::new(super::throttle::ThrottleBackend::new(
            b,
            settings.limit_upload,
            settings.limit_download,
        )));
    }
    Ok(b)
}

fn duration_option(opts: &mut BackendOptions, key: &str, default: u64) -> Result<Duration> {
    match opts.take(key) {
        None => Ok(Duration::from_secs(default)),
        Some(v) => humantime::parse_duration(&v).map_err(|e| {
            Error::InvalidInput(format!("backend option {key}={v:?} is no duration: {e}"))
        }),
    }
}

/// How to build the OpenDAL operator(s) for a location.
#[derive(Clone, Debug)]
pub struct ServiceConfig {
    /// OpenDAL scheme name.
    pub scheme: String,
    /// The service's configuration (may hold secrets: never print it).
    pub config: BTreeMap<String, String>,
    /// Storage class for packs of data blobs.
    pub storage_class: Option<String>,
    /// Request behaviour.
    pub options: OpendalOptions,
}

/// The OpenDAL scheme and configuration for a location: environment first, `-o` on top.
/// Options the service does not know are refused (a typo must not be silently ignored).
pub fn service_config(
    loc: &Location,
    mut opts: BackendOptions,
    environment: &Environment,
) -> Result<ServiceConfig> {
    let env = |name: &str| environment.get(name);
    let storage_class = opts.take("storage_class");
    let timeout = duration_option(&mut opts, "timeout", 60)?;
    let io_timeout = duration_option(&mut opts, "io_timeout", 120)?;
    let mut cfg = BTreeMap::new();
    let mut put = |k: &str, v: Option<String>| {
        if let Some(v) = v {
            cfg.insert(k.to_string(), v);
        }
    };
    let scheme = match loc {
        Location::Fs(_) => {
            if let Some(k) = opts.map.keys().next() {
                return Err(Error::InvalidInput(format!(
                    "backend option {k:?} is not known for local repositories"
                )));
            }
            return Err(Error::InvalidInput(
                "local repositories are opened directly".into(),
            ));
        }
        Location::S3 { bucket, prefix } => {
            put("bucket", Some(bucket.clone()));
            put("root", Some(format!("/{prefix}")));
            put(
                "endpoint",
                env("AWS_ENDPOINT_URL_S3").or_else(|| env("AWS_ENDPOINT_URL")),
            );
            put(
                "region",
                Some(
                    env("AWS_REGION")
                        .or_else(|| env("AWS_DEFAULT_REGION"))
                        .unwrap_or_else(|| "us-east-1".into()),
                ),
            );
            "s3"
        }
        Location::Azblob { container, prefix } => {
            put("container", Some(container.clone()));
            put("root", Some(format!("/{prefix}")));
            let conn = env("AZURE_STORAGE_CONNECTION_STRING")
                .map(|c| parse_connection_string(&c))
                .unwrap_or_default();
            let account = env("AZURE_STORAGE_ACCOUNT")
                .or_else(|| env("AZURE_STORAGE_ACCOUNT_NAME"))
                .or_else(|| conn.get("AccountName").cloned());
            put(
                "endpoint",
                env("AZURE_STORAGE_ENDPOINT")
                    .or_else(|| conn.get("BlobEndpoint").cloned())
                    .or_else(|| {
                        account
                            .as_ref()
                            .map(|a| format!("https://{a}.blob.core.windows.net"))
                    }),
            );
            put("account_name", account);
            put(
                "account_key",
                env("AZURE_STORAGE_KEY")
                    .or_else(|| env("AZURE_STORAGE_ACCOUNT_KEY"))
                    .or_else(|| conn.get("AccountKey").cloned()),
            );
            put(
                "sas_token",
                env("AZURE_STORAGE_SAS_TOKEN")
                    .or_else(|| conn.get("SharedAccessSignature").cloned()),
            );
            "azblob"
        }
        Location::Gcs { bucket, prefix } => {
            put("bucket", Some(bucket.clone()));
            put("root", Some(format!("/{prefix}")));
            put("credential_path", env("GOOGLE_APPLICATION_CREDENTIALS"));
            // The convention of Google's own client libraries for emulators.
            put(
                "endpoint",
                env("STORAGE_EMULATOR_HOST").map(|h| {
                    if h.contains("://") {
                        h
                    } else {
                        format!("http://{h}")
                    }
                }),
            );
            "gcs"
        }
        Location::Sftp {
            user,
            host,
            port,
            path,
        } => {
            let user_at = user.as_deref().map(|u| format!("{u}@")).unwrap_or_default();
            let host_s = if host.contains(':') {
                format!("[{host}]")
            } else {
                host.clone()
            };
            let port_s = port.map(|p| format!(":{p}")).unwrap_or_default();
            put("endpoint", Some(format!("ssh://{user_at}{host_s}{port_s}")));
            put("root", Some(path.clone()));
            put("key", env("VAULT_SFTP_KEY"));
            "sftp"
        }
        Location::Webdav { endpoint, path } => {
            put("endpoint", Some(endpoint.clone()));
            put("root", Some(path.clone()));
            put("username", env("VAULT_WEBDAV_USERNAME"));
            put("password", env("VAULT_WEBDAV_PASSWORD"));
            put("token", env("VAULT_WEBDAV_TOKEN"));
            "webdav"
        }
        Location::Opendal { scheme } => scheme.as_str(),
    };
    if let Some(known) = super::service_keys::known_keys(scheme) {
        if let Some(k) = opts.map.keys().find(|k| !known.contains(&k.as_str())) {
            return Err(Error::InvalidInput(format!(
                "backend option {k:?} is not known to the {scheme} service (known: {}, and vault's \
                 own storage_class, timeout, io_timeout)",
                known.join(", ")
            )));
        }
    }
    for (k, v) in opts.map {
        cfg.insert(k, v);
    }
    // Object stores publish an object only when its upload completes; others need a rename.
    let atomic_puts = matches!(
        scheme,
        "s3" | "azblob" | "gcs" | "memory" | "oss" | "cos" | "obs"
    );
    if storage_class.is_some() && !matches!(scheme, "s3" | "gcs") {
        return Err(Error::Unsupported(format!(
            "storage_class is supported for s3 and gcs repositories, not {scheme}"
        )));
    }
    Ok(ServiceConfig {
        scheme: scheme.to_string(),
        config: cfg,
        storage_class,
        options: OpendalOptions {
            timeout: Some(timeout),
            io_timeout: Some(io_timeout),
            atomic_rename: !atomic_puts,
        },
    })
}

/// `Key=Value;Key=Value` (Azure connection strings).
fn parse_connection_string(s: &str) -> BTreeMap<String, String> {
    s.split(';')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

fn open_raw(
    loc: &Location,
    options: BackendOptions,
    settings: &OpenSettings,
) -> Result<DynBackend> {
    if let Location::Fs(p) = loc {
        if let Some(k) = options.map.keys().next() {
            return Err(Error::InvalidInput(format!(
                "backend option {k:?} is not known for local repositories"
            )));
        }
        let abs = if p.is_absolute() {
            p.clone()
        } else {
            std::env::current_dir()
                .map_err(|e| Error::io(".", e))?
                .join(p)
        };
        return Ok(Arc::new(OpendalBackend::fs(&abs, settings.create)?));
    }
    let sc = service_config(loc, options, &settings.env)?;
    Ok(Arc::new(OpendalBackend::service(
        &sc.scheme,
        sc.config,
        sc.storage_class,
        loc.to_string(),
        &sc.options,
    )?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_local_forms() {
        assert_eq!(
            parse("/srv/repo").unwrap(),
            Location::Fs("/srv/repo".into())
        );
        assert_eq!(
            parse("fs:/srv/repo").unwrap(),
            Location::Fs("/srv/repo".into())
        );
        assert_eq!(parse("rel/repo").unwrap(), Location::Fs("rel/repo".into()));
        assert_eq!(parse("./a:b").unwrap(), Location::Fs("./a:b".into()));
        assert!(parse("").is_err());
        assert!(parse("ftp:host/x").is_err());
    }

    #[test]
    fn parses_object_stores() {
        assert_eq!(
            parse("s3:bkt/some/prefix/").unwrap(),
            Location::S3 {
                bucket: "bkt".into(),
                prefix: "some/prefix".into()
            }
        );
        assert_eq!(
            parse("s3:bkt").unwrap(),
            Location::S3 {
                bucket: "bkt".into(),
                prefix: "".into()
            }
        );
        assert!(parse("s3:").is_err());
        assert!(parse("s3:/x").is_err());
        assert_eq!(
            parse("azblob:c/p").unwrap(),
            Location::Azblob {
                container: "c".into(),
                prefix: "p".into()
            }
        );
        assert_eq!(
            parse("gcs:b/p/q").unwrap(),
            Location::Gcs {
                bucket: "b".into(),
                prefix: "p/q".into()
            }
        );
        assert_eq!(parse("gcs:b/p/q").unwrap().to_string(), "gcs:b/p/q");
    }

    #[test]
    fn parses_sftp_and_webdav() {
        assert_eq!(
            parse("sftp:bob@host.example:/srv/repo").unwrap(),
            Location::Sftp {
                user: Some("bob".into()),
                host: "host.example".into(),
                port: None,
                path: "/srv/repo".into()
            }
        );
        assert_eq!(
            parse("sftp://bob@127.0.0.1:2222/srv/repo").unwrap(),
            Location::Sftp {
                user: Some("bob".into()),
                host: "127.0.0.1".into(),
                port: Some(2222),
                path: "/srv/repo".into()
            }
        );
        assert_eq!(
            parse("sftp://[::1]:22/r").unwrap(),
            Location::Sftp {
                user: None,
                host: "::1".into(),
                port: Some(22),
                path: "/r".into()
            }
        );
        assert!(parse("sftp:hostonly").is_err());
        assert!(parse("sftp://h:notaport/x").is_err());
        assert_eq!(
            parse("webdav:https://dav.example:8443/backups/vault/").unwrap(),
            Location::Webdav {
                endpoint: "https://dav.example:8443".into(),
                path: "/backups/vault".into()
            }
        );
        assert!(parse("webdav:https://user:secret@dav.example/x").is_err());
        assert!(parse("webdav:ftp://dav.example/x").is_err());
        assert_eq!(
            parse("opendal:oss").unwrap(),
            Location::Opendal {
                scheme: "oss".into()
            }
        );
        assert!(parse("opendal:").is_err());
    }

    #[test]
    fn options_override_environment_and_hide_values() {
        let opts = BackendOptions::parse(&[
            "endpoint=http://127.0.0.1:9",
            "secret_access_key=hunter2",
            "storage_class=STANDARD_IA",
            "timeout=5s",
        ])
        .unwrap();
        assert!(!format!("{opts:?}").contains("hunter2"));
        let loc = parse("s3:b/p").unwrap();
        let ServiceConfig {
            scheme,
            config: cfg,
            storage_class: class,
            options: od,
        } = service_config(&loc, opts, &Environment::default()).unwrap();
        assert_eq!(scheme, "s3");
        assert_eq!(cfg["endpoint"], "http://127.0.0.1:9");
        assert_eq!(cfg["bucket"], "b");
        assert_eq!(cfg["root"], "/p");
        assert!(!cfg.contains_key("storage_class"));
        assert_eq!(class.as_deref(), Some("STANDARD_IA"));
        assert_eq!(od.timeout, Some(Duration::from_secs(5)));
        assert!(!od.atomic_rename);
        assert!(BackendOptions::parse(&["novalue"]).is_err());
        assert!(
            BackendOptions::parse(&["timeout=soon"])
                .and_then(|o| service_config(&loc, o, &Environment::default()))
                .is_err()
        );
        // storage classes only where the service has them
        let o = BackendOptions::parse(&["storage_class=COOL"]).unwrap();
        assert!(service_config(&parse("azblob:c").unwrap(), o, &Environment::default()).is_err());
        let o = BackendOptions::parse(&["bogus=1"]).unwrap();
        let e = service_config(&loc, o, &Environment::default()).unwrap_err();
        assert!(e.to_string().contains("bogus"), "{e}");
    }

    #[test]
    fn gcs_and_sftp_configuration() {
        let ServiceConfig {
            scheme,
            config: cfg,
            options: od,
            ..
        } = service_config(
            &parse("gcs:bucket/x").unwrap(),
            BackendOptions::parse(&["credential_path=/k.json"]).unwrap(),
            &Environment::default(),
        )
        .unwrap();
        assert_eq!(scheme, "gcs");
        assert_eq!(cfg["bucket"], "bucket");
        assert_eq!(cfg["root"], "/x");
        assert_eq!(cfg["credential_path"], "/k.json");
        assert!(!od.atomic_rename);
        let ServiceConfig {
            scheme,
            config: cfg,
            options: od,
            ..
        } = service_config(
            &parse("sftp://u@h:2200/srv/r").unwrap(),
            BackendOptions::default(),
            &Environment::from_pairs([("VAULT_SFTP_KEY", "/id")]),
        )
        .unwrap();
        assert_eq!(scheme, "sftp");
        assert_eq!(cfg["endpoint"], "ssh://u@h:2200");
        assert_eq!(cfg["root"], "/srv/r");
        assert_eq!(cfg["key"], "/id");
        assert!(od.atomic_rename);
    }
}
