//! A real PgBouncer in transaction pooling mode, run as a child process of
//! the test (as user `postgres`: it refuses to run as root), killed on drop.

use std::os::unix::fs::PermissionsExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct PgBouncer {
    child: Child,
    pub port: u16,
    _dir: tempfile::TempDir,
}

impl PgBouncer {
    /// Start PgBouncer in front of the local PostgreSQL; every database name
    /// is forwarded (`* =`), so fresh per-test databases work through it.
    pub fn start() -> PgBouncer {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = spare_port();
        let users = dir.path().join("userlist.txt");
        std::fs::write(&users, "\"postgres\" \"\"\n").unwrap();
        // No `ignore_startup_parameters`: the scaler must not need it.
        let ini = format!(
            "[databases]\n* = host=127.0.0.1 port=5432 user=postgres\n\n\
             [pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n\
             auth_type = trust\nauth_file = {}\npool_mode = transaction\n\
             default_pool_size = 2\nmax_client_conn = 100\nserver_reset_query =\n",
            users.display()
        );
        let ini_path = dir.path().join("pgbouncer.ini");
        std::fs::write(&ini_path, ini).unwrap();
        for p in [dir.path(), users.as_path(), ini_path.as_path()] {
            let mode = if p.is_dir() { 0o755 } else { 0o644 };
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
        }
        let child = Command::new("pgbouncer")
            .arg("-u")
            .arg("postgres")
            .arg(&ini_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start pgbouncer (apt-get install pgbouncer): {e}"));
        let mut bouncer = PgBouncer {
            child,
            port,
            _dir: dir,
        };
        bouncer.wait_listening();
        bouncer
    }

    fn wait_listening(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("pgbouncer exited at start: {status}");
            }
            assert!(
                Instant::now() < deadline,
                "pgbouncer did not listen on {}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }
}

impl Drop for PgBouncer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port nobody listens on right now.
pub fn spare_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind :0");
    l.local_addr().expect("local_addr").port()
}
