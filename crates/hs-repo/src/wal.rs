//! WAL objects: completed segments, the in-progress `.partial` segment,
//! timeline history files and explicit gap records, under
//! `deployments/<d>/wal/` (see docs/repository-format.md, "WAL").
//!
//! Every WAL object is one sealed (domain `wal`) frame:
//!
//! ```text
//! version:u8 (=1) | kind:u8 | flags:u8 | name_len:u16le | name | raw_len:u64le | blake3(raw):[u8; 32] | body
//! ```
//!
//! `name` is the object's full name, so a validly sealed object moved to
//! another name (another segment, another deployment) does not verify.
//! `body` is the raw content, zstd-compressed (at [`WAL_ZSTD_LEVEL`]) when
//! that makes it smaller (flags bit 0).

use bytes::Bytes;
use hs_base::code;
use hs_crypt::Domain;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::repo::{check_deployment, Repository};
use hs_pg::parse_timeline_history_name as parse_history_name;

// The segment-size bounds and the pure WAL file naming are hs-pg's; re-exported here (and
// from the crate root) where embedders have always found them.
pub use hs_pg::{
    is_valid_wal_segment_size, parse_wal_segment_name, segs_per_xlogid, timeline_history_name,
    wal_segment_name, DEFAULT_WAL_SEGMENT_SIZE, MAX_WAL_SEGMENT_SIZE, MIN_WAL_SEGMENT_SIZE,
};

/// zstd level for WAL objects. Level 1 was chosen over 3 on a real 16 MiB
/// segment (initdb + catalog WAL): 1.23 MB at ~950 MB/s vs 1.12 MB at
/// ~660 MB/s (-9 % size for +45 % CPU); the streamer's CPU matters more.
pub const WAL_ZSTD_LEVEL: i32 = 1;
const WAL_OBJECT_VERSION: u8 = 1;
const FLAG_ZSTD: u8 = 1;
const HASH_LEN: usize = 32;

/// What a WAL object holds (stored in its frame).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Segment = 1,
    Partial = 2,
    History = 3,
    Gap = 4,
    Summary = 5,
}

/// An explicit record that WAL between two segments is missing from the
/// repository and will never arrive (for example: the slot was lost).
/// Both ends are inclusive segment names (`from_segment` is the first
/// missing segment, `to_segment` the last).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct WalGap {
    /// First missing segment (24 upper-case hex digits).
    pub from_segment: String,
    /// Last missing segment (inclusive).
    pub to_segment: String,
    /// Why it is missing, for humans.
    pub reason: String,
    /// When the gap was recorded (RFC 3339 UTC).
    pub recorded_at: String,
}

/// One stored WAL segment (complete or partial).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WalSegmentInfo {
    /// The segment name, 24 upper-case hex digits (without `.partial`).
    pub name: String,
    /// Timeline (the first 8 hex digits).
    pub timeline: u32,
    /// The "log" part of the name (hex digits 9 to 16).
    pub log: u32,
    /// The "seg" part of the name (hex digits 17 to 24).
    pub seg: u32,
    /// Size of the stored (compressed, sealed) object.
    pub stored_bytes: u64,
}

impl WalSegmentInfo {
    /// PostgreSQL's `XLogSegNo` of this segment for segments of `seg_size` bytes.
    pub fn segno(&self, seg_size: u64) -> u64 {
        u64::from(self.log) * segs_per_xlogid(seg_size) + u64::from(self.seg)
    }
}

/// Everything stored for a deployment's WAL, each list sorted.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WalListing {
    /// Completed segments, by (timeline, log, seg).
    pub segments: Vec<WalSegmentInfo>,
    /// In-progress segments (`.partial`), by (timeline, log, seg).
    pub partials: Vec<WalSegmentInfo>,
    /// Timelines that have a history file, ascending.
    pub histories: Vec<u32>,
    /// Recorded gaps, by `from_segment`.
    pub gaps: Vec<WalGap>,
}

