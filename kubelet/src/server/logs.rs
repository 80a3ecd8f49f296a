//! `/containerLogs/{ns}/{pod}/{container}`: a container's log file, written by the runtime in
//! the CRI format (`<RFC3339Nano> <stream> <P|F> <content>`, one record per line; `P` marks a
//! partial line continued by the next record), read back as the container's raw output with
//! upstream's options: follow, previous, tailLines, sinceSeconds, sinceTime, limitBytes,
//! timestamps. Parsing and filtering are pure; the handler only reads files.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Query, State as AxState};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncSeekExt};

use super::{pod_containers, status_error, ContainerArgs, State};
use crate::runtime::api;

/// The query of a log request.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct LogOptions {
    pub follow: bool,
    pub previous: bool,
    pub tail_lines: Option<u64>,
    /// Only records at or after this time (nanoseconds since the epoch).
    pub since_nanos: Option<i128>,
    pub limit_bytes: Option<u64>,
    pub timestamps: bool,
}

fn parse_bool(k: &str, v: &str) -> Result<bool, String> {
    match v {
        "" | "true" | "1" | "True" | "TRUE" | "t" => Ok(true),
        "false" | "0" | "False" | "FALSE" | "f" => Ok(false),
        _ => Err(format!("invalid value {v:?} for {k}: expected a boolean")),
    }
}

fn parse_nonnegative(k: &str, v: &str) -> Result<u64, String> {
    v.parse::<i64>()
        .ok()
        .and_then(|n| u64::try_from(n).ok())
        .ok_or_else(|| format!("invalid value {v:?} for {k}: must be a non-negative integer"))
}

/// Parses an RFC 3339 time to nanoseconds since the epoch.
pub fn parse_time_nanos(s: &str) -> Option<i128> {
    s.parse::<k8s_openapi::jiff::Timestamp>().ok().map(|t| t.as_nanosecond())
}

/// The log options of a query; `now_nanos` turns sinceSeconds into a time.
pub fn parse_options(params: &[(String, String)], now_nanos: i128) -> Result<LogOptions, String> {
    let mut o = LogOptions::default();
    let mut since_seconds = None;
    let mut since_time = None;
    for (k, v) in params {
        match k.as_str() {
            "follow" => o.follow = parse_bool(k, v)?,
            "previous" => o.previous = parse_bool(k, v)?,
            "timestamps" => o.timestamps = parse_bool(k, v)?,
            "tailLines" => o.tail_lines = Some(parse_nonnegative(k, v)?),
            "limitBytes" => {
                let n = parse_nonnegative(k, v)?;
                if n == 0 {
                    return Err("limitBytes must be greater than zero".into());
                }
                o.limit_bytes = Some(n);
            }
            "sinceSeconds" => {
                let n = parse_nonnegative(k, v)?;
                if n == 0 {
                    return Err("sinceSeconds must be greater than zero".into());
                }
                since_seconds = Some(n);
            }
            "sinceTime" => {
                since_time = Some(parse_time_nanos(v).ok_or_else(|| format!("invalid sinceTime {v:?}"))?);
            }
            _ => {}
        }
    }
    if since_seconds.is_some() && since_time.is_some() {
        return Err("at most one of sinceTime or sinceSeconds may be specified".into());
    }
    o.since_nanos = since_time.or(since_seconds.map(|s| now_nanos - i128::from(s) * 1_000_000_000));
    Ok(o)
}

/// One record of a CRI log file.
#[derive(Debug, PartialEq)]
pub struct Record<'a> {
    pub time: &'a str,
    pub time_nanos: i128,
    pub stream: &'a str,
    pub partial: bool,
    pub content: &'a [u8],
}

/// Parses one line (without its newline). `None` for a line that is not a CRI record.
pub fn parse_record(line: &[u8]) -> Option<Record<'_>> {
    let mut parts = line.splitn(4, |b| *b == b' ');
    let time = std::str::from_utf8(parts.next()?).ok()?;
    let stream = std::str::from_utf8(parts.next()?).ok()?;
    if stream != "stdout" && stream != "stderr" {
        return None;
    }
    let tag = parts.next()?;
    let content = parts.next().unwrap_or(&[]);
    let partial = tag.split(|b| *b == b':').any(|t| t == b"P");
    Some(Record { time, time_nanos: parse_time_nanos(time)?, stream, partial, content })
}

/// The byte offset in `data` where its last `n` lines start (upstream's tail counts lines of
/// the file, partial records included).
pub fn tail_offset(data: &[u8], n: u64) -> usize {
    if n == 0 {
        return data.len();
    }
    // A trailing newline ends the last line rather than starting an empty one.
    let end = if data.last() == Some(&b'\n') { data.len() - 1 } else { data.len() };
    let mut seen = 0;
    for (i, b) in data[..end].iter().enumerate().rev() {
        if *b == b'\n' {
            seen += 1;
            if seen == n {
                return i + 1;
            }
        }
    }
    0
}

