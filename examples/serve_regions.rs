//! A small HTTP/1.1 file server that lends instead of `dup()`ing: the main thread
//! owns each file (a `Lender`), parses requests, and hands each response's byte range
//! to a worker thread as a `LentRegion`, which `sendfile`s it to the client.
//!
//! ```text
//! cargo run --example serve_regions -- [--port P] [--requests N] [--workers W] FILE...
//! curl -r 0-1023 http://127.0.0.1:PORT/NAME     # NAME = the file's base name
//! ```
//!
//! `Range: bytes=a-b` (also `a-` and `-n`) gets 206 with `Content-Range`; an
//! unsatisfiable or malformed range gets 416; no `Range` gets the whole file. With
//! `--requests N` the server stops after N requests, closing each file once its
//! outstanding regions have drained, and prints what it did.

use fdlend::io::{LentRegion, SendPath};
use fdlend::Lender;
use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::mpsc;
use std::time::Duration;

/// What to serve and for how long.
pub struct Config {
    /// 0 picks a free port.
    pub port: u16,
    /// Served as `/<base name>`.
    pub files: Vec<PathBuf>,
    /// Stop after this many requests (`None`: serve until killed).
    pub requests: Option<usize>,
    /// Worker threads that send the regions.
    pub workers: usize,
}

/// What a finished server did.
#[derive(Debug, Default)]
pub struct Report {
    /// Requests answered (any status).
    pub requests: usize,
    /// Bodies sent, by the path the kernel let `send_to` take.
    pub paths: HashMap<SendPath, usize>,
    /// Sends that failed (the client hung up, ...).
    pub failed: usize,
}

/// One response for a worker to write.
struct Job {
    stream: TcpStream,
    head: String,
    body: Option<LentRegion>,
}

/// The outcome of one worker's job.
enum Outcome {
    Sent(SendPath),
    Headless,
    Failed,
}

/// The byte range a `Range` header asks for in a file of `size` bytes: `Ok(None)`
/// for no header, `Err(())` for a malformed or unsatisfiable one.
#[allow(clippy::result_unit_err)]
pub fn parse_range(header: Option<&str>, size: u64) -> Result<Option<(u64, u64)>, ()> {
    let Some(header) = header else {
        return Ok(None);
    };
    let spec = header.trim().strip_prefix("bytes=").ok_or(())?;
    let (first, last) = spec.split_once('-').ok_or(())?;
    let (first, last) = (first.trim(), last.trim());
    let (start, end) = if first.is_empty() {
        let suffix: u64 = last.parse().map_err(|_| ())?;
        (size.saturating_sub(suffix), size)
    } else {
        let start: u64 = first.parse().map_err(|_| ())?;
        let end = if last.is_empty() {
            size
        } else {
            last.parse::<u64>()
                .map_err(|_| ())?
                .saturating_add(1)
                .min(size)
        };
        (start, end)
    };
    if start >= end {
        return Err(());
    }
    Ok(Some((start, end)))
}

/// Reads one request head (up to 16 KiB) and returns (method, path, Range header).
fn read_request(stream: &mut TcpStream) -> Option<(String, String, Option<String>)> {
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let mut buf = vec![0; 16 * 1024];
    let mut filled = 0;
    loop {
        let n = stream.read(&mut buf[filled..]).ok()?;
        if n == 0 {
            return None;
        }
        filled += n;
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut request = httparse::Request::new(&mut headers);
        match request.parse(&buf[..filled]) {
            Ok(httparse::Status::Complete(_)) => {
                let range = request
                    .headers
                    .iter()
                    .find(|header| header.name.eq_ignore_ascii_case("range"))
                    .and_then(|header| std::str::from_utf8(header.value).ok())
                    .map(str::to_owned);
                return Some((request.method?.to_owned(), request.path?.to_owned(), range));
            }
            Ok(httparse::Status::Partial) if filled < buf.len() => continue,
            _ => return None,
        }
    }
}

fn simple(status: &str, extra: &str) -> String {
    format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n{extra}\r\n")
}

/// Decides the response on the owner's thread: the head, and a region of the file.
fn respond(
    files: &HashMap<String, (Lender, u64)>,
    method: &str,
    path: &str,
    range: Option<&str>,
) -> (String, Option<LentRegion>) {
    if method != "GET" {
        return (simple("405 Method Not Allowed", "Allow: GET\r\n"), None);
    }
    let Some((lender, size)) = files.get(path.trim_start_matches('/')) else {
        return (simple("404 Not Found", ""), None);
    };
    let size = *size;
    let (status, start, end) = match parse_range(range, size) {
        Err(()) => {
            return (
                simple(
                    "416 Range Not Satisfiable",
                    &format!("Content-Range: bytes */{size}\r\n"),
                ),
                None,
            )
        }
        Ok(None) => ("200 OK".to_owned(), 0, size),
        Ok(Some((start, end))) => (
            format!(
                "206 Partial Content\r\nContent-Range: bytes {start}-{}/{size}",
                end - 1
            ),
            start,
            end,
        ),
    };
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        end - start
    );
    // An empty file has no region to lend (regions are never empty).
    let region = (end > start).then(|| {
        lender
            .loan()
            .map_err(Into::into)
            .and_then(|loan| LentRegion::new(loan, start, end - start))
    });
    match region {
        None => (head, None),
        Some(Ok(region)) => (head, Some(region)),
        Some(Err::<_, fdlend::io::RegionError>(error)) => {
            eprintln!("cannot lend {path}: {error}");
            (simple("503 Service Unavailable", ""), None)
        }
    }
}