fn wal_prefix(deployment: &str) -> String {
    format!("deployments/{deployment}/wal/")
}

fn invalid_segment(name: &str) -> Error {
    Error::new(
        code::USAGE_INVALID_WAL_NAME,
        format!("{name:?} is not a WAL segment name"),
    )
    .with_suggestion("a segment name is 24 upper-case hex digits, e.g. 000000010000000000000001")
}

fn check_segment(name: &str) -> Result<(u32, u32, u32)> {
    parse_wal_segment_name(name).ok_or_else(|| invalid_segment(name))
}

/// The object name and kind of completed segment `segment` holding `len` bytes, checked:
/// a whole segment is a power of two from 1 MiB to 1 GiB.
fn segment_object(deployment: &str, segment: &str, len: usize) -> Result<(String, Kind)> {
    check_deployment(deployment)?;
    check_segment(segment)?;
    if !is_valid_wal_segment_size(len as u64) {
        return Err(Error::new(
            code::USAGE_WAL_SEGMENT_SIZE_INVALID,
            format!(
                "segment {segment} is {len} bytes; a WAL segment is a power of two from 1 MiB to 1 GiB"
            ),
        ));
    }
    object_for(deployment, segment)
}

/// The object name and kind of `<segment>.partial` holding `len` bytes, checked.
fn partial_object(deployment: &str, segment: &str, len: usize) -> Result<(String, Kind)> {
    check_deployment(deployment)?;
    check_segment(segment)?;
    if len as u64 > MAX_WAL_SEGMENT_SIZE {
        return Err(Error::new(
            code::USAGE_WAL_SEGMENT_SIZE_INVALID,
            format!("partial segment {segment} is larger than 1 GiB"),
        ));
    }
    object_for(deployment, &format!("{segment}.partial"))
}

/// The object name and kind for a name PostgreSQL asks for.
fn object_for(deployment: &str, name: &str) -> Result<(String, Kind)> {
    let prefix = wal_prefix(deployment);
    if let Some(seg) = name.strip_suffix(".partial") {
        if parse_wal_segment_name(seg).is_some() {
            return Ok((format!("{prefix}{}/{name}", &seg[..8]), Kind::Partial));
        }
    } else if parse_history_name(name).is_some() {
        return Ok((format!("{prefix}history/{name}"), Kind::History));
    } else if parse_wal_segment_name(name).is_some() {
        return Ok((format!("{prefix}{}/{name}", &name[..8]), Kind::Segment));
    }
    Err(Error::new(
        code::USAGE_INVALID_WAL_NAME,
        format!("{name:?} is not a WAL segment, partial segment or timeline history name"),
    )
    .with_suggestion("use a 24-hex-digit segment name, <segment>.partial, or TTTTTTTT.history"))
}

/// A WAL object that does not open or decode (`verify.*`) is named in the error (the
/// underlying message names only the kind of object); other errors are kept as they are.
fn name_damaged_wal(e: Error, object: &str) -> Error {
    if !e.code().starts_with("verify.") || e.to_string().contains(object) {
        return e;
    }
    Error::new(e.code(), format!("WAL object {object}: {e}"))
        .with_suggestion(
            "the object is damaged or was modified: `pg_hardstorage repo verify` lists every \
             damaged object; a segment lost for good is a gap recovery cannot cross",
        )
        .with_source(e)
}

fn not_found(deployment: &str, name: &str) -> Error {
    Error::new(
        code::NOTFOUND_WAL_SEGMENT,
        format!("deployment {deployment} has no WAL file {name} in the repository"),
    )
    .with_suggestion("list what is stored with `pg_hardstorage wal list`")
}

fn encode_frame(kind: Kind, object: &str, raw: &[u8]) -> Result<Vec<u8>> {
    let mut body = Vec::new();
    let compressed = raw.len() >= 64
        && hs_chunk::Compressor::new(WAL_ZSTD_LEVEL)?.compress_if_smaller(raw, &mut body);
    let body: &[u8] = if compressed { &body } else { raw };
    let hash = blake3::hash(raw);
    let mut out = frame_head(kind, object, raw.len() as u64, hash.as_bytes(), body.len())?;
    if compressed {
        out[2] = FLAG_ZSTD;
    }
    out.extend_from_slice(body);
    Ok(out)
}

