//! Request-body decompression (`Content-Encoding: zstd` or `gzip`) under a process-wide budget
//! of decoded bytes in flight.
//!
//! A small body can decode to gigabytes. Each request is capped (`max_decoded`, a 413), and all
//! requests together are capped by a [`DecodeBudget`]: a decoder's own memory and the decoded
//! body are reserved from it before they are allocated, and held until the request is done
//! with them. When the budget is spent, a request waits briefly for it, then gets a 503 with
//! `Retry-After` naming the cause.
//!
//! The decoded size is known before the buffer is allocated: a zstd frame that declares its
//! content size is trusted for the reservation (the decoder checks the declaration), anything
//! else is decoded once to count. So the buffer is allocated once at its exact size, and a
//! bomb stopped at the limit allocates nothing but the decoder.

use std::io::Read;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use sextant_proto::{truncate, ApiError, ErrorKind};

/// How long a request waits for decode budget before its 503.
pub const DECODE_BUDGET_WAIT: Duration = Duration::from_secs(2);

/// zstd windows above 8 MiB are refused: the window is memory every decoder holds, and HTTP's
/// zstd encoding (RFC 9659) caps it at 8 MiB for that reason.
const ZSTD_WINDOW_LOG_MAX: u32 = 23;
/// What a decoder holds besides its output: a zstd window and buffers; inflate's state.
const ZSTD_DECODER_BYTES: usize = (8 << 20) + (256 << 10);
const GZIP_DECODER_BYTES: usize = 64 << 10;
/// Chunk of the counting pass.
const COUNT_CHUNK: usize = 128 << 10;

/// The process-wide budget of decoded bytes in flight, counted in KiB. Cloning shares it.
#[derive(Clone, Debug)]
pub struct DecodeBudget {
    permits: Arc<Semaphore>,
    total_kib: u32,
    wait: Duration,
}

/// Budget held until dropped.
#[derive(Debug)]
pub struct Reservation {
    permit: OwnedSemaphorePermit,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        metrics::gauge!("sextant_decoded_bytes_in_flight").decrement(self.permit.num_permits() as f64 * 1024.0);
    }
}

impl DecodeBudget {
    /// A budget of `total_bytes` (at least 1 KiB), each reservation waiting at most `wait`.
    pub fn new(total_bytes: usize, wait: Duration) -> Self {
        let total_kib = (total_bytes / 1024).clamp(1, u32::MAX as usize) as u32;
        Self { permits: Arc::new(Semaphore::new(total_kib as usize)), total_kib, wait }
    }

    pub fn total_bytes(&self) -> usize {
        self.total_kib as usize * 1024
    }

    /// Bytes reserved right now.
    pub fn in_use_bytes(&self) -> usize {
        (self.total_kib as usize - self.permits.available_permits()) * 1024
    }

    /// Reserves `bytes` (rounded up to KiB; more than the whole budget reserves the whole
    /// budget, so one request can always run alone), waiting at most the budget's wait.
    pub async fn reserve(&self, bytes: usize) -> Result<Reservation, ApiError> {
        let kib = bytes.div_ceil(1024).clamp(1, self.total_kib as usize) as u32;
        let permit = match self.permits.clone().try_acquire_many_owned(kib) {
            Ok(p) => p,
            Err(_) => match tokio::time::timeout(self.wait, self.permits.clone().acquire_many_owned(kib)).await {
                Ok(Ok(p)) => p,
                _ => {
                    metrics::counter!("sextant_decode_budget_exhausted_total").increment(1);
                    return Err(ApiError::unavailable(format!(
                        "the server is decompressing too many request bodies at once \
                         (limits.max_decoded_bytes_in_flight = {} bytes); retry shortly",
                        self.total_bytes()
                    )));
                }
            },
        };
        metrics::gauge!("sextant_decoded_bytes_in_flight").increment(kib as f64 * 1024.0);
        Ok(Reservation { permit })
    }
}

