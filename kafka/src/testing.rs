//! For tests across the workspace: a Tansu broker of one test's own, on a free port, that the test can stop and
//! restart: a real outage (and, with memory storage, a real lost topic) without
//! touching the shared broker other tests use.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A Tansu broker process owned by a test; killed on drop.
pub struct OwnBroker {
    binary: PathBuf,
    pub addr: String,
    log: PathBuf,
    child: Option<Child>,
}

impl OwnBroker {
    /// Starts a broker, or returns `None` (after saying why) when `tansu` is not
    /// installed. With `PARLEY_KAFKA_TESTS=1` a missing `tansu` fails the test.
    pub fn start() -> Option<Self> {
        let Some(binary) = tansu_binary() else {
            assert!(
                !std::env::var("PARLEY_KAFKA_TESTS").is_ok_and(|v| v == "1"),
                "PARLEY_KAFKA_TESTS=1 but the tansu binary is missing \
                 (scripts/kafka-test-broker.sh installs it)"
            );
            eprintln!("skipping: no tansu binary to run a broker of this test's own");
            return None;
        };
        // Below the ephemeral range, so no outgoing connection takes it first.
        let port = parley_event_log::testing::free_port();
        let mut broker = Self {
            binary,
            addr: format!("127.0.0.1:{port}"),
            log: std::env::temp_dir().join(format!("parley-tansu-{port}.log")),
            child: None,
        };
        broker.launch();
        Some(broker)
    }

    /// Kills the broker (its memory storage, and so every topic, goes with it).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the broker again on the same address, empty.
    pub fn restart(&mut self) {
        self.stop();
        self.launch();
    }

    fn launch(&mut self) {
        let url = format!("tcp://{}", self.addr);
        let log = std::fs::File::create(&self.log).expect("broker log file");
        let child = Command::new(&self.binary)
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
            ])
            .args(["--storage-engine", "memory://tansu/"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .spawn()
            .expect("start tansu");
        self.child = Some(child);
        let sock = self.addr.parse().expect("socket address");
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect_timeout(&sock, Duration::from_millis(200)).is_err() {
            assert!(
                Instant::now() < deadline,
                "tansu did not come up on {}; see {}",
                self.addr,
                self.log.display()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for OwnBroker {
    fn drop(&mut self) {
        self.stop();
        // Kept for a failed test to look at.
        if !std::thread::panicking() {
            let _ = std::fs::remove_file(&self.log);
        }
    }
}

/// `$TANSU_BIN`, `tansu` on the `PATH`, or cargo's bin directory.
fn tansu_binary() -> Option<PathBuf> {
    let explicit = std::env::var_os("TANSU_BIN").map(PathBuf::from);
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .map(|dir| dir.join("tansu"));
    let cargo_bin = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
        .map(|home| home.join("bin").join("tansu"));
    explicit
        .into_iter()
        .chain(on_path)
        .chain(cargo_bin)
        .find(|path| path.is_file())
}