/// A frame up to its body (flags 0), with room for `body_len` more bytes.
fn frame_head(
    kind: Kind,
    object: &str,
    raw_len: u64,
    hash: &[u8; HASH_LEN],
    body_len: usize,
) -> Result<Vec<u8>> {
    let name = object.as_bytes();
    let name_len = u16::try_from(name.len()).map_err(|_| {
        Error::new(
            code::USAGE_INVALID_OBJECT_NAME,
            format!("object name {object:?} is too long"),
        )
    })?;
    let mut out = Vec::with_capacity(5 + name.len() + 8 + HASH_LEN + body_len);
    out.push(WAL_OBJECT_VERSION);
    out.push(kind as u8);
    out.push(0);
    out.extend_from_slice(&name_len.to_le_bytes());
    out.extend_from_slice(name);
    out.extend_from_slice(&raw_len.to_le_bytes());
    out.extend_from_slice(hash);
    Ok(out)
}

/// A WAL segment's stored form, built as its bytes arrive.
///
/// `wal stream` pushes every message it receives into the encoder of the segment
/// being filled. Storing the `.partial` ([`Repository::put_wal_partial_encoded`]) then
/// compresses only what arrived since the previous store (and seals the whole), and
/// storing the completed segment ([`Repository::put_wal_segment_encoded`]) compresses
/// nothing again. Without it, every partial store compressed and hashed the whole
/// prefix once more. The object written is the same format: one zstd frame (which
/// does not declare its size) and the BLAKE3 hash of the content.
pub struct WalSegmentEncoder {
    frame: hs_chunk::FrameBuilder,
    hasher: blake3::Hasher,
}

impl WalSegmentEncoder {
    /// An empty encoder.
    pub fn new() -> Result<WalSegmentEncoder> {
        Ok(WalSegmentEncoder {
            frame: hs_chunk::FrameBuilder::new(WAL_ZSTD_LEVEL)?,
            hasher: blake3::Hasher::new(),
        })
    }

    /// Appends the segment's next bytes.
    pub fn push(&mut self, data: &[u8]) -> Result<()> {
        self.frame.push(data)?;
        self.hasher.update(data);
        Ok(())
    }

    /// How many bytes were pushed.
    pub fn len(&self) -> u64 {
        self.frame.fed()
    }

    /// Whether nothing was pushed yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The frame of `raw`, which must be exactly what was pushed, as a partial (the
    /// encoder goes on) or as the finished segment (`finish`: the frame is ended).
    fn encode(this: EncoderUse<'_>, kind: Kind, object: &str, raw: &[u8]) -> Result<Vec<u8>> {
        let (hasher, fed) = match &this {
            EncoderUse::Snapshot(e) => (&e.hasher, e.len()),
            EncoderUse::Finish(e) => (&e.hasher, e.len()),
        };
        if fed != raw.len() as u64 || raw.len() < 64 {
            // Not what the encoder holds (the caller's bug), or too small to compress:
            // encoded from the bytes themselves, as `put_wal_*` always did.
            if fed != raw.len() as u64 {
                tracing::warn!(
                    object,
                    pushed = fed,
                    len = raw.len(),
                    "WAL encoder out of step with its segment; compressing the segment whole"
                );
            }
            return encode_frame(kind, object, raw);
        }
        let hash = *hasher.clone().finalize().as_bytes();
        let mut out = frame_head(kind, object, fed, &hash, raw.len() / 2)?;
        let head = out.len();
        match this {
            EncoderUse::Snapshot(e) => e.frame.snapshot(&mut out)?,
            EncoderUse::Finish(e) => out.extend_from_slice(&e.frame.finish()?),
        }
        if out.len() - head < raw.len() {
            out[2] = FLAG_ZSTD;
        } else {
            out.truncate(head);
            out.extend_from_slice(raw);
        }
        Ok(out)
    }
}