/// A decoded body and the budget it holds (released when this is dropped: keep it while the
/// bytes, or anything borrowed from them, are in use).
#[derive(Debug)]
pub struct Decoded {
    pub bytes: Bytes,
    _held: Option<Reservation>,
}

#[derive(Clone, Copy)]
enum Codec {
    Zstd,
    Gzip,
}

impl Codec {
    fn name(self) -> &'static str {
        match self {
            Codec::Zstd => "zstd",
            Codec::Gzip => "gzip",
        }
    }

    fn decoder_bytes(self) -> usize {
        match self {
            Codec::Zstd => ZSTD_DECODER_BYTES,
            Codec::Gzip => GZIP_DECODER_BYTES,
        }
    }

    fn invalid(self, e: std::io::Error) -> ApiError {
        let e = e.to_string();
        if matches!(self, Codec::Zstd) && e.contains("memory") {
            return ApiError::bad_request(format!("zstd body uses a window above 8 MiB, which is not accepted: {e}"));
        }
        ApiError::bad_request(format!("body is not valid {}: {e}", self.name()))
    }

    fn reader(self, body: &[u8]) -> Result<Box<dyn Read + '_>, ApiError> {
        Ok(match self {
            Codec::Zstd => {
                let mut d = zstd::stream::read::Decoder::with_buffer(body).map_err(|e| self.invalid(e))?;
                d.window_log_max(ZSTD_WINDOW_LOG_MAX).map_err(|e| self.invalid(e))?;
                Box::new(d)
            }
            Codec::Gzip => Box::new(flate2::read::GzDecoder::new(body)),
        })
    }

    /// The decoded size a zstd body declares: one frame with its content size in the header.
    fn declared_size(self, body: &[u8]) -> Option<u64> {
        match self {
            Codec::Zstd => {
                let frame = zstd::zstd_safe::find_frame_compressed_size(body).ok()?;
                if frame != body.len() {
                    return None;
                }
                zstd::zstd_safe::get_frame_content_size(body).ok().flatten()
            }
            Codec::Gzip => None,
        }
    }

    /// Decodes to count, stopping at `cap` bytes.
    fn count(self, body: &[u8], cap: u64) -> Result<u64, ApiError> {
        let mut r = self.reader(body)?.take(cap);
        let mut chunk = vec![0u8; COUNT_CHUNK];
        let mut n = 0u64;
        loop {
            match r.read(&mut chunk) {
                Ok(0) => return Ok(n),
                Ok(k) => n += k as u64,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(self.invalid(e)),
            }
        }
    }

    /// Decodes into a buffer allocated once, at `size`; anything but `size` bytes is invalid.
    fn decode_exact(self, body: &[u8], size: usize) -> Result<Vec<u8>, ApiError> {
        let mut out = Vec::with_capacity(size);
        self.reader(body)?.take(size as u64 + 1).read_to_end(&mut out).map_err(|e| self.invalid(e))?;
        if out.len() != size {
            return Err(ApiError::bad_request(format!(
                "body is not valid {}: it decodes to {} bytes but declares {size}",
                self.name(),
                out.len()
            )));
        }
        Ok(out)
    }
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T, ApiError> + Send + 'static) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f).await.map_err(|e| {
        tracing::error!(error = %e, "body decoder task failed");
        ApiError::internal()
    })?
}

fn codec(encoding: Option<&str>) -> Result<Option<Codec>, ApiError> {
    let encoding = encoding.map(|e| e.trim().to_ascii_lowercase());
    match encoding.as_deref() {
        None | Some("") | Some("identity") => Ok(None),
        Some("zstd") => Ok(Some(Codec::Zstd)),
        Some("gzip") => Ok(Some(Codec::Gzip)),
        Some(other) => Err(ApiError::new(
            ErrorKind::UnsupportedMediaType,
            format!("Content-Encoding {:?} is not supported; use zstd, gzip or none", truncate(other)),
        )),
    }
}

fn too_big(max_decoded: usize) -> ApiError {
    ApiError::new(ErrorKind::PayloadTooLarge, format!("decompressed body exceeds the {max_decoded}-byte limit"))
}

