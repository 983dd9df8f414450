//! A PostgreSQL cluster of a test's own (`initdb`, `pg_ctl`), for tests that
//! must restore into a new cluster, or stop, restart or replace the database:
//! the machine's own server is never touched.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A private cluster on its own port; stopped (immediately) and deleted on drop.
pub struct PrivateCluster {
    dir: PathBuf,
    bin: PathBuf,
    pub port: u16,
}

impl PrivateCluster {
    /// `initdb`s a cluster in a fresh folder and starts it on a free port.
    /// Panics with the reason when PostgreSQL's server binaries are missing.
    pub fn start() -> Self {
        let bin = server_binaries().expect(
            "PostgreSQL's initdb and pg_ctl (Debian: postgresql; /usr/lib/postgresql/*/bin)",
        );
        let dir = std::env::temp_dir().join(format!("parley-pg-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).expect("cluster folder");
        let cluster = Self {
            port: super::free_port(),
            bin,
            dir,
        };
        // The server refuses to run as root: run it as `postgres` then.
        if is_root() {
            run(Command::new("chown").args(["postgres:postgres", cluster.dir_str()]));
        }
        cluster.pg(
            "initdb",
            &[
                "-D",
                &cluster.data(),
                "-U",
                "postgres",
                "--auth=trust",
                "--no-sync",
            ],
        );
        cluster.ctl_start();
        cluster
    }

    /// A streaming standby of `primary` (`pg_basebackup -R`), started on a
    /// port of its own. Make the primary wait for it (synchronous
    /// replication) with `ALTER SYSTEM SET synchronous_standby_names`.
    pub fn standby_of(primary: &PrivateCluster) -> Self {
        let standby = Self {
            port: super::free_port(),
            bin: primary.bin.clone(),
            dir: std::env::temp_dir().join(format!("parley-pg-{}", uuid::Uuid::new_v4().simple())),
        };
        std::fs::create_dir_all(&standby.dir).expect("cluster folder");
        if is_root() {
            run(Command::new("chown").args(["postgres:postgres", standby.dir_str()]));
        }
        let port = primary.port.to_string();
        standby.pg(
            "pg_basebackup",
            &[
                "-h",
                "127.0.0.1",
                "-p",
                &port,
                "-U",
                "postgres",
                "-D",
                &standby.data(),
                "-R",
                "-X",
                "stream",
                "--no-sync",
            ],
        );
        // Named, so the primary's synchronous_standby_names can ask for it.
        let conf = format!("{}/postgresql.auto.conf", standby.data());
        let mut auto = std::fs::read_to_string(&conf).expect("postgresql.auto.conf");
        auto = auto.replace(
            "primary_conninfo = '",
            "primary_conninfo = 'application_name=standby ",
        );
        std::fs::write(&conf, auto).expect("postgresql.auto.conf");
        standby.ctl_start();
        standby
    }

    /// Promotes a standby to primary (`pg_ctl promote`, waiting for it).
    pub fn promote(&self) {
        self.pg("pg_ctl", &["-D", &self.data(), "-w", "promote"]);
    }

    /// The URL of database `name` (`postgres` always exists).
    pub fn url(&self, name: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{name}", self.port)
    }

    /// Starts the server (again).
    pub fn ctl_start(&self) {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            self.port,
            self.dir_str()
        );
        let log = format!("{}/server.log", self.dir_str());
        self.pg(
            "pg_ctl",
            &[
                "-D",
                &self.data(),
                "-o",
                &options,
                "-l",
                &log,
                "-w",
                "start",
            ],
        );
    }

    /// Stops the server at once (connections are cut, nothing is flushed
    /// politely): an outage.
    pub fn ctl_stop(&self) {
        self.pg(
            "pg_ctl",
            &["-D", &self.data(), "-m", "immediate", "-w", "stop"],
        );
    }

    fn data(&self) -> String {
        format!("{}/data", self.dir_str())
    }

    fn dir_str(&self) -> &str {
        self.dir.to_str().expect("a UTF-8 temp folder")
    }

    /// Runs one of the server's programs, as `postgres` when we are root.
    fn pg(&self, program: &str, args: &[&str]) {
        let path = self.bin.join(program);
        let mut command = if is_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&path);
            c
        } else {
            Command::new(&path)
        };
        run(command.args(args));
    }
}

impl Drop for PrivateCluster {
    fn drop(&mut self) {
        let path = self.bin.join("pg_ctl");
        let data = self.data();
        let stop = ["-D", data.as_str(), "-m", "immediate", "stop"];
        let _ = if is_root() {
            Command::new("runuser")
                .args(["-u", "postgres", "--"])
                .arg(&path)
                .args(stop)
                .output()
        } else {
            Command::new(&path).args(stop).output()
        };
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn run(command: &mut Command) {
    let out = command.output().expect("run a PostgreSQL program");
    assert!(
        out.status.success(),
        "{command:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0\n"))
}

/// The folder holding `initdb` and `pg_ctl`: on the PATH, or Debian's.
fn server_binaries() -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .find(|dir| dir.join("initdb").exists() && dir.join("pg_ctl").exists())
        // A link on the PATH (`/usr/local/bin/initdb`): the folder it points
        // into holds the other programs too (`pg_basebackup`).
        .map(|dir| {
            std::fs::canonicalize(dir.join("initdb"))
                .ok()
                .and_then(|real| real.parent().map(Path::to_path_buf))
                .filter(|real| real.join("pg_ctl").exists())
                .unwrap_or(dir)
        });
    on_path.or_else(|| {
        let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
            .ok()?
            .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
            .filter(|bin| Path::new(bin).join("initdb").exists())
            .collect();
        versions.sort();
        versions.pop()
    })
}