impl std::fmt::Debug for WalSegmentEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WalSegmentEncoder")
            .field("len", &self.len())
            .finish_non_exhaustive()
    }
}

enum EncoderUse<'a> {
    Snapshot(&'a mut WalSegmentEncoder),
    Finish(Box<WalSegmentEncoder>),
}

/// A parsed frame (before decompression).
struct Frame<'a> {
    flags: u8,
    raw_len: u64,
    hash: [u8; HASH_LEN],
    body: &'a [u8],
}

fn bad(object: &str, what: &str) -> Error {
    Error::new(
        code::VERIFY_WAL_OBJECT_INVALID,
        format!("WAL object {object} {what}"),
    )
    .with_suggestion("the object is damaged or was moved; fetch the WAL from another copy")
}

fn parse_frame<'a>(plain: &'a [u8], kind: Kind, object: &str) -> Result<Frame<'a>> {
    let head = plain.get(..5).ok_or_else(|| bad(object, "is truncated"))?;
    if head[0] != WAL_OBJECT_VERSION {
        return Err(bad(object, "has an unknown layout version"));
    }
    if head[1] != kind as u8 {
        return Err(bad(object, "holds another kind of WAL object"));
    }
    let flags = head[2];
    if flags & !FLAG_ZSTD != 0 {
        return Err(bad(object, "has unknown flags"));
    }
    let name_len = usize::from(u16::from_le_bytes([head[3], head[4]]));
    let rest = &plain[5..];
    if rest.len() < name_len + 8 + HASH_LEN {
        return Err(bad(object, "is truncated"));
    }
    if &rest[..name_len] != object.as_bytes() {
        return Err(Error::new(
            code::VERIFY_WAL_OBJECT_MISPLACED,
            format!("WAL object {object} was stored under another name"),
        )
        .with_suggestion("someone moved objects in the repository; do not use this WAL"));
    }
    let rest = &rest[name_len..];
    let mut len8 = [0u8; 8];
    len8.copy_from_slice(&rest[..8]);
    let mut hash = [0u8; HASH_LEN];
    hash.copy_from_slice(&rest[8..8 + HASH_LEN]);
    Ok(Frame {
        flags,
        raw_len: u64::from_le_bytes(len8),
        hash,
        body: &rest[8 + HASH_LEN..],
    })
}

fn decode_body(f: &Frame<'_>, object: &str) -> Result<Vec<u8>> {
    if f.raw_len > MAX_WAL_SEGMENT_SIZE {
        return Err(bad(object, "declares more than 1 GiB of content"));
    }
    let raw = if f.flags & FLAG_ZSTD != 0 {
        hs_chunk::decompress(f.body, f.raw_len as usize)?
    } else {
        f.body.to_vec()
    };
    if raw.len() as u64 != f.raw_len {
        return Err(bad(object, "has content of the wrong length"));
    }
    if blake3::hash(&raw).as_bytes() != &f.hash {
        return Err(bad(object, "has content that does not match its hash"));
    }
    Ok(raw)
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f).await.map_err(|e| {
        Error::new(
            code::ABORTED_TASK_FAILED,
            "a WAL compression task panicked or was cancelled",
        )
        .with_source(e)
    })?
}

impl Repository {
    fn seal_wal(&self, frame: &[u8]) -> Vec<u8> {
        self.inner.master.seal(Domain::Wal, frame)
    }

    /// Seals a frame off the async threads.
    async fn seal_wal_blocking(&self, frame: Vec<u8>) -> Result<Bytes> {
        let repo = self.clone();
        blocking(move || Ok(Bytes::from(repo.seal_wal(&frame)))).await
    }