/// The decoded size, from the zstd frame header or by decoding to count; 413 above the limit.
fn decoded_size(codec: Codec, body: &[u8], max_decoded: usize) -> Result<usize, ApiError> {
    let n = match codec.declared_size(body) {
        Some(n) => n,
        None => codec.count(body, max_decoded as u64 + 1)?,
    };
    if n > max_decoded as u64 {
        return Err(too_big(max_decoded));
    }
    Ok(n as usize)
}

/// Undoes `Content-Encoding`, refusing to inflate past `max_decoded` bytes (a zip bomb: 413)
/// and reserving what it decodes from `budget` (503 when the budget stays spent). Decoding
/// runs on the blocking pool.
pub async fn decode_body(encoding: Option<&str>, body: Bytes, max_decoded: usize, budget: &DecodeBudget) -> Result<Decoded, ApiError> {
    let Some(codec) = codec(encoding)? else { return Ok(Decoded { bytes: body, _held: None }) };
    // The decoder's own memory, while it runs.
    let scratch = budget.reserve(codec.decoder_bytes()).await?;
    let size = match codec.declared_size(&body) {
        Some(n) if n > max_decoded as u64 => return Err(too_big(max_decoded)),
        Some(n) => n as usize,
        None => {
            let b = body.clone();
            blocking(move || decoded_size(codec, &b, max_decoded)).await?
        }
    };
    let held = budget.reserve(size).await?;
    let out = blocking(move || codec.decode_exact(&body, size)).await?;
    drop(scratch);
    Ok(Decoded { bytes: Bytes::from(out), _held: Some(held) })
}

