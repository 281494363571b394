//! A small HTTP/1.1 file server that lends instead of `dup()`ing. The owner thread
//! owns each file (a `Lender`), reads every connection's requests without blocking
//! on any, and hands each response's byte range to a worker thread as a
//! `LentRegion`, which `sendfile`s it to the client and so returns the loan.
//!
//! ```text
//! cargo run --example serve_regions -- [--port P] [--workers W] [--requests N] FILE...
//! curl -r 0-1023 http://127.0.0.1:PORT/NAME     # NAME = the file's base name
//! ```
//!
//! It keeps connections alive (HTTP/1.1; `Connection: close` honoured), answers GET
//! and HEAD, serves one `Range: bytes=a-b` (also `a-`, `-n`) as 206, several ranges
//! or an unknown unit as 200 with the whole file, an unsatisfiable range as 416, and
//! only the files named on its command line (`/<base name>`; anything that could
//! walk a directory is refused). Against hostile clients: at the connection cap a
//! new client evicts the longest-idle connection; a request body is read and
//! discarded (over `--max-body`: 413; a Transfer-Encoding body: 411), and every
//! close after a response lingers so unread input cannot reset it away; requests
//! pipelined before a half-close are all answered. SIGINT or SIGTERM (or
//! `--requests N`) stops it: the sends in flight get up to `--drain-timeout`, then
//! are cut (a second signal cuts them at once), and each file closes once its loans
//! are back.
//! Sizes are taken when the files are opened: serve files that do not change (a
//! truncated file ends its responses early, and their connections are closed).
//!
//! Where to read: `owner.rs` is the owner's loop, `held.rs` the connections it holds
//! (eviction, idle timeout, lingering close), `connection.rs` reading one,
//! `files.rs` the decisions and the lending, `workers.rs` the sends, `http.rs` the
//! protocol, `args.rs` the options, `shutdown.rs` the stop signals.

pub mod args;
pub mod connection;
pub mod files;
pub mod held;
pub mod http;
pub mod owner;
pub mod report;
pub mod shutdown;
pub mod wake;
pub mod workers;

use args::{Command, USAGE};

fn main() {
    let config = match args::parse(std::env::args_os().skip(1)) {
        Ok(Command::Help) => {
            println!("{USAGE}");
            return;
        }
        Ok(Command::Serve(config)) => config,
        Err(message) => {
            eprintln!("serve_regions: {message}\n\n{USAGE}");
            std::process::exit(2);
        }
    };
    // Before any thread starts (see `stop_signals`).
    let signals = shutdown::stop_signals().unwrap_or_else(|errno| {
        eprintln!("serve_regions: cannot watch SIGINT/SIGTERM: {errno}");
        std::process::exit(1);
    });
    let served = owner::serve(&config, &signals, |addr| {
        println!("listening on http://{addr}");
        for path in &config.files {
            if let Some(name) = path.file_name().and_then(|name| name.to_str()) {
                println!("  curl -r 0-1023 http://{addr}/{name}");
            }
        }
    });
    let report = match served {
        Ok(report) => report,
        Err(error) => {
            eprintln!("serve_regions: {error}");
            std::process::exit(1);
        }
    };
    let why = report
        .stops
        .first()
        .map_or("the request limit", String::as_str);
    let at_once = match report.stops.get(1) {
        Some(second) => format!("; then {second}: stopped at once"),
        None => String::new(),
    };
    println!(
        "stopped by {why}: {} connections, {} requests; bodies by path: {:?}; failed sends: {}; \
         evicted idle: {}; cut by the stop: {}; drained in {:?}{at_once}",
        report.connections,
        report.requests,
        report.paths,
        report.failed,
        report.evicted,
        report.cut,
        report.drained_in.unwrap_or_default()
    );
}
