//! Turns output chunks into timestamped lines for a sandbox's recent log. Chunks arrive
//! in arbitrary pieces; a line is emitted when its newline arrives, or when the
//! execution ends.

use crate::model::{LogLine, Stream};
use crate::time::Timestamp;

/// Longest line kept; longer ones are cut and marked.
pub const MAX_LINE_BYTES: usize = 4096;

#[derive(Default)]
pub struct LineSplitter {
    stdout: Vec<u8>,
    stderr: Vec<u8>,
}

impl LineSplitter {
    /// Feeds a chunk; complete lines are pushed to `out`.
    pub fn feed(&mut self, stream: Stream, chunk: &[u8], out: &mut Vec<LogLine>) {
        let buf = match stream {
            Stream::Stdout => &mut self.stdout,
            Stream::Stderr => &mut self.stderr,
            Stream::Event => {
                push_line(stream, chunk, out);
                return;
            }
        };
        let mut rest = chunk;
        while let Some(pos) = rest.iter().position(|&b| b == b'\n') {
            if buf.is_empty() {
                push_line(stream, &rest[..pos], out);
            } else {
                buf.extend_from_slice(&rest[..pos]);
                push_line(stream, buf, out);
                buf.clear();
            }
            rest = &rest[pos + 1..];
        }
        // Keep a partial line, but never more than one line's worth of it.
        let room = (MAX_LINE_BYTES + 1).saturating_sub(buf.len());
        buf.extend_from_slice(&rest[..rest.len().min(room)]);
    }

    /// Emits what is left of unterminated lines.
    pub fn finish(&mut self, out: &mut Vec<LogLine>) {
        for (stream, buf) in [
            (Stream::Stdout, &mut self.stdout),
            (Stream::Stderr, &mut self.stderr),
        ] {
            if !buf.is_empty() {
                push_line(stream, buf, out);
                buf.clear();
            }
        }
    }
}

fn push_line(stream: Stream, bytes: &[u8], out: &mut Vec<LogLine>) {
    let bytes = bytes.strip_suffix(b"\r").unwrap_or(bytes);
    let mut line = if bytes.len() > MAX_LINE_BYTES {
        let mut s = String::from_utf8_lossy(&bytes[..MAX_LINE_BYTES]).into_owned();
        s.push_str(" [line cut]");
        s
    } else {
        String::from_utf8_lossy(bytes).into_owned()
    };
    line.shrink_to_fit();
    out.push(LogLine {
        at: Timestamp::now(),
        stream,
        line,
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(out: &[LogLine]) -> Vec<(&str, &str)> {
        out.iter()
            .map(|l| (l.stream.as_str(), l.line.as_str()))
            .collect()
    }

    #[test]
    fn splits_lines_across_chunks_and_streams() {
        let mut s = LineSplitter::default();
        let mut out = Vec::new();
        s.feed(Stream::Stdout, b"hel", &mut out);
        s.feed(Stream::Stderr, b"err1\nerr", &mut out);
        s.feed(Stream::Stdout, b"lo\nworld\r\n\nlast", &mut out);
        s.finish(&mut out);
        assert_eq!(
            lines(&out),
            vec![
                ("stderr", "err1"),
                ("stdout", "hello"),
                ("stdout", "world"),
                ("stdout", ""),
                ("stdout", "last"),
                ("stderr", "err"),
            ]
        );
    }

    #[test]
    fn cuts_overlong_lines() {
        let mut s = LineSplitter::default();
        let mut out = Vec::new();
        let long = vec![b'x'; MAX_LINE_BYTES * 3];
        s.feed(Stream::Stdout, &long, &mut out);
        s.feed(Stream::Stdout, &long, &mut out);
        s.feed(Stream::Stdout, b"\n", &mut out);
        assert_eq!(out.len(), 1);
        assert!(out[0].line.ends_with("[line cut]"));
        assert_eq!(out[0].line.len(), MAX_LINE_BYTES + " [line cut]".len());
    }
}