/// [`decode_body`] on the calling thread and without a budget, for tools and fuzzing: the
/// same limits and the same single allocation.
pub fn decode_body_blocking(encoding: Option<&str>, body: Bytes, max_decoded: usize) -> Result<Bytes, ApiError> {
    let Some(codec) = codec(encoding)? else { return Ok(body) };
    let size = decoded_size(codec, &body, max_decoded)?;
    Ok(Bytes::from(codec.decode_exact(&body, size)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget(bytes: usize) -> DecodeBudget {
        DecodeBudget::new(bytes, Duration::from_millis(100))
    }

    #[tokio::test]
    async fn decodes_and_bounds_compressed_bodies() {
        let b = budget(64 << 20);
        let plain = Bytes::from(vec![b'a'; 10_000]);
        let z = Bytes::from(zstd::encode_all(&plain[..], 1).unwrap());
        assert_eq!(decode_body(Some("zstd"), z.clone(), 20_000, &b).await.unwrap().bytes, plain);
        assert_eq!(decode_body(Some("zstd"), z, 5_000, &b).await.unwrap_err().kind, ErrorKind::PayloadTooLarge);
        assert_eq!(decode_body(Some("zstd"), plain.clone(), 20_000, &b).await.unwrap_err().kind, ErrorKind::BadRequest);
        assert_eq!(decode_body(Some("br"), plain.clone(), 20_000, &b).await.unwrap_err().kind, ErrorKind::UnsupportedMediaType);
        assert_eq!(decode_body(None, plain.clone(), 1, &b).await.unwrap().bytes, plain);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, &plain).unwrap();
        let gz = Bytes::from(gz.finish().unwrap());
        assert_eq!(decode_body(Some("gzip"), gz.clone(), 20_000, &b).await.unwrap().bytes, plain);
        assert_eq!(decode_body(Some("GZIP "), gz, 9_999, &b).await.unwrap_err().kind, ErrorKind::PayloadTooLarge);
        assert_eq!(b.in_use_bytes(), 0, "every reservation is returned");
        let z = Bytes::from(zstd::encode_all(&plain[..], 1).unwrap());
        assert_eq!(decode_body_blocking(Some("zstd"), z.clone(), 20_000).unwrap(), plain);
        assert_eq!(decode_body_blocking(Some("zstd"), z, 5_000).unwrap_err().kind, ErrorKind::PayloadTooLarge);
        assert_eq!(decode_body_blocking(Some("br"), plain, 5_000).unwrap_err().kind, ErrorKind::UnsupportedMediaType);
    }

    #[tokio::test]
    async fn streamed_frames_without_a_declared_size_are_counted_and_two_frames_are_one_body() {
        let b = budget(64 << 20);
        let mut enc = zstd::stream::write::Encoder::new(Vec::new(), 3).unwrap();
        enc.include_contentsize(false).unwrap();
        std::io::Write::write_all(&mut enc, &[7u8; 50_000]).unwrap();
        let streamed = enc.finish().unwrap();
        assert_eq!(decode_body(Some("zstd"), Bytes::from(streamed.clone()), 50_000, &b).await.unwrap().bytes.len(), 50_000);
        assert_eq!(
            decode_body(Some("zstd"), Bytes::from(streamed.clone()), 49_999, &b).await.unwrap_err().kind,
            ErrorKind::PayloadTooLarge
        );
        let mut two = zstd::encode_all(&[1u8; 1000][..], 1).unwrap();
        two.extend(zstd::encode_all(&[2u8; 1000][..], 1).unwrap());
        let d = decode_body(Some("zstd"), Bytes::from(two), 5_000, &b).await.unwrap();
        assert_eq!(d.bytes.len(), 2000);
        assert_eq!(d.bytes[1500], 2);
    }

    #[tokio::test]
    async fn a_body_that_lies_about_its_size_is_refused() {
        let b = budget(64 << 20);
        let mut z = zstd::encode_all(&[9u8; 4096][..], 1).unwrap();
        // The frame header's content-size field (single-segment frames put it after the
        // descriptor): change it and the decoder must notice.
        let descriptor = z[4];
        assert!(descriptor & 0x20 != 0, "a single-segment frame");
        z[5] ^= 0x01;
        let err = decode_body(Some("zstd"), Bytes::from(z), 1 << 20, &b).await.unwrap_err();
        assert_eq!(err.kind, ErrorKind::BadRequest, "{err}");
    }

    #[tokio::test]
    async fn the_budget_is_shared_and_a_spent_budget_is_a_503_naming_it() {
        let b = budget(16 << 20);
        let plain = vec![0u8; 6 << 20];
        let z = Bytes::from(zstd::encode_all(&plain[..], 3).unwrap());
        // 8.25 MiB of decoder plus 6 MiB of body: a second one cannot fit beside it.
        let first = decode_body(Some("zstd"), z.clone(), 8 << 20, &b).await.unwrap();
        assert!(b.in_use_bytes() >= 6 << 20 && b.in_use_bytes() < 7 << 20, "{}", b.in_use_bytes());
        let err = decode_body(Some("zstd"), z.clone(), 8 << 20, &b).await.unwrap_err();
        assert_eq!(err.kind, ErrorKind::Unavailable);
        assert!(err.message.contains("limits.max_decoded_bytes_in_flight"), "{}", err.message);
        drop(first);
        assert_eq!(b.in_use_bytes(), 0);
        assert_eq!(decode_body(Some("zstd"), z, 8 << 20, &b).await.unwrap().bytes.len(), 6 << 20);
    }

    #[tokio::test]
    async fn large_windows_are_refused() {
        let b = budget(64 << 20);
        let mut enc = zstd::stream::write::Encoder::new(Vec::new(), 3).unwrap();
        enc.window_log(27).unwrap();
        enc.include_contentsize(false).unwrap();
        enc.long_distance_matching(true).unwrap();
        std::io::Write::write_all(&mut enc, &vec![3u8; 20 << 20]).unwrap();
        let z = enc.finish().unwrap();
        let err = decode_body(Some("zstd"), Bytes::from(z), 64 << 20, &b).await.unwrap_err();
        assert_eq!(err.kind, ErrorKind::BadRequest);
        assert!(err.message.contains("window"), "{}", err.message);
    }
}
