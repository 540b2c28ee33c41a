//! The container's stdout and stderr, followed from the daemon and cut into
//! lines as the task wrote them.

use bollard::container::LogOutput;
use bollard::query_parameters::LogsOptionsBuilder;
use bollard::Docker;
use futures::StreamExt;
use tokio::sync::mpsc;

use crate::runtime::{LogLine, LogStream};

/// A line longer than this is passed on in pieces, so one endless line
/// cannot exhaust the worker's memory.
const MAX_LINE: usize = 1024 * 1024;

/// Forward every line until the container stops (the daemon then ends the
/// stream); dropping `logs` at the end tells the collector it has them all.
pub(super) async fn follow(docker: Docker, id: String, logs: mpsc::Sender<LogLine>) {
    let options = LogsOptionsBuilder::new()
        .follow(true)
        .stdout(true)
        .stderr(true)
        .build();
    let mut stream = docker.logs(&id, Some(options));
    let mut out = Lines::new(LogStream::Stdout);
    let mut err = Lines::new(LogStream::Stderr);
    while let Some(item) = stream.next().await {
        let lines = match item {
            Ok(LogOutput::StdOut { message }) => out.push(&message),
            Ok(LogOutput::StdErr { message }) => err.push(&message),
            Ok(LogOutput::StdIn { .. } | LogOutput::Console { .. }) => Vec::new(),
            Err(e) => {
                tracing::warn!(container = %id, error = %e, "the container's log stream broke off");
                break;
            }
        };
        if send(&logs, lines).await.is_err() {
            return;
        }
    }
    let rest = out.finish().into_iter().chain(err.finish()).collect();
    let _ = send(&logs, rest).await;
}

async fn send(logs: &mpsc::Sender<LogLine>, lines: Vec<LogLine>) -> Result<(), ()> {
    for line in lines {
        logs.send(line).await.map_err(|_| ())?;
    }
    Ok(())
}

/// Bytes of one stream, cut at `\n` (a trailing `\r` goes too, as
/// `BufRead::lines` does for the process runtime).
struct Lines {
    stream: LogStream,
    buf: Vec<u8>,
}

impl Lines {
    fn new(stream: LogStream) -> Self {
        Lines {
            stream,
            buf: Vec::new(),
        }
    }

    fn push(&mut self, mut chunk: &[u8]) -> Vec<LogLine> {
        let mut lines = Vec::new();
        while !chunk.is_empty() {
            let room = MAX_LINE - self.buf.len();
            let newline = chunk.iter().take(room).position(|b| *b == b'\n');
            let n = newline.map_or(room.min(chunk.len()), |i| i + 1);
            self.buf.extend_from_slice(&chunk[..n]);
            chunk = &chunk[n..];
            if newline.is_some() || self.buf.len() >= MAX_LINE {
                lines.push(self.take());
            }
        }
        lines
    }

    fn finish(&mut self) -> Option<LogLine> {
        (!self.buf.is_empty()).then(|| self.take())
    }

    fn take(&mut self) -> LogLine {
        let mut bytes = std::mem::take(&mut self.buf);
        if bytes.ends_with(b"\n") {
            bytes.pop();
            if bytes.ends_with(b"\r") {
                bytes.pop();
            }
        }
        LogLine {
            stream: self.stream,
            line: String::from_utf8_lossy(&bytes).into_owned(),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn texts(lines: Vec<LogLine>) -> Vec<String> {
        lines.into_iter().map(|l| l.line).collect()
    }

    #[test]
    fn cuts_lines_across_chunks() {
        let mut l = Lines::new(LogStream::Stdout);
        assert_eq!(texts(l.push(b"a\nb")), ["a"]);
        assert_eq!(texts(l.push(b"c\r\n\nd")), ["bc", ""]);
        assert_eq!(l.finish().map(|l| l.line), Some("d".to_owned()));
        assert_eq!(l.finish(), None);
    }

    #[test]
    fn endless_lines_come_in_pieces() {
        let mut l = Lines::new(LogStream::Stderr);
        let big = vec![b'x'; MAX_LINE + 10];
        let lines = l.push(&big);
        assert_eq!(lines.len(), 1);
        assert_eq!(lines[0].line.len(), MAX_LINE);
        assert_eq!(lines[0].stream, LogStream::Stderr);
        assert_eq!(l.finish().map(|l| l.line.len()), Some(10));
    }
}
