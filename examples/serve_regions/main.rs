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
//! walk a directory is refused). SIGINT or SIGTERM (or `--requests N`) stops it:
//! the sends in flight finish, then each file closes once its loans are back.
//! Sizes are taken when the files are opened: serve files that do not change (a
//! truncated file ends its responses early, and their connections are closed).
//!
//! Where to read: `owner.rs` is the owner's loop, `files.rs` the decisions and the
//! lending, `workers.rs` the sends, `http.rs` the protocol, `args.rs` the options.

pub mod args;
pub mod connection;
pub mod files;
pub mod http;
pub mod owner;
pub mod shutdown;
pub mod wake;
pub mod workers;

use args::{Command, USAGE};
use std::os::fd::AsFd;

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
    let served = owner::serve(&config, signals.as_fd(), |addr| {
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
    let why = shutdown::received(&signals).unwrap_or_else(|| "the request limit".to_owned());
    println!(
        "stopped by {why}: {} connections, {} requests; bodies by path: {:?}; failed sends: {}",
        report.connections, report.requests, report.paths, report.failed
    );
}
