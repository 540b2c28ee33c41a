//! Body compression, named by the `compression` header (spec §1.3,
//! `kombu/compression.py`). The header holds a MIME type; kombu also accepts
//! its aliases (`zlib`, `gzip`) when decoding.

use std::io::{Read, Write};

use flate2::read::ZlibDecoder;
use flate2::write::ZlibEncoder;

use crate::error::{DecodeError, DecodeErrorKind, Error};

/// The compressions we implement. kombu's bz2/lzma/brotli/zstd are refused
/// with a typed error: Celery never uses them unless configured to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Compression {
    /// kombu `zlib` (header value `application/x-gzip`, though it is zlib, not gzip).
    Zlib,
}

impl Compression {
    /// The value kombu writes in the `compression` header.
    pub fn content_type(self) -> &'static str {
        match self {
            Compression::Zlib => "application/x-gzip",
        }
    }

    /// A header value or alias (`zlib`, `gzip`, `application/x-gzip`).
    pub fn from_header(value: &str) -> Option<Self> {
        match value {
            "application/x-gzip" | "zlib" | "gzip" => Some(Compression::Zlib),
            _ => None,
        }
    }

    /// `zlib.compress(body)` at Python's default level (6).
    pub fn compress(self, body: &[u8]) -> Result<Vec<u8>, Error> {
        match self {
            Compression::Zlib => {
                let mut enc = ZlibEncoder::new(Vec::new(), flate2::Compression::new(6));
                enc.write_all(body)
                    .and_then(|()| enc.finish())
                    .map_err(|e| Error::Encode(format!("zlib: {e}")))
            }
        }
    }

    /// Decompress, refusing output larger than `limit` bytes (a small
    /// compressed body can expand to gigabytes).
    pub fn decompress(self, body: &[u8], limit: Option<usize>) -> Result<Vec<u8>, DecodeError> {
        match self {
            Compression::Zlib => read_limited(ZlibDecoder::new(body), limit, "zlib"),
        }
    }
}

/// Decompress `body` as the `compression` header says.
pub fn decompress(header: &str, body: &[u8], limit: Option<usize>) -> Result<Vec<u8>, DecodeError> {
    let compression = Compression::from_header(header).ok_or_else(|| {
        DecodeError::new(
            DecodeErrorKind::Compression,
            format!("unsupported compression {header:?}"),
        )
    })?;
    compression.decompress(body, limit)
}

fn read_limited(
    reader: impl Read,
    limit: Option<usize>,
    name: &str,
) -> Result<Vec<u8>, DecodeError> {
    let mut out = Vec::new();
    let cap = limit.map_or(u64::MAX, |l| (l as u64).saturating_add(1));
    reader
        .take(cap)
        .read_to_end(&mut out)
        .map_err(|e| DecodeError::new(DecodeErrorKind::Compression, format!("{name}: {e}")))?;
    match limit {
        Some(l) if out.len() > l => Err(DecodeError::new(
            DecodeErrorKind::Oversized,
            format!("decompressed body exceeds {l} bytes"),
        )),
        _ => Ok(out),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    /// The body of `redis-msg-compression.json`, as kombu's zlib wrote it.
    const CAPTURED: &str = "789c8b8e36d451308ad551a8ae0562a5e4c49c9ca4c4e4ec62252b85bcd29c1c1d05a5d4a2223491e48cc4cc3c646e7e510a945b1b0b0009d119f0";
    const PLAIN: &[u8] =
        br#"[[1, 2], {}, {"callbacks": null, "errbacks": null, "chain": null, "chord": null}]"#;

    fn unhex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn zlib_matches_kombu() {
        let captured = unhex(CAPTURED);
        assert_eq!(
            decompress("application/x-gzip", &captured, None).unwrap(),
            PLAIN
        );
        assert_eq!(Compression::Zlib.compress(PLAIN).unwrap(), captured);
    }

    #[test]
    fn truncated_unknown_and_oversized_are_typed() {
        let captured = unhex(CAPTURED);
        let truncated = &captured[..captured.len() / 2];
        let kind = |r: Result<Vec<u8>, DecodeError>| r.unwrap_err().kind;
        assert_eq!(
            kind(decompress("zlib", truncated, None)),
            DecodeErrorKind::Compression
        );
        assert_eq!(
            kind(decompress("application/x-bz2", &captured, None)),
            DecodeErrorKind::Compression
        );
        assert_eq!(
            kind(decompress("zlib", &captured, Some(10))),
            DecodeErrorKind::Oversized
        );
    }
}