    /// Builds the sealed object off the async threads.
    async fn wal_object(&self, kind: Kind, object: &str, data: &[u8]) -> Result<Bytes> {
        let repo = self.clone();
        let object = object.to_string();
        let data = data.to_vec();
        blocking(move || {
            let frame = encode_frame(kind, &object, &data)?;
            Ok(Bytes::from(repo.seal_wal(&frame)))
        })
        .await
    }

    /// Reads, opens and checks the frame of `object`, returning
    /// (raw_len, hash, body-decoded-or-not).
    pub(crate) async fn open_wal(
        &self,
        kind: Kind,
        object: &str,
        decode: bool,
    ) -> Result<(u64, [u8; HASH_LEN], Option<Vec<u8>>)> {
        let sealed = self.inner.backend.get(object).await?;
        let repo = self.clone();
        let name = object.to_string();
        blocking(move || {
            let open = || -> Result<_> {
                let plain = repo.inner.master.open(Domain::Wal, &sealed)?;
                let f = parse_frame(&plain, kind, &name)?;
                let raw = if decode {
                    Some(decode_body(&f, &name)?)
                } else {
                    None
                };
                Ok((f.raw_len, f.hash, raw))
            };
            open().map_err(|e| name_damaged_wal(e, &name))
        })
        .await
    }

    /// Stores a completed WAL segment at `deployments/<d>/wal/<TTTTTTTT>/<segment>`,
    /// create-if-absent. `data` must be a whole segment (a power of two from
    /// 1 MiB to 1 GiB). Returns `false` if the segment was already stored
    /// with identical content (idempotent re-put), and
    /// `conflict.wal_segment_differs` if the stored copy differs.
    pub async fn put_wal_segment(
        &self,
        deployment: &str,
        segment: &str,
        data: &[u8],
    ) -> Result<bool> {
        let (object, kind) = segment_object(deployment, segment, data.len())?;
        let sealed = self.wal_object(kind, &object, data).await?;
        self.put_segment_object(deployment, segment, &object, kind, sealed, data)
            .await
    }

    /// Stores a segment's sealed object create-if-absent; an existing copy must hold `data`.
    async fn put_segment_object(
        &self,
        deployment: &str,
        segment: &str,
        object: &str,
        kind: Kind,
        sealed: Bytes,
        data: &[u8],
    ) -> Result<bool> {
        if self.inner.backend.put_if_absent(object, sealed).await? {
            return Ok(true);
        }
        let (len, hash, _) = self.open_wal(kind, object, false).await?;
        if len == data.len() as u64 && &hash == blake3::hash(data).as_bytes() {
            Ok(false)
        } else {
            Err(Error::new(
                code::CONFLICT_WAL_SEGMENT_DIFFERS,
                format!(
                    "segment {segment} of deployment {deployment} is already stored with different content"
                ),
            )
            .with_suggestion(
                "two different servers are streaming into one deployment, or the server was restored \
                 without a timeline switch; use a separate deployment name",
            ))
        }
    }

    /// Stores (replacing) the in-progress segment `<segment>.partial`. This
    /// is the one object in the repository that is replaced in place
    /// (atomically: readers see the old or the new copy). `data` is the
    /// segment's bytes received so far (possibly zero-padded to full size).
    pub async fn put_wal_partial(
        &self,
        deployment: &str,
        segment: &str,
        data: &[u8],
    ) -> Result<()> {
        let (object, kind) = partial_object(deployment, segment, data.len())?;
        let sealed = self.wal_object(kind, &object, data).await?;
        self.inner.backend.put(&object, sealed).await
    }

    /// [`Repository::put_wal_partial`] of `data`, which must be exactly what was pushed
    /// into `enc`: only the bytes pushed since the encoder's last use are compressed.
    pub async fn put_wal_partial_encoded(
        &self,
        deployment: &str,
        segment: &str,
        enc: &mut WalSegmentEncoder,
        data: &[u8],
    ) -> Result<()> {
        let (object, kind) = partial_object(deployment, segment, data.len())?;
        // Compresses at most what arrived since the last partial (the push already
        // compressed all but zstd's last input block).
        let frame = WalSegmentEncoder::encode(EncoderUse::Snapshot(enc), kind, &object, data)?;
        let sealed = self.seal_wal_blocking(frame).await?;
        self.inner.backend.put(&object, sealed).await
    }

