//! The served files: opened once, owned by the owner thread as `Lender`s, lent out
//! per response as a `LentRegion`, and closed only after every region is back.

use super::http::{self, BadRequest, Body, Method, RangeAsk, Request, TargetError};
use fdlend::io::LentRegion;
use fdlend::Lender;
use std::collections::HashMap;
use std::io;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// One response, decided on the owner's thread, for a worker to send.
pub struct Response {
    /// Status line and headers.
    pub head: Vec<u8>,
    /// The file's bytes to send after the head (`None` for HEAD, errors, empty files).
    pub body: Option<LentRegion>,
    /// The connection stays open for another request after this response.
    pub keep_alive: bool,
}

struct Served {
    lender: Lender,
    size: u64,
}

/// The files named on the command line, by base name.
pub struct Files {
    by_name: HashMap<String, Served>,
}

impl Files {
    /// Opens every file; the error names the file that could not be served.
    pub fn open(paths: &[PathBuf]) -> io::Result<Files> {
        let mut by_name = HashMap::new();
        for path in paths {
            let shown = path.display();
            let named = |error: io::Error| {
                io::Error::new(error.kind(), format!("cannot serve {shown}: {error}"))
            };
            let file = std::fs::File::open(path).map_err(named)?;
            let metadata = file.metadata().map_err(named)?;
            if !metadata.is_file() {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!(
                        "cannot serve {shown}: not a regular file (name files, not directories)"
                    ),
                ));
            }
            let name = path
                .file_name()
                .and_then(|name| name.to_str())
                .ok_or_else(|| {
                    io::Error::new(
                        io::ErrorKind::InvalidInput,
                        format!("cannot serve {shown}: its name is not UTF-8"),
                    )
                })?
                .to_owned();
            let lender = Lender::try_from(file)
                .map_err(|error| io::Error::other(format!("cannot lend {shown}: {error}")))?;
            let served = Served {
                lender,
                size: metadata.len(),
            };
            if by_name.insert(name.clone(), served).is_some() {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("two files are named {name}; each is served as /<base name>"),
                ));
            }
        }
        Ok(Files { by_name })
    }

    /// The response to a request head that could not be parsed.
    pub fn refuse(bad: BadRequest) -> Response {
        let status = match bad {
            BadRequest::Malformed => "400 Bad Request",
            BadRequest::TooLarge => "431 Request Header Fields Too Large",
        };
        headless(status, "", false)
    }

    /// The response to a request whose body is not read (over `max_body`, encoded,
    /// or of no clear length): the connection closes after it, lingering so the
    /// unread body cannot reset the response away.
    pub fn refuse_body(body: Body) -> Response {
        let status = match body {
            Body::Length(_) => "413 Content Too Large",
            Body::Encoded => "411 Length Required",
            Body::None | Body::Invalid => "400 Bad Request",
        };
        headless(status, "", false)
    }

    /// Decides the response to `request`, lending the range it asks for.
    pub fn respond(&self, request: &Request) -> Response {
        // Any body has been read and discarded by now.
        let keep_alive = request.keep_alive;
        if let Method::Other(_) = request.method {
            return headless("405 Method Not Allowed", "Allow: GET, HEAD\r\n", keep_alive);
        }
        let name = match http::file_name(&request.target) {
            Ok(name) => name,
            Err(TargetError::Malformed) => return headless("400 Bad Request", "", keep_alive),
            Err(TargetError::Traversal) => return headless("403 Forbidden", "", keep_alive),
        };
        let Some(served) = self.by_name.get(&name) else {
            return headless("404 Not Found", "", keep_alive);
        };
        let size = served.size;
        let (status, extra, start, end) = match http::parse_range(request.range.as_deref(), size) {
            RangeAsk::Unsatisfiable => {
                let extra = format!("Content-Range: bytes */{size}\r\n");
                return headless("416 Range Not Satisfiable", &extra, keep_alive);
            }
            RangeAsk::Whole => ("200 OK", String::new(), 0, size),
            RangeAsk::Part { start, end } => (
                "206 Partial Content",
                format!("Content-Range: bytes {start}-{}/{size}\r\n", end - 1),
                start,
                end,
            ),
        };
        let extra =
            format!("{extra}Accept-Ranges: bytes\r\nContent-Type: application/octet-stream\r\n");
        let head = http::response_head(status, end - start, &extra, keep_alive);
        // HEAD lends nothing; an empty file has no region (regions are never empty).
        if request.method == Method::Head || end == start {
            return Response {
                head,
                body: None,
                keep_alive,
            };
        }
        match lend(&served.lender, start, end - start) {
            Ok(region) => Response {
                head,
                body: Some(region),
                keep_alive,
            },
            Err(error) => {
                eprintln!("serve_regions: cannot lend {name}: {error}");
                headless("503 Service Unavailable", "", false)
            }
        }
    }

    /// Closes every file, each once every region lent from it has been returned
    /// (`close_wait`), so a send still in flight finishes on an open file; waits at
    /// most `bound` in all. A file still lent then is left to its last loan, which
    /// closes it (still once, still after the loan), and named in the error.
    pub fn close_all(self, bound: Duration) -> io::Result<()> {
        let deadline = Instant::now() + bound;
        let mut failed = Ok(());
        for (name, served) in self.by_name {
            let left = deadline.saturating_duration_since(Instant::now());
            let error = match served.lender.close_wait_timeout(left) {
                Ok(Ok(())) => continue,
                Ok(Err(error)) => io::Error::new(error.kind(), format!("closing {name}: {error}")),
                Err(timed_out) => {
                    let message = format!(
                        "closing {name}: {} loans still out after {bound:?}; the last one closes it",
                        timed_out.outstanding()
                    );
                    // Dropping the lender hands the close to its last loan.
                    drop(timed_out.into_inner());
                    io::Error::new(io::ErrorKind::TimedOut, message)
                }
            };
            eprintln!("serve_regions: {error}");
            failed = failed.and(Err(error));
        }
        failed
    }
}

fn lend(lender: &Lender, start: u64, len: u64) -> Result<LentRegion, Box<dyn std::error::Error>> {
    Ok(LentRegion::new(lender.loan()?, start, len)?)
}

fn headless(status: &str, extra: &str, keep_alive: bool) -> Response {
    Response {
        head: http::response_head(status, 0, extra, keep_alive),
        body: None,
        keep_alive,
    }
}