/// Turns records into output under the options; remembers how much it wrote for limitBytes.
#[derive(Debug)]
pub struct Formatter {
    opts: LogOptions,
    written: u64,
}

impl Formatter {
    pub fn new(opts: LogOptions) -> Self {
        Formatter { opts, written: 0 }
    }

    /// The output for one line of the file, and whether the limit is reached (stop reading).
    pub fn line(&mut self, line: &[u8]) -> (Vec<u8>, bool) {
        let Some(rec) = parse_record(line) else { return (Vec::new(), self.done()) };
        if self.opts.since_nanos.is_some_and(|since| rec.time_nanos < since) {
            return (Vec::new(), false);
        }
        let mut out = Vec::with_capacity(rec.content.len() + 40);
        if self.opts.timestamps {
            out.extend_from_slice(rec.time.as_bytes());
            out.push(b' ');
        }
        out.extend_from_slice(rec.content);
        if !rec.partial {
            out.push(b'\n');
        }
        if let Some(limit) = self.opts.limit_bytes {
            let left = limit.saturating_sub(self.written);
            if (out.len() as u64) >= left {
                out.truncate(usize::try_from(left).unwrap_or(usize::MAX));
                self.written = limit;
                return (out, true);
            }
        }
        self.written += out.len() as u64;
        (out, false)
    }

    fn done(&self) -> bool {
        self.opts.limit_bytes.is_some_and(|l| self.written >= l)
    }
}

fn now_nanos() -> i128 {
    k8s_openapi::jiff::Timestamp::now().as_nanosecond()
}

/// How often a followed log is checked for new lines (upstream waits on inotify; a short poll
/// costs little at this scale).
const FOLLOW_POLL: Duration = Duration::from_millis(200);

pub async fn container_logs(
    AxState(state): AxState<Arc<State>>,
    path: ContainerArgs,
    Query(params): Query<Vec<(String, String)>>,
) -> Response {
    let opts = match parse_options(&params, now_nanos()) {
        Ok(o) => o,
        Err(e) => return status_error(StatusCode::BAD_REQUEST, e),
    };
    let rt = state.runtime.clone();
    let containers = match pod_containers(rt.as_ref(), &path.ns, &path.pod, &path.container).await {
        Ok(c) => c,
        Err(e) => return status_error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    };
    let pick = if opts.previous { containers.get(1) } else { containers.first() };
    let Some(container) = pick else {
        let msg = if opts.previous {
            format!("previous terminated container {:?} in pod {:?} not found", path.container, path.pod)
        } else {
            format!("container {:?} in pod {:?} is waiting to start: ContainerCreating", path.container, path.pod)
        };
        return status_error(StatusCode::BAD_REQUEST, msg);
    };
    let status = match rt.container_status(&container.id, false).await {
        Ok(s) => s.status.unwrap_or_default(),
        Err(e) => return status_error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    };
    let mut file = match tokio::fs::File::open(&status.log_path).await {
        Ok(f) => f,
        Err(e) => {
            return status_error(StatusCode::INTERNAL_SERVER_ERROR, format!("failed to open log file: {e}"));
        }
    };
    if let Some(n) = opts.tail_lines {
        let mut data = Vec::new();
        if let Err(e) = file.read_to_end(&mut data).await {
            return status_error(StatusCode::INTERNAL_SERVER_ERROR, format!("failed to read log file: {e}"));
        }
        let offset = tail_offset(&data, n) as u64;
        if let Err(e) = file.seek(std::io::SeekFrom::Start(offset)).await {
            return status_error(StatusCode::INTERNAL_SERVER_ERROR, format!("failed to read log file: {e}"));
        }
    }
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(16);
    let follow = opts.follow;
    let id = container.id.clone();
    tokio::spawn(async move {
        let mut reader = tokio::io::BufReader::new(file);
        let mut fmt = Formatter::new(opts);
        let mut line = Vec::new();
        let mut last_check = tokio::time::Instant::now();
        loop {
            let n = match reader.read_until(b'\n', &mut line).await {
                Ok(n) => n,
                Err(e) => {
                    let _ = tx.send(Err(e)).await;
                    return;
                }
            };
            if n > 0 && line.last() == Some(&b'\n') {
                line.pop();
                let (out, done) = fmt.line(&line);
                line.clear();
                if !out.is_empty() && tx.send(Ok(Bytes::from(out))).await.is_err() {
                    return; // the client went away
                }
                if done {
                    return;
                }
                continue;
            }
            // At the end of what is written so far (a half-written line stays in `line`).
            if !follow || tx.is_closed() {
                return;
            }
            if last_check.elapsed() >= Duration::from_secs(1) {
                last_check = tokio::time::Instant::now();
                let running = match rt.container_status(&id, false).await {
                    Ok(s) => s.status.is_some_and(|s| s.state == api::ContainerState::ContainerRunning as i32),
                    Err(_) => false,
                };
                if !running {
                    // One last read for what the container wrote before it exited.
                    continue_after_exit(&mut reader, &mut fmt, &mut line, &tx).await;
                    return;
                }
            }
            tokio::time::sleep(FOLLOW_POLL).await;
        }
    });
    let stream = futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|item| (item, rx)) });
    ([(http::header::CONTENT_TYPE, "text/plain")], Body::from_stream(stream)).into_response()
}

