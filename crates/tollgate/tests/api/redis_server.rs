//! A real `redis-server` for a test: on a free loopback port, optionally durable (AOF, fsync on
//! every write), with TLS (a CA and certificate made here with openssl) or an ACL user. Stopped
//! when dropped; `kill` (SIGKILL) and `restart` keep its data directory.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

#[derive(Default)]
pub struct RedisOptions {
    /// AOF with `appendfsync always`: what survives a crash is what was acknowledged.
    pub durable: bool,
    pub tls: bool,
    /// An ACL user (the default user then needs a password nobody has).
    pub user: Option<(String, String)>,
}

pub struct RedisServer {
    child: Option<Child>,
    pub port: u16,
    pub dir: PathBuf,
    args: Vec<String>,
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

impl RedisServer {
    pub fn start() -> RedisServer {
        RedisServer::start_with(RedisOptions::default())
    }

    pub fn start_with(options: RedisOptions) -> RedisServer {
        let port = free_port();
        let dir = std::env::temp_dir().join(format!("tollgate-redis-{}", tollgate_core::random_token(10)));
        std::fs::create_dir_all(&dir).unwrap();
        let mut args: Vec<String> =
            vec!["--bind".into(), "127.0.0.1".into(), "--dir".into(), dir.display().to_string(), "--save".into(), "".into()];
        if options.durable {
            args.extend(["--appendonly", "yes", "--appendfsync", "always"].map(String::from));
        } else {
            args.extend(["--appendonly", "no"].map(String::from));
        }
        if options.tls {
            make_certificates(&dir);
            let file = |name: &str| dir.join(name).display().to_string();
            args.extend([
                "--port".into(),
                "0".into(),
                "--tls-port".into(),
                port.to_string(),
                "--tls-cert-file".into(),
                file("server.crt"),
                "--tls-key-file".into(),
                file("server.key"),
                "--tls-ca-cert-file".into(),
                file("ca.crt"),
                "--tls-auth-clients".into(),
                "no".into(),
            ]);
        } else {
            args.extend(["--port".into(), port.to_string()]);
        }
        if let Some((user, password)) = &options.user {
            // Each word of the directive is its own argument (redis-server joins them into a config line).
            args.extend(["--user".into(), user.clone(), "on".into(), format!(">{password}"), "~*".into(), "&*".into(), "+@all".into()]);
            args.extend(["--user", "default", "off"].map(String::from));
        }
        let mut server = RedisServer { child: None, port, dir, args };
        server.launch();
        server
    }

    fn launch(&mut self) {
        let child = Command::new("redis-server")
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is installed (scripts/test installs it)");
        self.child = Some(child);
        if test_support::listening_within(self.port, Duration::from_secs(5)) {
            return;
        }
        panic!("redis-server did not start on {}", self.port);
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// SIGKILL: no chance to save anything beyond what it already made durable.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Start again on the same port with the same data directory.
    pub fn restart(&mut self) {
        self.kill();
        self.launch();
    }

    /// `redis-cli` against this server (plain TCP, default user), as another app would use it.
    pub fn cli(&self, args: &[&str]) -> String {
        let out = Command::new("redis-cli").args(["-p", &self.port.to_string()]).args(args).output().expect("redis-cli is installed");
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A CA and a certificate for localhost/127.0.0.1 signed by it, in `dir`.
fn make_certificates(dir: &Path) {
    let openssl = |args: &[&str]| {
        let out = Command::new("openssl").args(args).current_dir(dir).output().expect("openssl is installed (scripts/test installs it)");
        assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
    openssl(
        &[&["req", "-x509"][..], &ec, &["-keyout", "ca.key", "-out", "ca.crt", "-days", "2", "-subj", "/CN=Tollgate Test CA"]].concat(),
    );
    openssl(&[&["req"][..], &ec, &["-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=localhost"]].concat());
    std::fs::write(dir.join("san.ext"), "subjectAltName=DNS:localhost,IP:127.0.0.1\n").unwrap();
    openssl(&[
        "x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial", "-out", "server.crt", "-days", "2",
        "-extfile", "san.ext",
    ]);
}