    /// [`Repository::put_wal_segment`] of `data`, which must be exactly what was pushed
    /// into `enc`: nothing is compressed again.
    pub async fn put_wal_segment_encoded(
        &self,
        deployment: &str,
        segment: &str,
        enc: WalSegmentEncoder,
        data: &[u8],
    ) -> Result<bool> {
        let (object, kind) = segment_object(deployment, segment, data.len())?;
        let frame =
            WalSegmentEncoder::encode(EncoderUse::Finish(Box::new(enc)), kind, &object, data)?;
        let sealed = self.seal_wal_blocking(frame).await?;
        self.put_segment_object(deployment, segment, &object, kind, sealed, data)
            .await
    }

    /// Removes `<segment>.partial` (call after the full segment is stored).
    /// Removing an absent partial is not an error.
    pub async fn delete_wal_partial(&self, deployment: &str, segment: &str) -> Result<()> {
        check_deployment(deployment)?;
        check_segment(segment)?;
        let (object, _) = object_for(deployment, &format!("{segment}.partial"))?;
        self.inner.backend.delete(&object).await
    }

    /// Stores timeline `tli`'s history file, create-if-absent. Returns
    /// `false` if it was already stored with identical content;
    /// `conflict.timeline_history_differs` if the stored copy differs.
    pub async fn put_timeline_history(
        &self,
        deployment: &str,
        tli: u32,
        content: &[u8],
    ) -> Result<bool> {
        check_deployment(deployment)?;
        if tli == 0 {
            return Err(Error::new(
                code::USAGE_INVALID_TIMELINE,
                "timeline 0 does not exist",
            ));
        }
        if content.len() as u64 > MAX_WAL_SEGMENT_SIZE {
            return Err(Error::new(
                code::USAGE_TIMELINE_HISTORY_TOO_LARGE,
                format!("history file of timeline {tli} is larger than 1 GiB"),
            ));
        }
        let (object, kind) = object_for(deployment, &timeline_history_name(tli))?;
        let sealed = self.wal_object(kind, &object, content).await?;
        if self.inner.backend.put_if_absent(&object, sealed).await? {
            return Ok(true);
        }
        let (len, hash, _) = self.open_wal(kind, &object, false).await?;
        if len == content.len() as u64 && &hash == blake3::hash(content).as_bytes() {
            Ok(false)
        } else {
            Err(Error::new(
                code::CONFLICT_TIMELINE_HISTORY_DIFFERS,
                format!(
                    "the history file of timeline {tli} of deployment {deployment} is already stored with different content"
                ),
            )
            .with_suggestion(
                "two different servers are streaming into one deployment; use a separate deployment name",
            ))
        }
    }

    /// Records that the segments `gap.from_segment..=gap.to_segment` are
    /// missing for good, at `deployments/<d>/wal/gaps/<from>-<to>`
    /// (create-if-absent; recording the same range again keeps the first record).
    pub async fn put_wal_gap(&self, deployment: &str, gap: &WalGap) -> Result<()> {
        check_deployment(deployment)?;
        let (ft, _, _) = check_segment(&gap.from_segment)?;
        let (tt, _, _) = check_segment(&gap.to_segment)?;
        if ft != tt || gap.from_segment > gap.to_segment {
            return Err(Error::new(
                code::USAGE_INVALID_WAL_GAP,
                format!(
                    "gap {}..{} must lie on one timeline with from <= to",
                    gap.from_segment, gap.to_segment
                ),
            ));
        }
        let object = format!(
            "{}gaps/{}-{}",
            wal_prefix(deployment),
            gap.from_segment,
            gap.to_segment
        );
        let json = serde_json::to_vec(gap).map_err(|e| {
            Error::new(code::IO_ENCODE_FAILED, "could not encode the gap record").with_source(e)
        })?;
        let sealed = self.wal_object(Kind::Gap, &object, &json).await?;
        self.inner.backend.put_if_absent(&object, sealed).await?;
        Ok(())
    }

