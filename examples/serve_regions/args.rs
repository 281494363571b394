//! The command line: what to serve, on which port, for how long.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

/// Printed for `--help` (to stdout) and after a usage error (to stderr).
pub const USAGE: &str = "\
usage: serve_regions [OPTIONS] FILE...

Serves each FILE over HTTP/1.1 on 127.0.0.1 as /<its base name>, answering GET and
HEAD, with or without a single `Range: bytes=...`. Only the files named here are
served. SIGINT or SIGTERM stops it: no new requests, the responses in flight get
up to the drain timeout, then their sends are cut; a second signal stops it at once.
At the connection cap, a new client is admitted by closing the connection that has
waited longest for a request. A request body (Content-Length) is read and
discarded; one over the body bound gets 413, a Transfer-Encoding body 411.

options:
  --port P            port to listen on (default 0: any free port, printed)
  --workers W         threads that send the bodies (default 4)
  --requests N        stop by itself after answering N requests
  --idle-timeout S    close a connection idle for S seconds (default 30)
  --max-connections C at most C connections open; at the cap a new one evicts the
                      longest-idle (default 1024)
  --drain-timeout S   after SIGINT/SIGTERM, cut the sends still running after S
                      seconds (default 10)
  --max-body B        read and discard request bodies up to B bytes; a longer one
                      gets 413 (default 1048576)
  -h, --help          print this and exit";

/// What to serve and how.
#[derive(Clone, Debug)]
pub struct Config {
    /// 0 picks a free port.
    pub port: u16,
    /// Served as `/<base name>`.
    pub files: Vec<PathBuf>,
    /// Stop after this many requests (`None`: serve until stopped).
    pub requests: Option<usize>,
    /// Threads that send the response bodies.
    pub workers: usize,
    /// A connection with no complete request for this long is closed.
    pub idle_timeout: Duration,
    /// At most this many connections are open: at the cap, a new one is admitted by
    /// closing the longest-idle, or waits in the backlog if none is idle.
    pub max_connections: usize,
    /// After the first stop signal, sends still running this long are cut.
    pub drain_timeout: Duration,
    /// Request bodies up to this many bytes are read and discarded; a longer one is
    /// refused with 413.
    pub max_body: u64,
}

impl Config {
    /// Serves `files` with every other setting at its default.
    pub fn new(files: Vec<PathBuf>) -> Config {
        Config {
            port: 0,
            files,
            requests: None,
            workers: 4,
            idle_timeout: Duration::from_secs(30),
            max_connections: 1024,
            drain_timeout: Duration::from_secs(10),
            max_body: 1 << 20,
        }
    }
}

/// What the command line asks for.
#[derive(Debug)]
pub enum Command {
    /// `-h` or `--help`.
    Help,
    /// Serve.
    Serve(Config),
}

/// Reads the arguments after the program name. The error says what was wrong.
pub fn parse(args: impl IntoIterator<Item = OsString>) -> Result<Command, String> {
    let mut config = Config::new(Vec::new());
    let mut args = args.into_iter();
    let mut options_done = false;
    while let Some(arg) = args.next() {
        if options_done {
            config.files.push(PathBuf::from(arg));
            continue;
        }
        let Some(text) = arg.to_str() else {
            config.files.push(PathBuf::from(arg));
            continue;
        };
        let mut number = |name: &str| -> Result<u64, String> {
            let value = args.next().ok_or_else(|| format!("{name} needs a value"))?;
            let value = value.to_string_lossy();
            value
                .parse()
                .map_err(|_| format!("{name} needs a whole number, not {value:?}"))
        };
        match text {
            "-h" | "--help" => return Ok(Command::Help),
            "--" => options_done = true,
            "--port" => {
                config.port = u16::try_from(number("--port")?)
                    .map_err(|_| "--port must be at most 65535".to_owned())?
            }
            "--workers" => config.workers = positive("--workers", number("--workers")?)?,
            "--requests" => config.requests = Some(positive("--requests", number("--requests")?)?),
            "--idle-timeout" => {
                config.idle_timeout = Duration::from_secs(number("--idle-timeout")?)
            }
            "--max-connections" => {
                config.max_connections =
                    positive("--max-connections", number("--max-connections")?)?
            }
            "--drain-timeout" => {
                config.drain_timeout = Duration::from_secs(number("--drain-timeout")?)
            }
            "--max-body" => config.max_body = number("--max-body")?,
            option if option.starts_with('-') && option.len() > 1 => {
                return Err(format!("unknown option {option}"))
            }
            _ => config.files.push(PathBuf::from(arg)),
        }
    }
    if config.files.is_empty() {
        return Err("name at least one FILE to serve".to_owned());
    }
    Ok(Command::Serve(config))
}

fn positive(name: &str, value: u64) -> Result<usize, String> {
    match usize::try_from(value) {
        Ok(value) if value > 0 => Ok(value),
        _ => Err(format!("{name} must be at least 1")),
    }
}
