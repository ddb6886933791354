//! A real S3 server for the remote-store tests: `slotcon-s3-server` (s3s-fs) over a
//! folder on 127.0.0.1, stopped when dropped (and when the test process dies: it exits
//! when its standard input closes).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::bin;

/// The access key and secret the server is started with.
pub const KEY: (&str, &str) = ("slotcon-test", "slotcon-test-secret");

/// A running server.
pub struct S3Server {
    child: Child,
    /// Its port on 127.0.0.1.
    pub port: u16,
    /// The folder it serves (a bucket is a folder of it).
    pub root: PathBuf,
}

impl S3Server {
    /// Starts a server over `root` (created), with `args` (`--latency-ms 20`, faults).
    pub fn start(root: &Path, args: &[&str]) -> S3Server {
        std::fs::create_dir_all(root).unwrap();
        let mut child = bin("slotcon-s3-server")
            .arg(root)
            .args(["--access-key", KEY.0, "--secret-key", KEY.1])
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start slotcon-s3-server");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx.recv_timeout(Duration::from_secs(30)).unwrap_or_default();
        let port = line
            .trim()
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| {
                let _ = child.kill();
                panic!("slotcon-s3-server did not start: {line:?}")
            });
        S3Server {
            child,
            port,
            root: root.to_path_buf(),
        }
    }

    /// The endpoint URL.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// object_store's options for this server (`RemoteSettings::storage_options`).
    pub fn options(&self) -> BTreeMap<String, String> {
        [
            ("endpoint", self.endpoint()),
            ("allow_http", "true".into()),
            ("access_key_id", KEY.0.into()),
            ("secret_access_key", KEY.1.into()),
            ("region", "us-east-1".into()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }

    /// Points `cmd` at this server through the usual environment variables.
    pub fn env<'a>(&self, cmd: &'a mut Command) -> &'a mut Command {
        cmd.env("AWS_ENDPOINT_URL", self.endpoint())
            .env("AWS_ALLOW_HTTP", "true")
            .env("AWS_ACCESS_KEY_ID", KEY.0)
            .env("AWS_SECRET_ACCESS_KEY", KEY.1)
            .env("AWS_REGION", "us-east-1")
    }

    /// Creates the bucket `name` (a folder of the root).
    pub fn bucket(&self, name: &str) -> String {
        std::fs::create_dir_all(self.root.join(name)).unwrap();
        format!("s3://{name}")
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