    /// Stores a small summary of completed segment `segment` (what
    /// `hs-pitr` decodes from it for planning: commit times, restore
    /// points) at `deployments/<d>/wal/summaries/<segment>`, sealed like
    /// every WAL object. The content is opaque to this crate. A summary is
    /// derived from immutable content, so it is create-if-absent: an
    /// existing one is kept. At most 1 MiB.
    pub async fn put_wal_summary(
        &self,
        deployment: &str,
        segment: &str,
        content: &[u8],
    ) -> Result<()> {
        check_deployment(deployment)?;
        check_segment(segment)?;
        if content.len() as u64 > MIN_WAL_SEGMENT_SIZE {
            return Err(Error::new(
                code::USAGE_WAL_SUMMARY_TOO_LARGE,
                format!("the summary of segment {segment} is larger than 1 MiB"),
            ));
        }
        let object = format!("{}summaries/{segment}", wal_prefix(deployment));
        let sealed = self.wal_object(Kind::Summary, &object, content).await?;
        self.inner.backend.put_if_absent(&object, sealed).await?;
        Ok(())
    }

    /// The summary stored by [`Repository::put_wal_summary`], verified, or
    /// `None` if there is none.
    pub async fn get_wal_summary(&self, deployment: &str, segment: &str) -> Result<Option<Bytes>> {
        check_deployment(deployment)?;
        check_segment(segment)?;
        let object = format!("{}summaries/{segment}", wal_prefix(deployment));
        match self.open_wal(Kind::Summary, &object, true).await {
            Err(e) if e.code() == code::NOTFOUND_OBJECT => Ok(None),
            Err(e) => Err(e),
            Ok((_, _, raw)) => Ok(Some(Bytes::from(raw.unwrap_or_default()))),
        }
    }

    /// Reads one WAL file by the name PostgreSQL uses: `<segment>`,
    /// `<segment>.partial` or `TTTTTTTT.history`. Verified (AEAD, name
    /// binding, length and hash) and decompressed. Absent:
    /// `notfound.wal_segment`. A full segment is always a valid segment size.
    pub async fn get_wal(&self, deployment: &str, name: &str) -> Result<Bytes> {
        check_deployment(deployment)?;
        let (object, kind) = object_for(deployment, name)?;
        let (_, _, raw) = match self.open_wal(kind, &object, true).await {
            Err(e) if e.code() == code::NOTFOUND_OBJECT => return Err(not_found(deployment, name)),
            other => other?,
        };
        let raw = raw.unwrap_or_default();
        if kind == Kind::Segment && !is_valid_wal_segment_size(raw.len() as u64) {
            return Err(bad(&object, "is not a whole WAL segment"));
        }
        Ok(Bytes::from(raw))
    }

