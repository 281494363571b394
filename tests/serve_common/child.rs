//! The serve_regions example binary as a child process on loopback, as users run
//! it: built on first use, started with arguments, signalled, its exit timed, its
//! stdout and stderr kept for the test to read.

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The example binary, built on first use. `cargo test --all-targets` builds
/// examples only as test harnesses, and `cargo test --test NAME` not at all, so
/// the test asks cargo for the plain binary itself, into the target dir and profile
/// its own binary came from (`<target>/<profile>/deps/<test>`); cargo does nothing
/// if it is fresh.
pub fn example_binary() -> &'static Path {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(|| {
        let exe = std::env::current_exe().unwrap();
        let profile_dir = exe.parent().and_then(Path::parent).unwrap();
        let target_dir = profile_dir.parent().unwrap();
        let mut build = Command::new(option_env!("CARGO").unwrap_or("cargo"));
        build
            .args([
                "build",
                "--quiet",
                "--example",
                "serve_regions",
                "--manifest-path",
            ])
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml"))
            .arg("--target-dir")
            .arg(target_dir);
        if profile_dir.file_name() == Some("release".as_ref()) {
            build.arg("--release");
        }
        let out = build.output().expect("run cargo to build the example");
        assert!(
            out.status.success(),
            "cargo build --example serve_regions failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let binary = profile_dir.join("examples").join("serve_regions");
        assert!(binary.is_file(), "{} was not built", binary.display());
        binary
    })
}

/// A running server process; killed if a test fails before it exits.
pub struct Server {
    pub child: Child,
    stdout: BufReader<ChildStdout>,
    /// Everything it wrote to stderr so far (also echoed to the test's stderr).
    stderr: Arc<Mutex<String>>,
    stderr_reader: Option<JoinHandle<()>>,
    pub addr: SocketAddr,
}

/// How a server process ended.
pub struct Exit {
    pub status: ExitStatus,
    /// Its stdout after the `listening on` line.
    pub stdout: String,
    /// Its whole stderr.
    pub stderr: String,
    /// From the signal (or the start of the wait) to the exit.
    pub took: Duration,
}

impl Server {
    pub fn start(args: &[&str]) -> Server {
        let mut child = Command::new(example_binary())
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start serve_regions");
        let stderr = Arc::new(Mutex::new(String::new()));
        let stderr_reader = {
            let (mut pipe, stderr) = (child.stderr.take().unwrap(), Arc::clone(&stderr));
            std::thread::spawn(move || {
                let mut chunk = [0; 4096];
                while let Ok(n @ 1..) = pipe.read(&mut chunk) {
                    let text = String::from_utf8_lossy(&chunk[..n]);
                    let _ = std::io::stderr().write_all(text.as_bytes());
                    stderr.lock().unwrap().push_str(&text);
                }
            })
        };
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        let addr = line
            .trim()
            .strip_prefix("listening on http://")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .parse()
            .unwrap();
        Server {
            child,
            stdout,
            stderr,
            stderr_reader: Some(stderr_reader),
            addr,
        }
    }

    pub fn pid(&self) -> Pid {
        Pid::from_raw(self.child.id() as i32)
    }

    pub fn signal(&self, signal: Signal) {
        kill(self.pid(), signal).unwrap();
    }

    /// Its stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    pub fn running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// Waits (at most 20 s: a hang fails the test) for the exit, timed from `since`.
    pub fn wait_exit(mut self, since: Instant) -> Exit {
        let deadline = Instant::now() + Duration::from_secs(20);
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            assert!(Instant::now() < deadline, "the server did not exit");
            std::thread::sleep(Duration::from_millis(2));
        };
        let took = since.elapsed();
        let mut stdout = String::new();
        self.stdout.read_to_string(&mut stdout).unwrap();
        if let Some(reader) = self.stderr_reader.take() {
            reader.join().unwrap();
        }
        Exit {
            status,
            stdout,
            stderr: self.stderr(),
            took,
        }
    }

    /// Sends `signal` and waits (bounded) for the exit; returns the status and the
    /// rest of its stdout.
    pub fn stop_with(self, signal: Signal) -> (ExitStatus, String) {
        self.signal(signal);
        let exit = self.wait_exit(Instant::now());
        (exit.status, exit.stdout)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// How many of process `pid`'s fds name the file `(dev, ino)`.
pub fn fds_naming(pid: Pid, id: (u64, u64)) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|entry| std::fs::metadata(entry.ok()?.path()).ok())
        .filter(|meta| (meta.dev(), meta.ino()) == id)
        .count()
}