fn work(jobs: &std::sync::Mutex<mpsc::Receiver<Job>>, done: &mpsc::Sender<Outcome>) {
    loop {
        let job = match jobs.lock().unwrap().recv() {
            Ok(job) => job,
            Err(_) => return,
        };
        let Job {
            mut stream,
            head,
            body,
        } = job;
        let outcome = match stream.write_all(head.as_bytes()) {
            Err(_) => Outcome::Failed,
            Ok(()) => match body {
                None => Outcome::Headless,
                // Blocking socket: Done or an error; the region's loan returns either way.
                Some(region) => match region.send_to(&stream) {
                    Ok(fdlend::io::SendProgress::Done { path, .. }) => Outcome::Sent(path),
                    Ok(fdlend::io::SendProgress::Blocked { .. }) | Err(_) => Outcome::Failed,
                },
            },
        };
        let _ = done.send(outcome);
    }
}

/// Runs the server on this thread (the files' owner); calls `ready` with the bound
/// address once it accepts connections.
pub fn serve(config: Config, ready: impl FnOnce(SocketAddr)) -> io::Result<Report> {
    let mut files = HashMap::new();
    for path in &config.files {
        let file = std::fs::File::open(path)?;
        let size = file.metadata()?.len();
        let name = path
            .file_name()
            .and_then(|name| name.to_str())
            .unwrap_or_default()
            .to_owned();
        files.insert(
            name,
            (
                Lender::try_from(file).map_err(|error| io::Error::other(error.to_string()))?,
                size,
            ),
        );
    }
    let listener = TcpListener::bind(("127.0.0.1", config.port))?;
    ready(listener.local_addr()?);

    let (to_workers, jobs) = mpsc::channel::<Job>();
    let jobs = std::sync::Arc::new(std::sync::Mutex::new(jobs));
    let (done, outcomes) = mpsc::channel();
    let workers: Vec<_> = (0..config.workers.max(1))
        .map(|_| {
            let (jobs, done) = (std::sync::Arc::clone(&jobs), done.clone());
            std::thread::spawn(move || work(&jobs, &done))
        })
        .collect();
    drop(done);

    let mut report = Report::default();
    for stream in listener.incoming() {
        if config
            .requests
            .is_some_and(|limit| report.requests >= limit)
        {
            break;
        }
        let Ok(mut stream) = stream else { continue };
        let Some((method, path, range)) = read_request(&mut stream) else {
            continue;
        };
        let (head, body) = respond(&files, &method, &path, range.as_deref());
        report.requests += 1;
        if to_workers.send(Job { stream, head, body }).is_err() {
            break;
        }
        if config
            .requests
            .is_some_and(|limit| report.requests >= limit)
        {
            break;
        }
    }
    drop(to_workers);
    // Each file closes here, once every region lent for it is back.
    for (name, (lender, _)) in files {
        lender
            .close_wait()
            .map_err(|error| io::Error::other(format!("closing {name}: {error}")))?;
    }
    for worker in workers {
        worker
            .join()
            .map_err(|_| io::Error::other("a worker panicked"))?;
    }
    for outcome in outcomes {
        match outcome {
            Outcome::Sent(path) => *report.paths.entry(path).or_default() += 1,
            Outcome::Headless => {}
            Outcome::Failed => report.failed += 1,
        }
    }
    Ok(report)
}

fn main() -> io::Result<()> {
    let mut config = Config {
        port: 0,
        files: Vec::new(),
        requests: None,
        workers: 4,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = |name: &str| {
            args.next()
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| io::Error::other(format!("{name} needs a number")))
        };
        match arg.as_str() {
            "--port" => config.port = value("--port")? as u16,
            "--requests" => config.requests = Some(value("--requests")?),
            "--workers" => config.workers = value("--workers")?,
            _ => config.files.push(PathBuf::from(arg)),
        }
    }
    if config.files.is_empty() {
        eprintln!("usage: serve_regions [--port P] [--requests N] [--workers W] FILE...");
        std::process::exit(2);
    }
    let names: Vec<String> = config
        .files
        .iter()
        .filter_map(|p| p.file_name()?.to_str().map(str::to_owned))
        .collect();
    let report = serve(config, |addr| {
        println!("listening on http://{addr}");
        for name in &names {
            println!("  curl -r 0-1023 http://{addr}/{name}");
        }
    })?;
    println!(
        "served {} requests; bodies by path: {:?}; failed sends: {}",
        report.requests, report.paths, report.failed
    );
    Ok(())
}
