//! zstd compression of chunks, with reusable contexts for the hot path.

use hs_base::code;

use crate::error::{Error, ErrorKind, Result};

/// The default zstd level.
pub const DEFAULT_LEVEL: i32 = 3;

fn clamp_level(level: i32) -> i32 {
    let range = zstd::compression_level_range();
    level.clamp(*range.start(), *range.end())
}

/// Compresses `data` with zstd at `level` (clamped to zstd's range).
/// Allocates a fresh context; use [`Compressor`] in loops.
///
/// # Panics
/// Only if zstd cannot allocate its working memory.
pub fn compress(data: &[u8], level: i32) -> Vec<u8> {
    let level = clamp_level(level);
    // With a valid level, zstd fails only when it cannot allocate; never
    // return something that is not a frame of `data`.
    match zstd::bulk::compress(data, level) {
        Ok(v) => v,
        Err(_) => zstd::stream::encode_all(data, level)
            .expect("zstd with a valid level fails only when out of memory"),
    }
}

/// Decompresses one zstd frame, refusing output larger than `max_len`.
/// Corrupt input is an error with code `verify.decompress_failed`.
pub fn decompress(data: &[u8], max_len: usize) -> Result<Vec<u8>> {
    // A fresh buffer: `decompress_into` reserves exactly what the frame
    // header declares (our frames always declare it), not `max_len`, which
    // may be a generous upper bound.
    let mut out = Vec::new();
    decompress_into(data, max_len, &mut out)?;
    Ok(out)
}

/// The size `data`'s zstd frame declares, checked against `max_len`.
fn declared_len(data: &[u8], max_len: usize) -> Result<Option<usize>> {
    match zstd::zstd_safe::get_frame_content_size(data) {
        Ok(Some(n)) if n <= max_len as u64 => Ok(Some(n as usize)),
        Ok(Some(n)) => Err(Error::of_kind(
            ErrorKind::TooLarge,
            code::VERIFY_DECOMPRESS_FAILED,
            format!("compressed data declares {n} bytes, more than the {max_len} allowed"),
        )),
        _ => Ok(None),
    }
}

/// A reader of the plaintext of the zstd frame `data`, for decoding it as it is
/// decompressed instead of holding it whole. A frame declaring more than `max_len`
/// bytes is refused here; reading past `max_len` bytes of one that does not
/// declare its size fails with [`std::io::ErrorKind::InvalidData`].
pub fn decompress_reader(data: &[u8], max_len: usize) -> Result<impl std::io::Read + '_> {
    declared_len(data, max_len)?;
    let inner = zstd::stream::read::Decoder::with_buffer(data).map_err(|e| {
        Error::of_kind(
            ErrorKind::Corrupt,
            code::VERIFY_DECOMPRESS_FAILED,
            "compressed data is corrupt",
        )
        .with_source(e)
    })?;
    Ok(Limited {
        inner,
        left: max_len,
    })
}

/// A reader that fails instead of yielding more than `left` more bytes.
struct Limited<R> {
    inner: R,
    left: usize,
}

impl<R: std::io::Read> std::io::Read for Limited<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        if self.left == 0 {
            let mut probe = [0u8; 1];
            return match self.inner.read(&mut probe)? {
                0 => Ok(0),
                _ => Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    "compressed data holds more than the length allowed",
                )),
            };
        }
        let n = buf.len().min(self.left);
        let got = self.inner.read(&mut buf[..n])?;
        self.left -= got;
        Ok(got)
    }
}

/// Compresses what `write` writes into one zstd frame at `level`, appended to
/// `out`: for encoding a large value (a manifest) without holding its plaintext.
/// `write` is called twice, first to count the bytes (the frame declares its
/// size, as [`compress`]'s do), so it must write the same bytes both times.
pub fn compress_streamed<F>(level: i32, out: Vec<u8>, mut write: F) -> std::io::Result<Vec<u8>>
where
    F: FnMut(&mut dyn std::io::Write) -> std::io::Result<()>,
{
    let mut count = Counter(0);
    write(&mut count)?;
    let mut enc = zstd::stream::write::Encoder::new(out, clamp_level(level))?;
    enc.include_contentsize(true)?;
    enc.set_pledged_src_size(Some(count.0))?;
    {
        let mut buffered = std::io::BufWriter::with_capacity(64 << 10, &mut enc);
        write(&mut buffered)?;
        std::io::Write::flush(&mut buffered)?;
    }
    enc.finish()
}

