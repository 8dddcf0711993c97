//! Real outside programs for tests: Debian packages installed by the project's own script
//! when missing, started on free loopback ports, and killed by pid at the end.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::process::{Guard, Running};
use super::{http, Client};

/// Installs (or finds) the programs: `("redis-server", "redis-server")` = (program, package).
pub fn ensure_packages(needs: &[(&str, &str)]) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/tools/ensure-packages.sh");
    let args: Vec<String> = needs.iter().map(|(p, pkg)| format!("{p}={pkg}")).collect();
    let status = Command::new(&script)
        .args(&args)
        .status()
        .expect("run tests/tools/ensure-packages.sh");
    assert!(status.success(), "could not install {args:?}");
}

/// The path of an installed program (also looks in /usr/sbin, which is not always on PATH).
pub fn program(name: &str) -> PathBuf {
    for dir in ["/usr/sbin", "/usr/bin", "/usr/local/bin", "/usr/local/sbin"] {
        let p = Path::new(dir).join(name);
        if p.exists() {
            return p;
        }
    }
    PathBuf::from(name)
}

/// A free loopback port (bound and released; the caller binds it next).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Waits until something accepts connections on `addr`.
pub fn wait_listening(addr: SocketAddr, what: &str) {
    let t0 = Instant::now();
    while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "{what} did not start on {addr}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A temporary directory removed at drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!(
            "tickfan-{tag}-{}-{}",
            std::process::id(),
            free_port()
        ));
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A redis-server on a loopback port, without persistence.
pub struct Redis {
    pub port: u16,
    pub guard: Option<Guard>,
}

impl Redis {
    pub fn start() -> Redis {
        let mut r = Redis {
            port: free_port(),
            guard: None,
        };
        r.restart();
        r
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kills the server (by pid): its data is gone.
    pub fn stop(&mut self) {
        self.guard = None;
    }

    /// Starts it again on the same port (empty).
    pub fn restart(&mut self) {
        self.stop();
        let child = Command::new(program("redis-server"))
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--protected-mode",
                "no",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server");
        self.guard = Some(Guard(child));
        wait_listening(
            SocketAddr::from(([127, 0, 0, 1], self.port)),
            "redis-server",
        );
    }
}

/// nginx in the foreground with a generated config, killed by pid at drop.
pub struct Nginx {
    pub port: u16,
    pub guard: Guard,
    pub dir: TempDir,
}

impl Nginx {
    /// Runs deploy/nginx.conf with its upstream servers replaced by `nodes` and its listener
    /// by a free loopback port.
    pub fn start(nodes: &[SocketAddr]) -> Nginx {
        let template = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/nginx.conf"),
        )
        .unwrap();
        let port = free_port();
        let dir = TempDir::new("nginx");
        let mut conf = String::new();
        let mut servers_done = false;
        for line in template.lines() {
            let t = line.trim_start();
            if t.starts_with("server 127.0.0.1:") {
                if !servers_done {
                    for n in nodes {
                        conf.push_str(&format!(
                            "        server {n} max_fails=1 fail_timeout=5s;\n"
                        ));
                    }
                    servers_done = true;
                }
                continue;
            }
            if t.starts_with("listen ") {
                conf.push_str(&format!("        listen 127.0.0.1:{port};\n"));
                continue;
            }
            if t.starts_with("worker_processes") {
                conf.push_str("worker_processes 1;\n");
                continue;
            }
            if t.starts_with("http {") {
                conf.push_str("http {\n    access_log off;\n");
                continue;
            }
            conf.push_str(line);
            conf.push('\n');
        }
        assert!(
            servers_done,
            "deploy/nginx.conf has no upstream server lines"
        );
        let conf_path = dir.0.join("nginx.conf");
        std::fs::write(&conf_path, conf).unwrap();
        let pid = dir.0.join("nginx.pid");
        let child = Command::new(program("nginx"))
            .arg("-p")
            .arg(&dir.0)
            .arg("-c")
            .arg(&conf_path)
            .args(["-e", "stderr", "-g"])
            .arg(format!(
                "daemon off; master_process off; pid {}; error_log stderr warn;",
                pid.display()
            ))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nginx");
        let guard = Guard(child);
        wait_listening(SocketAddr::from(([127, 0, 0, 1], port)), "nginx");
        Nginx { port, guard, dir }
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }
}

/// A tickfan node (the binary) on the bus at `redis_url`.
pub struct Node {
    pub run: Running,
    pub public: SocketAddr,
    pub ingest: SocketAddr,
    pub admin: SocketAddr,
}

pub fn logged_addr(run: &Running, marker: &str) -> SocketAddr {
    let line = run.seen.iter().find(|l| l.contains(marker)).unwrap();
    let rest = line.split(marker).nth(1).unwrap();
    rest.split(['/', ' ']).next().unwrap().parse().unwrap()
}

impl Node {
    pub fn start(redis_url: &str, extra: &[&str]) -> Node {
        let url = format!("bus.redis_url=\"{redis_url}\"");
        let mut args = vec![
            "--listen",
            "127.0.0.1:0",
            "--ingest",
            "127.0.0.1:0",
            "--admin",
            "127.0.0.1:0",
            "--workers",
            "1",
            "--feed",
            "none",
            "--log-level",
            "info",
            "--set",
            &url,
            "--set",
            "bus.reconnect_min_ms=100",
            "--set",
            "bus.reconnect_max_ms=400",
            "--set",
            "history.size=1000",
        ];
        args.extend_from_slice(extra);
        let run = Running::start(&args, "admin on http://");
        Node {
            public: logged_addr(&run, "subscribe at ws://"),
            ingest: logged_addr(&run, "publishers connect to ws://"),
            admin: logged_addr(&run, "admin on http://"),
            run,
        }
    }

    pub fn get(&self, path: &str) -> Value {
        let r = http(
            self.admin,
            &format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
        );
        let body = r.split("\r\n\r\n").nth(1).unwrap_or("");
        serde_json::from_str(body).unwrap_or(Value::Null)
    }

    pub fn active(&self) -> u64 {
        self.get("/stats")["activeConnections"]
            .as_u64()
            .unwrap_or(0)
    }

    /// pid and addresses, for a test program in another language.
    pub fn clone_info(&self) -> Value {
        serde_json::json!({
            "pid": self.run.guard.0.id(),
            "admin": format!("http://{}", self.admin),
            "ingest": format!("ws://{}/publish", self.ingest),
        })
    }

    pub fn publisher(&self) -> Client {
        Client::at(self.ingest, "/publish")
    }
}
