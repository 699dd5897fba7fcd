//! Request bodies sent with `Content-Encoding: gzip` or `deflate` (Triton's client compresses with
//! either), inflated frame by frame as they arrive into a buffer that refuses to grow past
//! `--max-body-bytes`: a small body that would inflate to gigabytes is refused once the limit is
//! reached, never inflated whole. Done in the body extractor rather than by a middleware, so
//! that the plain bodies most requests send pay nothing but a header lookup.

use std::io::{self, Write};

use axum::http::{HeaderMap, header};
use flate2::write::{GzDecoder, ZlibDecoder};

use super::error::ApiError;

/// How a request body is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Coding {
    Identity,
    Gzip,
    /// HTTP's `deflate`: the zlib format (RFC 9110, section 8.4.1.2).
    Deflate,
}

impl Coding {
    /// The body's coding from `Content-Encoding`; another coding (or several layered) is refused,
    /// naming it.
    pub(crate) fn of(headers: &HeaderMap) -> Result<Coding, ApiError> {
        let Some(value) = headers.get(header::CONTENT_ENCODING) else {
            return Ok(Coding::Identity);
        };
        match value.as_bytes().trim_ascii() {
            b"identity" | b"" => Ok(Coding::Identity),
            b"gzip" | b"x-gzip" => Ok(Coding::Gzip),
            b"deflate" => Ok(Coding::Deflate),
            other => Err(ApiError::UnsupportedEncoding {
                encoding: String::from_utf8_lossy(other).into_owned(),
            }),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Coding::Identity => "identity",
            Coding::Gzip => "gzip",
            Coding::Deflate => "deflate",
        }
    }
}

/// Why a body could not be inflated.
#[derive(Debug)]
pub(crate) enum InflateError {
    /// It inflates past the body limit.
    TooLarge,
    /// It is not the coding it claims: the decompressor's reason.
    Invalid(String),
}

/// The inflated bytes, bounded by the body limit. Its writes fail with [`Overflow`] instead of
/// growing past it; the decompressors hand their output over in slices of their own buffer's
/// size, so nothing much larger than the limit is ever allocated.
struct Bounded {
    bytes: Vec<u8>,
    limit: usize,
}

/// The error [`Bounded`] fails a write with.
#[derive(Debug, thiserror::Error)]
#[error("the inflated body exceeds the limit")]
struct Overflow;

impl Write for Bounded {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.bytes.len() + data.len() > self.limit {
            return Err(io::Error::other(Overflow));
        }
        super::body::make_room(&mut self.bytes, data.len(), self.limit);
        self.bytes.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

enum Decoder {
    Gzip(GzDecoder<Bounded>),
    Deflate(ZlibDecoder<Bounded>),
}

/// A compressed body being inflated.
pub(crate) struct Inflater {
    decoder: Decoder,
    coding: Coding,
}

impl Inflater {
    /// An inflater for `coding` whose output may not pass `limit` bytes; `None` for a plain body.
    pub(crate) fn new(coding: Coding, limit: usize) -> Option<Inflater> {
        let sink = Bounded {
            bytes: Vec::new(),
            limit,
        };
        let decoder = match coding {
            Coding::Identity => return None,
            Coding::Gzip => Decoder::Gzip(GzDecoder::new(sink)),
            Coding::Deflate => Decoder::Deflate(ZlibDecoder::new(sink)),
        };
        Some(Inflater { decoder, coding })
    }

    /// Inflates the next piece of the compressed body.
    pub(crate) fn push(&mut self, compressed: &[u8]) -> Result<(), InflateError> {
        let written = match &mut self.decoder {
            Decoder::Gzip(decoder) => decoder.write_all(compressed),
            Decoder::Deflate(decoder) => decoder.write_all(compressed),
        };
        written.map_err(|err| self.explain(err))
    }

    /// Bytes the inflated body holds memory for (what it takes of the body budget).
    pub(crate) fn capacity(&self) -> usize {
        match &self.decoder {
            Decoder::Gzip(decoder) => decoder.get_ref().bytes.capacity(),
            Decoder::Deflate(decoder) => decoder.get_ref().bytes.capacity(),
        }
    }

    /// The whole inflated body, once the compressed one has ended: a stream cut short is
    /// invalid.
    pub(crate) fn finish(self) -> Result<Vec<u8>, InflateError> {
        let coding = self.coding;
        let finished = match self.decoder {
            Decoder::Gzip(decoder) => decoder.finish(),
            Decoder::Deflate(decoder) => decoder.finish(),
        };
        finished
            .map(|sink| sink.bytes)
            .map_err(|err| explain(coding, err))
    }

    fn explain(&self, err: io::Error) -> InflateError {
        explain(self.coding, err)
    }
}

fn explain(coding: Coding, err: io::Error) -> InflateError {
    if err.get_ref().is_some_and(|inner| inner.is::<Overflow>()) {
        InflateError::TooLarge
    } else {
        InflateError::Invalid(format!(
            "the {} body does not inflate: {err}",
            coding.name()
        ))
    }
}

#[cfg(test)]
mod tests {
    use flate2::{Compression, write::GzEncoder};

    use super::*;

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut encoder = GzEncoder::new(Vec::new(), Compression::default());
        encoder.write_all(bytes).unwrap();
        encoder.finish().unwrap()
    }

    fn headers(encoding: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_ENCODING, encoding.parse().unwrap());
        headers
    }

    #[test]
    fn codings_are_read_from_the_header() {
        assert_eq!(Coding::of(&HeaderMap::new()).unwrap(), Coding::Identity);
        assert_eq!(Coding::of(&headers("gzip")).unwrap(), Coding::Gzip);
        assert_eq!(Coding::of(&headers("deflate")).unwrap(), Coding::Deflate);
        for refused in ["br", "zstd", "gzip, deflate"] {
            let err = Coding::of(&headers(refused)).unwrap_err().to_string();
            assert!(err.contains(&format!("'{refused}'")), "{err}");
        }
    }

    #[test]
    fn bodies_inflate_in_any_pieces_and_stop_at_the_limit() {
        let text = b"0123456789".repeat(1000);
        let compressed = gzip(&text);
        let mut inflater = Inflater::new(Coding::Gzip, text.len()).unwrap();
        for piece in compressed.chunks(7) {
            inflater.push(piece).unwrap();
        }
        assert_eq!(inflater.finish().unwrap(), text);

        let mut small = Inflater::new(Coding::Gzip, text.len() - 1).unwrap();
        let refused = compressed
            .chunks(7)
            .find_map(|piece| small.push(piece).err())
            .or_else(|| small.finish().err());
        assert!(
            matches!(refused, Some(InflateError::TooLarge)),
            "{refused:?}"
        );
    }

    #[test]
    fn bodies_that_are_not_their_coding_are_named() {
        let mut inflater = Inflater::new(Coding::Gzip, 1 << 20).unwrap();
        let err = inflater.push(b"not gzip at all").err();
        let Some(InflateError::Invalid(reason)) = err else {
            panic!("{err:?}");
        };
        assert!(reason.contains("gzip body does not inflate"), "{reason}");

        let cut = gzip(b"hello world");
        let mut inflater = Inflater::new(Coding::Gzip, 1 << 20).unwrap();
        inflater.push(&cut[..cut.len() / 2]).unwrap();
        assert!(matches!(inflater.finish(), Err(InflateError::Invalid(_))));
    }
}