/// A zstd frame compressed as its input arrives, which can be read as a complete frame
/// at any point: for an object that is stored again and again as it grows (the
/// in-progress WAL segment), so each store compresses only what arrived since the last.
///
/// [`FrameBuilder::snapshot`] flushes the compressor to a block boundary (the stream
/// goes on from there, so later data still finds matches in earlier data) and ends a
/// copy of the stream with an empty last block: a frame any zstd decoder reads. The
/// frame does not declare its content size (it is not known in advance);
/// [`decompress`] bounds it by its `max_len` instead. No content checksum is written.
pub struct FrameBuilder {
    enc: zstd::stream::write::Encoder<'static, Vec<u8>>,
    fed: u64,
}

/// A zstd block header: last block, raw, 0 bytes (RFC 8878, 3.1.1.2).
const LAST_EMPTY_BLOCK: [u8; 3] = [1, 0, 0];

impl FrameBuilder {
    /// A builder compressing at `level` (clamped to zstd's range).
    pub fn new(level: i32) -> Result<FrameBuilder> {
        let init = |e: std::io::Error| {
            Error::of_kind(
                ErrorKind::Internal,
                code::IO_COMPRESSOR_INIT_FAILED,
                "could not create a zstd compression context",
            )
            .with_source(e)
        };
        let mut enc =
            zstd::stream::write::Encoder::new(Vec::new(), clamp_level(level)).map_err(init)?;
        enc.include_checksum(false).map_err(init)?;
        enc.include_contentsize(false).map_err(init)?;
        Ok(FrameBuilder { enc, fed: 0 })
    }

    /// Compresses `data` onto the end of the frame.
    pub fn push(&mut self, data: &[u8]) -> Result<()> {
        std::io::Write::write_all(&mut self.enc, data).map_err(stream_failed)?;
        self.fed += data.len() as u64;
        Ok(())
    }

    /// How many bytes were pushed.
    pub fn fed(&self) -> u64 {
        self.fed
    }

    /// Appends to `out` one complete zstd frame of everything pushed so far. At least one
    /// byte must have been pushed.
    pub fn snapshot(&mut self, out: &mut Vec<u8>) -> Result<()> {
        if self.fed == 0 {
            return Err(Error::of_kind(
                ErrorKind::Internal,
                code::INTERNAL_UNEXPECTED,
                "a frame snapshot was asked for before any data",
            )
            .with_suggestion("this is a bug in pg_hardstorage: report it"));
        }
        std::io::Write::flush(&mut self.enc).map_err(stream_failed)?;
        out.extend_from_slice(self.enc.get_ref());
        out.extend_from_slice(&LAST_EMPTY_BLOCK);
        Ok(())
    }

    /// Ends the frame and returns it.
    pub fn finish(self) -> Result<Vec<u8>> {
        self.enc.finish().map_err(stream_failed)
    }
}

fn stream_failed(e: std::io::Error) -> Error {
    Error::of_kind(
        ErrorKind::Internal,
        code::IO_COMPRESSOR_INIT_FAILED,
        "zstd stream compression failed (out of memory?)",
    )
    .with_suggestion("check the memory available to this process (ulimit -v, cgroup limits)")
    .with_source(e)
}

/// A writer that only counts.
struct Counter(u64);

impl std::io::Write for Counter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len() as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// [`decompress`] into `out` (cleared first), reusing its allocation: readers that
/// decode many frames keep a few buffers instead of allocating one per frame.
pub fn decompress_into(data: &[u8], max_len: usize, out: &mut Vec<u8>) -> Result<()> {
    decompress_at(data, max_len, out, 1).map(drop)
}

/// [`decompress_into`] with the result starting at an address that is a multiple of
/// `align` (a power of two): returns where in `out` it starts (the bytes before it are
/// zeros). A restore writes decoded pages straight from such a buffer with `O_DIRECT`,
/// which needs aligned memory, instead of copying them into an aligned one.
pub fn decompress_into_aligned(
    data: &[u8],
    max_len: usize,
    out: &mut Vec<u8>,
    align: usize,
) -> Result<usize> {
    decompress_at(data, max_len, out, align)
}

