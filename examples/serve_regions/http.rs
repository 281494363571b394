//! The HTTP/1.1 this server speaks: request heads in, response heads out, the one
//! `Range` form it serves, and the request targets it accepts. No I/O here.

/// A request head larger than this is refused (431) and the connection closed.
pub const MAX_HEAD: usize = 16 * 1024;

/// The methods this server distinguishes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Method {
    /// Head and body.
    Get,
    /// The head GET would get, no body.
    Head,
    /// Anything else: 405.
    Other(String),
}

/// One parsed request head.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    /// The method.
    pub method: Method,
    /// The request target as sent (`/name?query`).
    pub target: String,
    /// The `Range` header's value, if any.
    pub range: Option<String>,
    /// The client wants the connection kept open after the response.
    pub keep_alive: bool,
    /// The body the request announced, which the server reads and discards.
    pub body: Body,
}

/// A request's body, as its head announces it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Body {
    /// No body (no `Content-Length`, or 0).
    None,
    /// `Content-Length` bytes (a length past u64 reads as `u64::MAX`, over any bound).
    Length(u64),
    /// A `Transfer-Encoding` (chunked or other): this server does not decode them
    /// and answers 411 Length Required.
    Encoded,
    /// A `Content-Length` that is not one whole number: 400 (RFC 9112 §6.3).
    Invalid,
}

/// Why a request head was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BadRequest {
    /// Not HTTP/1.x, or broken syntax: 400.
    Malformed,
    /// Longer than [`MAX_HEAD`]: 431.
    TooLarge,
}

/// Parses a request head from the start of `buf`: `Ok(None)` until it is complete,
/// then the request and how many bytes of `buf` it took.
pub fn parse_request(buf: &[u8]) -> Result<Option<(Request, usize)>, BadRequest> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut parsed = httparse::Request::new(&mut headers);
    let used = match parsed.parse(buf) {
        Ok(httparse::Status::Complete(used)) => used,
        Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD => return Ok(None),
        Ok(httparse::Status::Partial) | Err(httparse::Error::TooManyHeaders) => {
            return Err(BadRequest::TooLarge)
        }
        Err(_) => return Err(BadRequest::Malformed),
    };
    if used > MAX_HEAD {
        return Err(BadRequest::TooLarge);
    }
    let (Some(method), Some(target), Some(version)) = (parsed.method, parsed.path, parsed.version)
    else {
        return Err(BadRequest::Malformed);
    };
    let header = |name: &str| {
        parsed
            .headers
            .iter()
            .filter(|header| header.name.eq_ignore_ascii_case(name))
            .map(|header| String::from_utf8_lossy(header.value).into_owned())
            .collect::<Vec<_>>()
    };
    let ranges = header("range");
    // Two Range fields make no sense; treat them as the list they would join to.
    let range = (!ranges.is_empty()).then(|| ranges.join(","));
    let connection = header("connection").join(",").to_ascii_lowercase();
    let token = |wanted: &str| connection.split(',').any(|t| t.trim() == wanted);
    let keep_alive = match version {
        1 => !token("close"),
        _ => token("keep-alive"),
    };
    let body = body(&header("transfer-encoding"), &header("content-length"));
    let method = match method {
        "GET" => Method::Get,
        "HEAD" => Method::Head,
        other => Method::Other(other.to_owned()),
    };
    Ok(Some((
        Request {
            method,
            target: target.to_owned(),
            range,
            keep_alive,
            body,
        },
        used,
    )))
}

/// The body a request's `Transfer-Encoding` and `Content-Length` fields announce.
/// Several `Content-Length` values (as fields or a list) must agree (RFC 9110 §8.6).
fn body(encodings: &[String], lengths: &[String]) -> Body {
    if !encodings.is_empty() {
        return Body::Encoded;
    }
    let mut length = None;
    for value in lengths.iter().flat_map(|field| field.split(',')) {
        match (number(value), length) {
            (None, _) => return Body::Invalid,
            (Some(n), Some(seen)) if n != seen => return Body::Invalid,
            (Some(n), _) => length = Some(n),
        }
    }
    match length {
        None | Some(0) => Body::None,
        Some(n) => Body::Length(n),
    }
}

