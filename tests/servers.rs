//! Real storage servers on 127.0.0.1 for the backend tests: an S3 API (moto_server), Azure
//! Blob (Azurite), SFTP (Debian's OpenSSH server) and WebDAV (rclone serve webdav).
//!
//! `./deps.sh tests` installs them (`.ci/run` and the README's test command do that). A
//! missing server fails the test with the command that installs it: these tests never pass by
//! skipping.

#![allow(dead_code)]

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::support::Remote;

/// A server process, killed when dropped.
pub struct Server {
    child: Child,
    pub port: u16,
    pub dir: TempDir,
    /// How a repository below `prefix` on this server is reached.
    kind: Kind,
}

#[derive(Clone, Debug)]
enum Kind {
    S3 {
        bucket: String,
    },
    Azure {
        container: String,
    },
    Sftp {
        key: PathBuf,
        user: String,
    },
    Webdav,
    /// Not a storage server.
    Other,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

///
/// Ports come from below the kernel's ephemeral range (32768 and up by default), from a
/// counter shared by the tests of this process: a port the kernel handed out for `:0` can be
/// picked again as a client's source port, and a connection to a port nothing listens on yet
/// can then connect to itself, which made a server look ready before it was.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let _ = NEXT.compare_exchange(
        0,
        20_000 + (std::process::id() % 5_000) as u16 * 2,
        Ordering::SeqCst,
        Ordering::SeqCst,
    );
    loop {
        let port = NEXT.fetch_add(1, Ordering::SeqCst);
        assert!(port < 32_000, "no free port left below the ephemeral range");
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// Finds a program on PATH or in the test-tools directory `deps.sh` fills.
pub fn program(name: &str) -> PathBuf {
    let tools =
        std::env::var("VAULT_TEST_TOOLS").unwrap_or_else(|_| "/opt/vault-test-tools".into());
    let candidates = [
        PathBuf::from(&tools).join("node_modules/.bin").join(name),
        PathBuf::from(&tools).join("venv/bin").join(name),
        PathBuf::from("/usr/sbin").join(name),
    ];
    for c in candidates {
        if c.exists() {
            return c;
        }
    }
    if let Some(paths) = std::env::var_os("PATH") {
        for d in std::env::split_paths(&paths) {
            let c = d.join(name);
            if c.exists() {
                return c;
            }
        }
    }
    panic!("{name} is not installed: run `./deps.sh tests` (the README's test command does)");
}

/// Waits until the server accepts connections: it is polled, not slept on. Panics with the
/// server's log after a minute.
fn wait_ready(port: u16, child: &mut Child, log: &Path) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        // A connection to itself (source port = destination port) is not the server.
        if let Ok(s) = TcpStream::connect(("127.0.0.1", port))
            && s.local_addr().map(|a| a.port()).ok() != Some(port)
        {
            return;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "server exited ({status}): {}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!(
        "server did not listen on {port}: {}",
        std::fs::read_to_string(log).unwrap_or_default()
    );
}

fn spawn(mut cmd: Command, dir: &Path) -> (Child, PathBuf) {
    let log = dir.join("server.log");
    let f = std::fs::File::create(&log).unwrap();
    let child = cmd
        .stdin(Stdio::null())
        .stdout(f.try_clone().unwrap())
        .stderr(f)
        .spawn()
        .unwrap_or_else(|e| panic!("starting {cmd:?}: {e}"));
    (child, log)
}

fn tempdir(prefix: &str) -> TempDir {
    tempfile::Builder::new().prefix(prefix).tempdir().unwrap()
}