fn decompress_at(data: &[u8], max_len: usize, out: &mut Vec<u8>, align: usize) -> Result<usize> {
    let align = align.max(1);
    let want = declared_len(data, max_len)?.unwrap_or(max_len);
    out.clear();
    out.reserve_exact(want + (align - 1));
    // The allocation does not move while zstd writes (it writes within the capacity),
    // so the offset found now stays aligned.
    let lead = out.as_ptr().align_offset(align).min(align - 1);
    // The bytes before the frame are zeros the Vec knows of (within the capacity just
    // reserved, so the allocation stays where it is).
    out.resize(lead, 0);
    let corrupt = |e: std::io::Error| {
        Error::of_kind(
            ErrorKind::Corrupt,
            code::VERIFY_DECOMPRESS_FAILED,
            format!("compressed data is corrupt or larger than {max_len} bytes"),
        )
        .with_source(e)
    };
    // One decompression context per thread, reused: creating one per frame was 1.5% of
    // a restore's CPU.
    thread_local! {
        static DCTX: std::cell::RefCell<Option<zstd::bulk::Decompressor<'static>>> =
            const { std::cell::RefCell::new(None) };
    }
    DCTX.with(|cell| -> Result<()> {
        let mut slot = cell.borrow_mut();
        let d = match &mut *slot {
            Some(d) => d,
            None => slot.insert(zstd::bulk::Decompressor::new().map_err(corrupt)?),
        };
        let mut at = std::io::Cursor::new(&mut *out);
        at.set_position(lead as u64);
        let res = d.decompress_to_buffer(data, &mut at).map(drop);
        if res.is_err() {
            // Not reused after a failure: the next frame starts from a fresh context.
            *slot = None;
        }
        res.map_err(corrupt)
    })?;
    // zstd fills `out` up to its capacity, which a reused buffer may have above
    // `max_len`: a frame that does not declare its size is bounded only here.
    if out.len().saturating_sub(lead) > max_len {
        let n = out.len().saturating_sub(lead);
        out.clear();
        return Err(corrupt(std::io::Error::other(format!(
            "{n} bytes decompressed"
        ))));
    }
    Ok(lead)
}

/// A reusable zstd compression context (one per worker thread).
pub struct Compressor {
    ctx: zstd::bulk::Compressor<'static>,
}

impl Compressor {
    /// A context compressing at `level` (clamped to zstd's range).
    pub fn new(level: i32) -> Result<Compressor> {
        let ctx = zstd::bulk::Compressor::new(clamp_level(level)).map_err(|e| {
            Error::of_kind(
                ErrorKind::Internal,
                code::IO_COMPRESSOR_INIT_FAILED,
                "could not create a zstd compression context",
            )
            .with_source(e)
        })?;
        Ok(Compressor { ctx })
    }