    /// Everything stored for the deployment's WAL (gap records are read and
    /// verified, one removed between the listing and its read is left out;
    /// segments are only listed). Names that are not WAL objects
    /// of this format are ignored.
    pub async fn list_wal(&self, deployment: &str) -> Result<WalListing> {
        check_deployment(deployment)?;
        let prefix = wal_prefix(deployment);
        let mut out = WalListing::default();
        let mut gap_objects = Vec::new();
        for o in self.inner.backend.list(&prefix).await? {
            let rel = &o.name[prefix.len()..];
            let Some((dir, file)) = rel.split_once('/') else {
                continue;
            };
            if file.contains('/') {
                continue;
            }
            match dir {
                "history" => {
                    if let Some(t) = parse_history_name(file) {
                        out.histories.push(t);
                    }
                }
                "gaps" => gap_objects.push(o.name.clone()),
                "summaries" => {}
                _ => {
                    let (seg, partial) = match file.strip_suffix(".partial") {
                        Some(s) => (s, true),
                        None => (file, false),
                    };
                    let Some((timeline, log, segn)) = parse_wal_segment_name(seg) else {
                        continue;
                    };
                    if &seg[..8] != dir {
                        continue;
                    }
                    let info = WalSegmentInfo {
                        name: seg.to_string(),
                        timeline,
                        log,
                        seg: segn,
                        stored_bytes: o.size,
                    };
                    if partial {
                        out.partials.push(info);
                    } else {
                        out.segments.push(info);
                    }
                }
            }
        }
        for object in gap_objects {
            let raw = match self.open_wal(Kind::Gap, &object, true).await {
                // Listed, then removed by retention: not an error of the listing.
                Err(e) if e.code() == code::NOTFOUND_OBJECT => continue,
                other => other?.2,
            };
            let gap: WalGap = serde_json::from_slice(&raw.unwrap_or_default())
                .map_err(|e| bad(&object, "is not a valid gap record").with_source(e))?;
            out.gaps.push(gap);
        }
        let key = |s: &WalSegmentInfo| (s.timeline, s.log, s.seg);
        out.segments.sort_by_key(key);
        out.partials.sort_by_key(key);
        out.histories.sort_unstable();
        out.gaps.sort_by(|a, b| {
            (&a.from_segment, &a.to_segment).cmp(&(&b.from_segment, &b.to_segment))
        });
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        // The name functions themselves are tested in hs-pg.
        let info = WalSegmentInfo {
            name: "000000010000000200000003".into(),
            timeline: 1,
            log: 2,
            seg: 3,
            stored_bytes: 0,
        };
        assert_eq!(info.segno(16 << 20), 2 * 256 + 3);
    }

    #[test]
    fn object_names() {
        let (o, k) = object_for("d", "000000010000000000000001").unwrap();
        assert_eq!(o, "deployments/d/wal/00000001/000000010000000000000001");
        assert_eq!(k, Kind::Segment);
        let (o, k) = object_for("d", "000000010000000000000001.partial").unwrap();
        assert_eq!(
            o,
            "deployments/d/wal/00000001/000000010000000000000001.partial"
        );
        assert_eq!(k, Kind::Partial);
        let (o, k) = object_for("d", "00000002.history").unwrap();
        assert_eq!(o, "deployments/d/wal/history/00000002.history");
        assert_eq!(k, Kind::History);
        for bad in [
            "x",
            "RECOVERYXLOG",
            "00000001.partial",
            "../00000002.history",
        ] {
            assert_eq!(
                object_for("d", bad).unwrap_err().code(),
                "usage.invalid_wal_name"
            );
        }
    }

    #[test]
    fn frame_round_trip_and_binding() {
        let raw: Vec<u8> = (0..100_000u32).map(|i| (i % 7) as u8).collect();
        let f = encode_frame(Kind::Segment, "a/b", &raw).unwrap();
        assert!(f.len() < raw.len() / 10);
        let p = parse_frame(&f, Kind::Segment, "a/b").unwrap();
        assert_eq!(decode_body(&p, "a/b").unwrap(), raw);
        assert_eq!(
            parse_frame(&f, Kind::Segment, "a/c").err().unwrap().code(),
            "verify.wal_object_misplaced"
        );
        assert_eq!(
            parse_frame(&f, Kind::Partial, "a/b").err().unwrap().code(),
            "verify.wal_object_invalid"
        );
        // Incompressible and tiny content is stored raw.
        let f = encode_frame(Kind::History, "h", b"1\t0/3000000\tno recovery target\n").unwrap();
        let p = parse_frame(&f, Kind::History, "h").unwrap();
        assert_eq!(p.flags, 0);
        assert_eq!(
            decode_body(&p, "h").unwrap(),
            b"1\t0/3000000\tno recovery target\n"
        );
        assert!(parse_frame(&f[..10], Kind::History, "h").is_err());
    }
}