/// A whole number of ASCII digits (no sign, not empty), saturating at `u64::MAX`:
/// a length or byte position past u64 is still a number, just larger than any file.
fn number(text: &str) -> Option<u64> {
    let text = text.trim();
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(text.parse().unwrap_or(u64::MAX))
}

/// What a `Range` header asks of a file of a given size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RangeAsk {
    /// No header, a unit other than bytes, or several ranges: 200 with the whole
    /// file (RFC 9110 §14.2 lets a server ignore `Range`; it must ignore unknown
    /// units).
    Whole,
    /// One satisfiable range, `start..end` (end exclusive, clamped to the size): 206.
    Part {
        /// First byte.
        start: u64,
        /// One past the last byte.
        end: u64,
    },
    /// A malformed bytes range, or one that starts at or past the end: 416.
    Unsatisfiable,
}

/// The byte range a `Range` header asks for in a file of `size` bytes.
pub fn parse_range(header: Option<&str>, size: u64) -> RangeAsk {
    let Some(header) = header else {
        return RangeAsk::Whole;
    };
    let Some((unit, spec)) = header.trim().split_once('=') else {
        return RangeAsk::Unsatisfiable;
    };
    if !unit.trim().eq_ignore_ascii_case("bytes") {
        return RangeAsk::Whole;
    }
    if spec.contains(',') {
        return RangeAsk::Whole;
    }
    let Some((first, last)) = spec.split_once('-') else {
        return RangeAsk::Unsatisfiable;
    };
    // Positions past u64 saturate: a last-byte-pos past the end means "to the end",
    // a suffix longer than the file means "the whole file", and a first-byte-pos
    // past the end is unsatisfiable (RFC 9110 §14.1.2), however many digits it has.
    let digits = number;
    let bounds = if first.trim().is_empty() {
        digits(last).map(|suffix| (size.saturating_sub(suffix), size))
    } else {
        digits(first).and_then(|start| {
            if last.trim().is_empty() {
                Some((start, size))
            } else {
                let last = digits(last)?;
                (last >= start).then(|| (start, last.saturating_add(1).min(size)))
            }
        })
    };
    match bounds {
        Some((start, end)) if start < end => RangeAsk::Part { start, end },
        _ => RangeAsk::Unsatisfiable,
    }
}

/// Why a request target names no servable file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TargetError {
    /// Not `/name` in origin form, or a broken `%` escape: 400.
    Malformed,
    /// Reaches outside the flat set of served names (`..`, `/a/b`, an absolute
    /// path smuggled as `%2F`...): 403.
    Traversal,
}

/// The file name a request target asks for: `/name`, with `%` escapes decoded and
/// any query dropped. Only a single path segment is a name; everything that could
/// walk a directory tree is refused, so only files named on the command line can
/// ever be served, whatever the map holds.
pub fn file_name(target: &str) -> Result<String, TargetError> {
    let path = target.split(['?', '#']).next().unwrap_or_default();
    let rest = path.strip_prefix('/').ok_or(TargetError::Malformed)?;
    let name = percent_decode(rest).ok_or(TargetError::Malformed)?;
    let name = String::from_utf8(name).map_err(|_| TargetError::Malformed)?;
    if name.is_empty() {
        return Err(TargetError::Malformed);
    }
    if name.contains(['/', '\\', '\0']) || name == "." || name == ".." {
        return Err(TargetError::Traversal);
    }
    Ok(name)
}

fn percent_decode(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len());
    let mut bytes = text.bytes();
    while let Some(byte) = bytes.next() {
        if byte == b'%' {
            let high = (bytes.next()? as char).to_digit(16)?;
            let low = (bytes.next()? as char).to_digit(16)?;
            out.push((high * 16 + low) as u8);
        } else {
            out.push(byte);
        }
    }
    Some(out)
}

/// A response head: status line, `Content-Length`, any `extra` header lines (each
/// ending in CRLF), and `Connection: close` when the connection ends after it.
pub fn response_head(status: &str, length: u64, extra: &str, keep_alive: bool) -> Vec<u8> {
    let connection = if keep_alive {
        ""
    } else {
        "Connection: close\r\n"
    };
    format!("HTTP/1.1 {status}\r\nContent-Length: {length}\r\n{extra}{connection}\r\n").into_bytes()
}