    /// Compresses `data` into `out` (cleared first) if that makes it
    /// strictly smaller, returning `true`; otherwise returns `false` and the
    /// contents of `out` are unspecified. `out` keeps its capacity across
    /// calls, so a loop does not allocate per chunk.
    pub fn compress_if_smaller(&mut self, data: &[u8], out: &mut Vec<u8>) -> bool {
        out.clear();
        if data.len() < 16 {
            return false;
        }
        // Room for one byte less than the input: zstd fails with
        // "destination too small" when compression would not help.
        let room = data.len() - 1;
        out.resize(room, 0);
        match self.ctx.compress_to_buffer(data, &mut out[..room]) {
            Ok(n) => {
                out.truncate(n);
                true
            }
            Err(_) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_limits() {
        let data = b"hello hello hello hello hello hello hello hello".repeat(100);
        let c = compress(&data, DEFAULT_LEVEL);
        assert!(c.len() < data.len());
        assert_eq!(decompress(&c, data.len()).unwrap(), data);
        assert_eq!(
            decompress(&c, data.len() - 1).unwrap_err().code(),
            "verify.decompress_failed"
        );
        assert_eq!(
            decompress(b"not zstd at all", 100).unwrap_err().code(),
            "verify.decompress_failed"
        );
    }

    #[test]
    fn decompress_into_reuses_the_buffer_and_keeps_the_limits() {
        let data = b"hello hello hello hello hello hello hello hello".repeat(100);
        let c = compress(&data, DEFAULT_LEVEL);
        let mut out = vec![7u8; 3];
        decompress_into(&c, data.len(), &mut out).unwrap();
        assert_eq!(out, data);
        let (ptr, cap) = (out.as_ptr(), out.capacity());
        let small = compress(
            b"abc abc abc abc abc abc abc abc abc abc abc abc abc",
            DEFAULT_LEVEL,
        );
        decompress_into(&small, 100, &mut out).unwrap();
        assert_eq!(out, b"abc abc abc abc abc abc abc abc abc abc abc abc abc");
        assert_eq!((out.as_ptr(), out.capacity()), (ptr, cap));
        for (input, max) in [(&c[..], data.len() - 1), (&b"not zstd at all"[..], 100)] {
            let e = decompress_into(input, max, &mut out).unwrap_err();
            assert_eq!(e.code(), "verify.decompress_failed");
        }
    }

    #[test]
    fn streamed_frames_declare_their_size_and_read_back_within_limits() {
        use std::io::Read;
        let data = b"manifest manifest manifest ".repeat(5000);
        let prefix = vec![9u8; 65];
        let framed = compress_streamed(DEFAULT_LEVEL, prefix.clone(), |w| {
            for part in data.chunks(1000) {
                w.write_all(part)?;
            }
            Ok(())
        })
        .unwrap();
        assert_eq!(&framed[..65], &prefix[..]);
        let body = &framed[65..];
        assert!(matches!(
            zstd::zstd_safe::get_frame_content_size(body),
            Ok(Some(n)) if n == data.len() as u64
        ));
        assert_eq!(decompress(body, data.len()).unwrap(), data);
        let mut back = Vec::new();
        decompress_reader(body, data.len())
            .unwrap()
            .read_to_end(&mut back)
            .unwrap();
        assert_eq!(back, data);
        // Declared too large: refused up front; undeclared: fails past the limit.
        assert!(decompress_reader(body, data.len() - 1).is_err());
        let undeclared = zstd::stream::encode_all(&data[..], DEFAULT_LEVEL).unwrap();
        let mut r = decompress_reader(&undeclared, 100).unwrap();
        let e = r.read_to_end(&mut Vec::new()).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::InvalidData);
        let mut r = decompress_reader(&undeclared, data.len()).unwrap();
        let mut all = Vec::new();
        r.read_to_end(&mut all).unwrap();
        assert_eq!(all, data);
        // A writer that writes something else the second time fails.
        let mut calls = 0;
        let bad = compress_streamed(DEFAULT_LEVEL, Vec::new(), |w| {
            calls += 1;
            w.write_all(&data[..calls * 10])
        });
        assert!(bad.is_err());
    }

    #[test]
    fn a_frame_without_a_declared_size_keeps_the_limit_in_a_big_buffer() {
        let data = vec![b'x'; 1000];
        // A streamed frame does not declare its size.
        let c = zstd::stream::encode_all(&data[..], DEFAULT_LEVEL).unwrap();
        assert!(matches!(
            zstd::zstd_safe::get_frame_content_size(&c),
            Ok(None)
        ));
        assert_eq!(decompress(&c, 1000).unwrap(), data);
        assert_eq!(
            decompress(&c, 999).unwrap_err().code(),
            "verify.decompress_failed"
        );
        let mut out = Vec::with_capacity(1 << 16);
        let e = decompress_into(&c, 999, &mut out).unwrap_err();
        assert_eq!(e.code(), "verify.decompress_failed");
    }

    #[test]
    fn aligned_decoding_starts_on_the_boundary_and_keeps_the_limit() {
        let data: Vec<u8> = (0..300_000u32).map(|i| (i / 700) as u8).collect();
        let c = compress(&data, DEFAULT_LEVEL);
        let undeclared = zstd::stream::encode_all(&data[..], DEFAULT_LEVEL).unwrap();
        // A reused buffer, holding other data and of other sizes each time.
        let mut out = vec![7u8; 5000];
        for frame in [&c, &undeclared, &c] {
            let at = decompress_into_aligned(frame, data.len(), &mut out, 4096).unwrap();
            assert_eq!(out[at..].as_ptr().align_offset(4096), 0);
            assert!(at < 4096);
            assert!(out[..at].iter().all(|b| *b == 0));
            assert_eq!(&out[at..], &data[..]);
        }
        // One byte over the limit: refused, whatever the alignment.
        for frame in [&c, &undeclared] {
            let e = decompress_into_aligned(frame, data.len() - 1, &mut out, 4096).unwrap_err();
            assert_eq!(e.code(), "verify.decompress_failed");
        }
        // Alignment 1 is decompress_into.
        assert_eq!(
            decompress_into_aligned(&c, data.len(), &mut out, 1).unwrap(),
            0
        );
        assert_eq!(out, data);
    }

    #[test]
    fn compressor_only_when_smaller() {
        let mut c = Compressor::new(DEFAULT_LEVEL).unwrap();
        let mut out = Vec::new();
        let text = vec![b'a'; 8192];
        assert!(c.compress_if_smaller(&text, &mut out));
        assert_eq!(decompress(&out, 8192).unwrap(), text);
        let mut x: u32 = 12345;
        let random: Vec<u8> = (0..8192)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x as u8
            })
            .collect();
        assert!(!c.compress_if_smaller(&random, &mut out));
        // Reuses the buffer afterwards.
        assert!(c.compress_if_smaller(&text, &mut out));
        assert_eq!(decompress(&out, 8192).unwrap(), text);
    }

    /// WAL-like input: mostly compressible with some noise.
    fn walish(n: usize, seed: u32) -> Vec<u8> {
        let mut x = seed | 1;
        (0..n)
            .map(|i| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                if i % 7 == 0 {
                    x as u8
                } else {
                    (i / 64) as u8
                }
            })
            .collect()
    }

    #[test]
    fn frame_snapshots_decode_to_each_prefix() {
        let data = walish(3 << 20, 7);
        let mut b = FrameBuilder::new(1).unwrap();
        let mut at = 0;
        for step in [100usize, 1, 65536, 1 << 20, 5, 300_000, 0] {
            // 0: the rest.
            let step = if step == 0 { data.len() - at } else { step };
            b.push(&data[at..at + step]).unwrap();
            at += step;
            assert_eq!(b.fed(), at as u64);
            let mut frame = vec![9u8; 3];
            b.snapshot(&mut frame).unwrap();
            // A snapshot is a complete frame that does not declare its size.
            assert!(matches!(
                zstd::zstd_safe::get_frame_content_size(&frame[3..]),
                Ok(None)
            ));
            assert_eq!(decompress(&frame[3..], at).unwrap(), &data[..at]);
            // One byte less than the content is refused, not truncated.
            assert!(decompress(&frame[3..], at - 1).is_err());
            // Compressing, not just framing (the size against one-shot compression is
            // measured on real WAL, see docs/repository-format.md, "WAL").
            assert!(at < 1000 || frame.len() < at / 2, "{} of {at}", frame.len());
        }
        assert_eq!(at, data.len());
        let whole = b.finish().unwrap();
        assert_eq!(decompress(&whole, data.len()).unwrap(), data);
        let empty = FrameBuilder::new(1).unwrap().snapshot(&mut Vec::new());
        assert_eq!(empty.unwrap_err().code(), "internal.unexpected");
    }

    proptest::proptest! {
        #[test]
        fn frame_snapshots_any_split(cuts in proptest::collection::vec(1usize..40_000, 1..12), seed: u32) {
            let total: usize = cuts.iter().sum();
            let data = walish(total, seed);
            let mut b = FrameBuilder::new(1).unwrap();
            let mut at = 0;
            for c in cuts {
                b.push(&data[at..at + c]).unwrap();
                at += c;
                let mut frame = Vec::new();
                b.snapshot(&mut frame).unwrap();
                proptest::prop_assert_eq!(decompress(&frame, at).unwrap(), &data[..at]);
            }
            proptest::prop_assert_eq!(decompress(&b.finish().unwrap(), total).unwrap(), data);
        }
    }
}
