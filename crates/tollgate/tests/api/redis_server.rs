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
    /// With `tls`: the directory of a CA and certificate made before (`make_certificates`), so
    /// that several servers share them; by default each makes its own in its directory.
    pub tls_files: Option<PathBuf>,
    /// An ACL user (the default user then needs a password nobody has).
    pub user: Option<(String, String)>,
    /// A node of a Redis Cluster (see [`RedisCluster`]).
    pub cluster_node: bool,
}

pub struct RedisServer {
    child: Option<Child>,
    pub port: u16,
    pub dir: PathBuf,
    args: Vec<String>,
    /// The CA certificate clients must trust, when it speaks TLS.
    pub tls_ca: Option<PathBuf>,
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

impl RedisServer {
    pub fn start() -> RedisServer {
        RedisServer::start_with(RedisOptions::default())
    }

    pub fn start_with(options: RedisOptions) -> RedisServer {
        // A cluster node also listens on its port + 10000 (the cluster bus): both must be free.
        let port = match options.cluster_node {
            false => free_port(),
            true => test_support::free_cluster_node_port(),
        };
        let dir = std::env::temp_dir().join(format!("tollgate-redis-{}", tollgate_core::random_token(10)));
        std::fs::create_dir_all(&dir).unwrap();
        let mut args: Vec<String> =
            vec!["--bind".into(), "127.0.0.1".into(), "--dir".into(), dir.display().to_string(), "--save".into(), "".into()];
        if options.durable {
            args.extend(["--appendonly", "yes", "--appendfsync", "always"].map(String::from));
        } else {
            args.extend(["--appendonly", "no"].map(String::from));
        }
        let mut tls_ca = None;
        if options.tls {
            let files = options.tls_files.clone().unwrap_or_else(|| {
                make_certificates(&dir);
                dir.clone()
            });
            let file = |name: &str| files.join(name).display().to_string();
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
            if options.cluster_node {
                args.extend(["--tls-cluster", "yes", "--tls-replication", "yes"].map(String::from));
            }
            tls_ca = Some(files.join("ca.crt"));
        } else {
            args.extend(["--port".into(), port.to_string()]);
        }
        if options.cluster_node {
            // A node that stops answering for 5 s is failed over (a manual failover is sooner); long
            // enough that a loaded test machine never fails one over by itself.
            args.extend(
                ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf", "--cluster-node-timeout", "5000"].map(String::from),
            );
        }
        if let Some((user, password)) = &options.user {
            // Each word of the directive is its own argument (redis-server joins them into a config line).
            args.extend(["--user".into(), user.clone(), "on".into(), format!(">{password}"), "~*".into(), "&*".into(), "+@all".into()]);
            args.extend(["--user", "default", "off"].map(String::from));
        }
        let mut server = RedisServer { child: None, port, dir, args, tls_ca };
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

    /// `redis-cli` against this server (TLS when it speaks it, default user), as another app would use it.
    pub fn cli(&self, args: &[&str]) -> String {
        test_support::redis_cli(self.port, self.tls_ca.as_deref(), args)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A real Redis Cluster of six `redis-server`s: three masters with a replica each, joined by
/// `redis-cli --cluster create`. Its slots can be moved (`reshard`) and a replica promoted
/// (`failover`) while clients use it.
pub struct RedisCluster {
    pub nodes: Vec<RedisServer>,
    /// With TLS: the directory of the CA and the certificate all nodes use.
    ca_dir: Option<PathBuf>,
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        if let Some(dir) = &self.ca_dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

impl RedisCluster {
    pub fn start() -> RedisCluster {
        RedisCluster::start_with(false)
    }

    /// With `tls`, clients and the nodes among themselves speak TLS, with one CA for all.
    pub fn start_with(tls: bool) -> RedisCluster {
        let files = tls.then(|| {
            let dir = std::env::temp_dir().join(format!("tollgate-redis-ca-{}", tollgate_core::random_token(10)));
            std::fs::create_dir_all(&dir).unwrap();
            make_certificates(&dir);
            dir
        });
        let options = || RedisOptions { cluster_node: true, tls, tls_files: files.clone(), ..Default::default() };
        let nodes: Vec<RedisServer> = (0..6).map(|_| RedisServer::start_with(options())).collect();
        let addresses: Vec<String> = nodes.iter().map(|node| format!("127.0.0.1:{}", node.port)).collect();
        test_support::create_redis_cluster(&addresses, files.as_ref().map(|dir| dir.join("ca.crt")).as_deref());
        let cluster = RedisCluster { nodes, ca_dir: files };
        cluster.wait_until_whole();
        cluster
    }

    /// `redis+cluster://` (`rediss+cluster://` with TLS) with every node as a seed.
    pub fn url(&self) -> String {
        let nodes: Vec<String> = self.nodes.iter().map(|node| format!("127.0.0.1:{}", node.port)).collect();
        let scheme = if self.ca_dir.is_some() { "rediss" } else { "redis" };
        format!("{scheme}+cluster://{}", nodes.join(","))
    }

    /// The CA the nodes' certificates are signed by, with TLS.
    pub fn tls_ca(&self) -> Option<PathBuf> {
        self.ca_dir.as_ref().map(|dir| dir.join("ca.crt"))
    }

    /// Until every node agrees that all slots are served and it knows three masters.
    pub fn wait_until_whole(&self) {
        let ports: Vec<u16> = self.nodes.iter().map(|node| node.port).collect();
        test_support::wait_until_redis_cluster_whole(&ports, self.tls_ca().as_deref());
    }

    /// The node whose `cluster nodes` line is `myself`, by its flags: its id and whether it is a master.
    fn role(node: &RedisServer) -> (String, bool) {
        let nodes = node.cli(&["cluster", "nodes"]);
        let line = nodes.lines().find(|l| l.contains("myself")).expect("a myself line");
        let fields: Vec<&str> = line.split_whitespace().collect();
        (fields[0].to_string(), fields[2].contains("master"))
    }

    /// The masters' node ids, with their servers' places in `nodes`.
    pub fn masters(&self) -> Vec<(usize, String)> {
        self.nodes
            .iter()
            .enumerate()
            .filter_map(|(n, node)| Some((n, Self::role(node))).filter(|(_, (_, master))| *master))
            .map(|(n, (id, _))| (n, id))
            .collect()
    }

    /// `CLUSTER FAILOVER` on a replica of the master serving `key`: the replica takes over once it
    /// has every write (a manual failover loses nothing acknowledged). Returns when the cluster
    /// is whole again with the new master.
    pub fn failover(&self, key: &str) {
        let slot = self.nodes[0].cli(&["cluster", "keyslot", key]);
        let owner = self.masters().into_iter().find(|(n, _)| self.serves(*n, &slot)).expect("a master serves the slot");
        let replica = self
            .nodes
            .iter()
            .position(|node| {
                node.cli(&["cluster", "nodes"]).lines().any(|l| l.contains("myself") && l.contains(&format!("slave {}", owner.1)))
            })
            .expect("the master has a replica");
        assert_eq!(self.nodes[replica].cli(&["cluster", "failover"]), "OK");
        for _ in 0..200 {
            if Self::role(&self.nodes[replica]).1 && !Self::role(&self.nodes[owner.0]).1 {
                self.wait_until_whole();
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("the replica did not take over");
    }

    /// Whether the node at `n` serves `slot` (its own `cluster nodes` line lists a range holding it).
    fn serves(&self, n: usize, slot: &str) -> bool {
        let slot: u16 = slot.parse().unwrap();
        let nodes = self.nodes[n].cli(&["cluster", "nodes"]);
        let line = nodes.lines().find(|l| l.contains("myself")).unwrap_or_default();
        line.split_whitespace().skip(8).any(|range| match range.split_once('-') {
            Some((a, b)) => a.parse::<u16>().is_ok_and(|a| a <= slot) && b.parse::<u16>().is_ok_and(|b| slot <= b),
            None => range.parse::<u16>() == Ok(slot),
        })
    }

    /// Move `slots` slots, with their keys, from one master to another (`redis-cli --cluster
    /// reshard`: clients meanwhile get `ASK` and `TRYAGAIN`, then `MOVED`).
    pub fn reshard(&self, slots: u32) {
        let masters = self.masters();
        let (from, to) = (&masters[0], &masters[1]);
        let moved = Command::new("redis-cli")
            .args(["--cluster", "reshard", &format!("127.0.0.1:{}", self.nodes[from.0].port)])
            .args(["--cluster-from", &from.1, "--cluster-to", &to.1, "--cluster-slots", &slots.to_string(), "--cluster-yes"])
            .output()
            .expect("redis-cli is installed");
        assert!(moved.status.success(), "redis-cli --cluster reshard: {}", String::from_utf8_lossy(&moved.stdout));
        self.wait_until_whole();
    }

    /// GET through the cluster (`redis-cli -c` follows redirects), as another app reads it.
    pub fn get(&self, key: &str) -> String {
        self.nodes[0].cli(&["-c", "get", key])
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