async fn continue_after_exit(
    reader: &mut tokio::io::BufReader<tokio::fs::File>,
    fmt: &mut Formatter,
    line: &mut Vec<u8>,
    tx: &tokio::sync::mpsc::Sender<Result<Bytes, std::io::Error>>,
) {
    while let Ok(n) = reader.read_until(b'\n', line).await {
        if n == 0 || line.last() != Some(&b'\n') {
            return;
        }
        line.pop();
        let (out, done) = fmt.line(line);
        line.clear();
        if (!out.is_empty() && tx.send(Ok(Bytes::from(out))).await.is_err()) || done {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOG: &str = "2026-11-22T14:01:15.699528963Z stdout F one\n\
2026-11-22T14:01:16.1Z stderr F two\n\
2026-11-22T14:01:17Z stdout P thr\n\
2026-11-22T14:01:17.5Z stdout F ee\n\
2026-11-22T14:01:18Z stdout F four\n";

    fn all(opts: LogOptions, data: &str) -> String {
        let mut f = Formatter::new(opts);
        let mut out = Vec::new();
        for l in data.lines() {
            let (o, done) = f.line(l.as_bytes());
            out.extend(o);
            if done {
                break;
            }
        }
        String::from_utf8(out).expect("utf-8")
    }

    #[test]
    fn records_parse_with_variable_fraction_and_partial_tag() {
        let r = parse_record(b"2026-11-22T14:01:25.70124982Z stdout P abc def").expect("record");
        assert_eq!((r.stream, r.partial, r.content), ("stdout", true, &b"abc def"[..]));
        assert_eq!(r.time_nanos % 1_000_000_000, 701_249_820);
        let r = parse_record(b"2026-11-22T14:01:25Z stderr F ").expect("empty content");
        assert_eq!(r.content, b"");
        assert!(parse_record(b"garbage").is_none());
        assert!(parse_record(b"2026-11-22T14:01:25Z stdin F x").is_none());
    }

    #[test]
    fn partial_records_join_into_one_line() {
        assert_eq!(all(LogOptions::default(), LOG), "one\ntwo\nthree\nfour\n");
    }

    #[test]
    fn timestamps_prefix_every_record() {
        let out = all(LogOptions { timestamps: true, ..Default::default() }, LOG);
        assert!(out.starts_with("2026-11-22T14:01:15.699528963Z one\n2026-11-22T14:01:16.1Z two\n"), "{out}");
    }

    #[test]
    fn since_and_limit() {
        let since = parse_time_nanos("2026-11-22T14:01:17Z");
        assert_eq!(all(LogOptions { since_nanos: since, ..Default::default() }, LOG), "three\nfour\n");
        assert_eq!(all(LogOptions { limit_bytes: Some(6), ..Default::default() }, LOG), "one\ntw");
        assert_eq!(all(LogOptions { limit_bytes: Some(4), ..Default::default() }, LOG), "one\n");
    }

    #[test]
    fn tail_counts_file_lines() {
        let d = LOG.as_bytes();
        assert_eq!(&LOG[tail_offset(d, 1)..], "2026-11-22T14:01:18Z stdout F four\n");
        assert_eq!(all(LogOptions::default(), &LOG[tail_offset(d, 3)..]), "three\nfour\n");
        assert_eq!(tail_offset(d, 100), 0);
        assert_eq!(tail_offset(d, 0), d.len());
        assert_eq!(tail_offset(b"a\nb", 1), 2);
    }

    #[test]
    fn options_parse_and_validate() {
        let q = |s: &[(&str, &str)]| -> Vec<(String, String)> {
            s.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
        };
        let o = parse_options(&q(&[("follow", "true"), ("tailLines", "5"), ("sinceSeconds", "10")]), 100_000_000_000)
            .expect("options");
        assert!(o.follow && !o.previous);
        assert_eq!(o.tail_lines, Some(5));
        assert_eq!(o.since_nanos, Some(90_000_000_000));
        assert!(parse_options(&q(&[("tailLines", "-1")]), 0).is_err());
        assert!(parse_options(&q(&[("limitBytes", "0")]), 0).is_err());
        assert!(parse_options(&q(&[("sinceSeconds", "1"), ("sinceTime", "2026-11-22T14:01:17Z")]), 0).is_err());
        let o = parse_options(&q(&[("sinceTime", "2026-11-22T14:01:17Z")]), 0).expect("sinceTime");
        assert_eq!(o.since_nanos, parse_time_nanos("2026-11-22T14:01:17Z"));
    }
}
