//! A real nginx (Debian's, installed by `scripts/test`): running the README's forward-auth
//! configuration with its ports pointed at the test's Tollgate and product, or serving files as
//! a product of its own, or balancing between instances. Stopped when dropped.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::redis_server::free_port;

pub struct Nginx {
    child: Child,
    pub url: String,
    dir: PathBuf,
}

/// The server block of the README's nginx example.
fn readme_server_block() -> String {
    readme_block("# tollgate-nginx-example")
}

/// The README's nginx block that starts with the comment `marker`.
fn readme_block(marker: &str) -> String {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md")).unwrap();
    let start = readme.find(&format!("```nginx\n{marker}\n")).expect("the README's nginx example") + "```nginx\n".len();
    let end = start + readme[start..].find("```").unwrap();
    readme[start..end].to_string()
}

impl Nginx {
    /// nginx in front of `product`, asking the Tollgate at `tollgate` (both `http://host:port`).
    pub fn start(tollgate: &str, product: &str) -> Nginx {
        Nginx::run(|port| {
            readme_server_block()
                .replace("listen 8080;", &format!("listen 127.0.0.1:{port};"))
                .replace("http://127.0.0.1:3000", tollgate)
                .replace("server 127.0.0.1:3000;", &format!("server {};", tollgate.trim_start_matches("http://")))
                .replace("http://127.0.0.1:8000", product)
        })
    }

    /// nginx serving the files under `root` (as a product of its own: it decodes escapes,
    /// resolves `..` and merges slashes before it looks for a file).
    pub fn serve_files(root: &std::path::Path) -> Nginx {
        Nginx::run(|port| format!("server {{ listen 127.0.0.1:{port}; root {}; }}", root.display()))
    }

    /// nginx balancing between `upstreams` (`host:port` each), passing the client's address in
    /// `X-Forwarded-For` as a proxy in front of Tollgate does.
    pub fn balance(upstreams: &[String]) -> Nginx {
        let servers: String = upstreams.iter().map(|u| format!("server {u};")).collect();
        Nginx::run(|port| {
            format!(
                "upstream tollgates {{ {servers} }}\nserver {{ listen 127.0.0.1:{port}; location / {{ proxy_pass http://tollgates; \
                 proxy_set_header Host $http_host; proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for; }} }}"
            )
        })
    }

    /// The README's load balancer (`# tollgate-nginx-balancer`) in front of `upstreams`
    /// (`host:port` each), each with the example's server parameters.
    pub fn readme_balancer(upstreams: &[String]) -> Nginx {
        let block = readme_block("# tollgate-nginx-balancer");
        let example_servers: Vec<&str> = block.lines().filter(|l| l.trim_start().starts_with("server 10.0.0.")).collect();
        let parameters = example_servers[0].trim_start().trim_start_matches("server 10.0.0.11:3000");
        let servers: String = upstreams.iter().map(|u| format!("    server {u}{parameters}\n")).collect();
        let mut config: String = block.lines().filter(|l| !example_servers.contains(l)).map(|l| format!("{l}\n")).collect();
        config = config.replacen("    keepalive", &format!("{servers}    keepalive"), 1);
        Nginx::run(|port| config.replace("listen 8080;", &format!("listen 127.0.0.1:{port};")))
    }

    /// What nginx logged as errors (failed upstream connections, say).
    pub fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("error.log")).unwrap_or_default()
    }

    fn run(server: impl FnOnce(u16) -> String) -> Nginx {
        let port = free_port();
        let dir = std::env::temp_dir().join(format!("tollgate-nginx-{}", tollgate_core::random_token(8)));
        std::fs::create_dir_all(&dir).unwrap();
        let server = server(port);
        let d = dir.display();
        let config = format!(
            "worker_processes 1;\nerror_log {d}/error.log;\npid {d}/nginx.pid;\nevents {{ worker_connections 1024; }}\n\
             http {{\n access_log off;\n client_body_temp_path {d}/body;\n proxy_temp_path {d}/proxy;\n fastcgi_temp_path {d}/fastcgi;\n \
             uwsgi_temp_path {d}/uwsgi;\n scgi_temp_path {d}/scgi;\n{server}\n}}\n"
        );
        std::fs::write(dir.join("nginx.conf"), config).unwrap();
        let binary = ["/usr/sbin/nginx", "nginx"].into_iter().find(|b| std::path::Path::new(b).exists()).unwrap_or("nginx");
        let child = Command::new(binary)
            .args(["-p", &dir.display().to_string(), "-c", &dir.join("nginx.conf").display().to_string(), "-g", "daemon off;"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("nginx starts (scripts/test installs it)");
        let nginx = Nginx { child, url: format!("http://127.0.0.1:{port}"), dir };
        if test_support::listening_within(port, Duration::from_secs(5)) {
            return nginx;
        }
        panic!("nginx did not listen: {}", std::fs::read_to_string(nginx.dir.join("error.log")).unwrap_or_default());
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGTERM: the master stops its workers too (SIGKILL would leave them running).
        // SAFETY: kill only sends a signal to the process we started.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
