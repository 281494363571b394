//! The serve_regions example run in-process by the tests: its owner loop on a
//! thread of the test, stopped through a socket pair standing in for the signalfd.
#![allow(dead_code)] // each test crate uses its own subset

#[allow(dead_code)] // the example's `main` and CLI helpers are not used here
#[path = "../../examples/serve_regions/main.rs"]
pub mod serve_regions;

use serve_regions::args::Config;
use serve_regions::owner::serve;
use serve_regions::report::Report;
use serve_regions::shutdown::StopSource;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::sync::mpsc;
use std::thread::JoinHandle;

/// The test's stand-in for the signalfd: each byte written to the other end is one
/// stop request.
pub struct StopSocket(UnixStream);

impl AsFd for StopSocket {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.0.as_fd()
    }
}

impl StopSource for StopSocket {
    fn take_stop(&self) -> Option<String> {
        let mut byte = [0];
        match (&self.0).read(&mut byte) {
            Ok(1) => Some("a stop request".to_owned()),
            Ok(_) => Some("the stop socket closing".to_owned()),
            Err(_) => None,
        }
    }
}

/// A server running on its own thread, stopped through a socket pair standing in
/// for the signalfd `main` uses.
pub struct Server {
    pub addr: SocketAddr,
    stop: UnixStream,
    pub thread: JoinHandle<std::io::Result<Report>>,
}

impl Server {
    pub fn start(config: Config) -> Server {
        let (stop, stop_fd) = UnixStream::pair().unwrap();
        let (ready, addr) = mpsc::channel();
        let thread = std::thread::spawn(move || {
            serve(&config, &StopSocket(stop_fd), move |addr| {
                ready.send(addr).unwrap()
            })
        });
        let addr = addr.recv().expect("the server starts");
        Server { addr, stop, thread }
    }

    pub fn signal_stop(&mut self) {
        self.stop.write_all(&[1]).unwrap();
    }

    pub fn stop(mut self) -> Report {
        self.signal_stop();
        self.join()
    }

    pub fn join(self) -> Report {
        self.thread
            .join()
            .unwrap()
            .expect("the server ends cleanly")
    }
}