/// An HTTP request with curl; returns the body. Panics unless the status is 2xx. A refused
/// connection is retried for a while: moto once refused the bucket-creating request right
/// after its port had accepted the readiness probe (seen twice in hundreds of runs).
fn curl(args: &[&str]) -> String {
    let out = Command::new("curl")
        .args([
            "-sS",
            "--fail-with-body",
            "--retry",
            "8",
            "--retry-connrefused",
        ])
        .args(["--retry-max-time", "30"])
        .args(args)
        .output()
        .expect("curl runs");
    assert!(
        out.status.success(),
        "curl {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub const AZURITE_ACCOUNT: &str = "devstoreaccount1";
/// Azurite's published development key (not a secret).
pub const AZURITE_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

impl Server {
    /// moto's S3 server with a fresh bucket.
    pub fn s3() -> Server {
        let dir = tempdir("vault-s3-");
        let port = free_port();
        let mut cmd = Command::new(program("moto_server"));
        cmd.args(["-H", "127.0.0.1", "-p", &port.to_string()]);
        let (mut child, log) = spawn(cmd, dir.path());
        wait_ready(port, &mut child, &log);
        let bucket = "vault-test".to_string();
        // moto does not check signatures, so a plain request creates the bucket.
        curl(&["-X", "PUT", &format!("http://127.0.0.1:{port}/{bucket}")]);
        Server {
            child,
            port,
            dir,
            kind: Kind::S3 { bucket },
        }
    }

    /// Azurite's blob service with a fresh container.
    pub fn azurite() -> Server {
        let dir = tempdir("vault-azurite-");
        let port = free_port();
        let mut cmd = Command::new(program("azurite-blob"));
        cmd.args([
            "--blobHost",
            "127.0.0.1",
            "--blobPort",
            &port.to_string(),
            "--location",
            dir.path().to_str().unwrap(),
            "--silent",
            "--disableTelemetry",
            "--skipApiVersionCheck",
        ]);
        let (mut child, log) = spawn(cmd, dir.path());
        wait_ready(port, &mut child, &log);
        let container = "vault-test".to_string();
        create_azure_container(port, &container);
        Server {
            child,
            port,
            dir,
            kind: Kind::Azure { container },
        }
    }

    /// OpenSSH's sshd with a test key, for SFTP as the current user.
    pub fn sftp() -> Server {
        let dir = tempdir("vault-sftp-");
        let port = free_port();
        // The host key is kept in the target directory: ssh remembers it in known_hosts.
        let keys = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("sshd-keys");
        std::fs::create_dir_all(&keys).unwrap();
        let host_key = keys.join("host_ed25519");
        let user_key = keys.join("user_ed25519");
        for k in [&host_key, &user_key] {
            if !k.exists() {
                let st = Command::new("ssh-keygen")
                    .args(["-q", "-t", "ed25519", "-N", "", "-f"])
                    .arg(k)
                    .status()
                    .expect("ssh-keygen runs");
                assert!(st.success());
            }
        }
        let authorized = dir.path().join("authorized_keys");
        std::fs::copy(keys.join("user_ed25519.pub"), &authorized).unwrap();
        let user = whoami();
        let config = dir.path().join("sshd_config");
        std::fs::write(
            &config,
            format!(
                "Port {port}\nListenAddress 127.0.0.1\nHostKey {}\nAuthorizedKeysFile {}\n\
                 PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\n\
                 StrictModes no\nPermitRootLogin prohibit-password\nPidFile {}\n\
                 Subsystem sftp internal-sftp\nMaxStartups 100\nMaxSessions 100\n",
                host_key.display(),
                authorized.display(),
                dir.path().join("sshd.pid").display()
            ),
        )
        .unwrap();
        let _ = std::fs::create_dir_all("/run/sshd");
        let mut cmd = Command::new(program("sshd"));
        cmd.args(["-D", "-e", "-f"]).arg(&config);
        let (mut child, log) = spawn(cmd, dir.path());
        wait_ready(port, &mut child, &log);
        Server {
            child,
            port,
            dir,
            kind: Kind::Sftp {
                key: user_key,
                user,
            },
        }
    }

    /// rclone's WebDAV server over a fresh directory, with basic authentication.
    pub fn webdav() -> Server {
        let dir = tempdir("vault-webdav-");
        let port = free_port();
        let root = dir.path().join("root");
        std::fs::create_dir_all(&root).unwrap();
        let mut cmd = Command::new(program("rclone"));
        cmd.args(["serve", "webdav"]).arg(&root).args([
            "--addr",
            &format!("127.0.0.1:{port}"),
            "--user",
            "vault",
            "--pass",
            "dav-secret",
            "--config",
            "/dev/null",
        ]);
        let (mut child, log) = spawn(cmd, dir.path());
        wait_ready(port, &mut child, &log);
        Server {
            child,
            port,
            dir,
            kind: Kind::Webdav,
        }
    }

    /// A Prometheus Pushgateway (Debian's prometheus-pushgateway).
    pub fn pushgateway() -> Server {
        let dir = tempdir("vault-pushgateway-");
        let port = free_port();
        let mut cmd = Command::new(program("prometheus-pushgateway"));
        cmd.arg(format!("--web.listen-address=127.0.0.1:{port}"));
        let (mut child, log) = spawn(cmd, dir.path());
        wait_ready(port, &mut child, &log);
        Server {
            child,
            port,
            dir,
            kind: Kind::Other,
        }
    }

    /// The base URL of an HTTP server.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// GET of `path` on this server (curl); the body.
    pub fn get(&self, path: &str) -> String {
        curl(&[&format!("{}{path}", self.url())])
    }

    /// How to reach a repository at `prefix` on this server.
    pub fn remote(&self, prefix: &str) -> Remote {
        let port = self.port;
        match &self.kind {
            Kind::S3 { bucket } => Remote {
                location: format!("s3:{bucket}/{prefix}"),
                env: vec![
                    ("AWS_ACCESS_KEY_ID".into(), "test".into()),
                    ("AWS_SECRET_ACCESS_KEY".into(), "test".into()),
                    ("AWS_REGION".into(), "us-east-1".into()),
                    (
                        "AWS_ENDPOINT_URL".into(),
                        format!("http://127.0.0.1:{port}"),
                    ),
                ],
                options: Vec::new(),
            },
            Kind::Azure { container } => Remote {
                location: format!("azblob:{container}/{prefix}"),
                env: vec![
                    ("AZURE_STORAGE_ACCOUNT".into(), AZURITE_ACCOUNT.into()),
                    ("AZURE_STORAGE_KEY".into(), AZURITE_KEY.into()),
                    (
                        "AZURE_STORAGE_ENDPOINT".into(),
                        format!("http://127.0.0.1:{port}/{AZURITE_ACCOUNT}"),
                    ),
                ],
                options: Vec::new(),
            },
            Kind::Sftp { key, user } => {
                let root = self.dir.path().join("repos").join(prefix);
                Remote {
                    location: format!("sftp://{user}@127.0.0.1:{port}{}", root.display()),
                    env: vec![("VAULT_SFTP_KEY".into(), key.display().to_string())],
                    options: vec!["known_hosts_strategy=accept".into()],
                }
            }
            Kind::Webdav => Remote {
                location: format!("webdav:http://127.0.0.1:{port}/{prefix}"),
                env: vec![
                    ("VAULT_WEBDAV_USERNAME".into(), "vault".into()),
                    ("VAULT_WEBDAV_PASSWORD".into(), "dav-secret".into()),
                ],
                options: Vec::new(),
            },
            Kind::Other => panic!("not a storage server"),
        }
    }

    /// The S3 storage class of every object below `prefix` (moto's ListObjectsV2).
    pub fn s3_storage_classes(&self, prefix: &str) -> Vec<(String, String)> {
        let Kind::S3 { bucket } = &self.kind else {
            panic!("not an S3 server")
        };
        let xml = curl(&[&format!(
            "http://127.0.0.1:{}/{bucket}?list-type=2&prefix={prefix}&max-keys=1000",
            self.port
        )]);
        xml.split("<Contents>")
            .skip(1)
            .map(|c| {
                let field = |name: &str| {
                    c.split(&format!("<{name}>"))
                        .nth(1)
                        .and_then(|r| r.split(&format!("</{name}>")).next())
                        .unwrap_or("")
                        .to_string()
                };
                (field("Key"), field("StorageClass"))
            })
            .collect()
    }
}

fn whoami() -> String {
    let out = Command::new("id").arg("-un").output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Creates a container with a SharedKey-signed request (the signature is computed by Python's
/// standard library, which the S3 server needs anyway).
fn create_azure_container(port: u16, container: &str) {
    let script = r#"
import base64, hashlib, hmac, sys, urllib.request, email.utils
port, account, key, container = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
date = email.utils.formatdate(usegmt=True)
version = "2021-08-06"
canon_headers = f"x-ms-date:{date}\nx-ms-version:{version}\n"
canon_resource = f"/{account}/{account}/{container}\nrestype:container"
# VERB, then 11 standard headers (only Content-Type is set; a zero length is signed as "")
to_sign = "PUT\n\n\n\n\napplication/octet-stream\n" + "\n" * 6 + canon_headers + canon_resource
sig = base64.b64encode(hmac.new(base64.b64decode(key), to_sign.encode(), hashlib.sha256).digest()).decode()
req = urllib.request.Request(
    f"http://127.0.0.1:{port}/{account}/{container}?restype=container", method="PUT", data=b"",
    headers={"x-ms-date": date, "x-ms-version": version, "Content-Length": "0",
             "Content-Type": "application/octet-stream",
             "Authorization": f"SharedKey {account}:{sig}"})
urllib.request.urlopen(req)
"#;
    let out = Command::new("python3")
        .args([
            "-c",
            script,
            &port.to_string(),
            AZURITE_ACCOUNT,
            AZURITE_KEY,
            container,
        ])
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "creating the Azure container: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
