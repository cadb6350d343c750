//! Streaming chunkers: 8 KiB page cuts for relation files, FastCDC for the rest.

use hs_base::code;
use serde::{Deserialize, Serialize};

use crate::error::{Error, ErrorKind, Result};

/// Chunking parameters. Stored in the repository marker so that every writer
/// of a repository cuts the same way (otherwise deduplication suffers, but
/// nothing breaks: chunk ids depend only on content).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct ChunkerConfig {
    /// Page size for relation files (PostgreSQL's `BLCKSZ`), default 8192.
    pub page_size: u32,
    /// FastCDC minimum chunk size, default 64 KiB.
    pub cdc_min: u32,
    /// FastCDC average (target) chunk size, default 256 KiB.
    pub cdc_avg: u32,
    /// FastCDC maximum chunk size, default 1 MiB.
    pub cdc_max: u32,
}

impl Default for ChunkerConfig {
    fn default() -> Self {
        ChunkerConfig {
            page_size: 8192,
            cdc_min: 64 * 1024,
            cdc_avg: 256 * 1024,
            cdc_max: 1024 * 1024,
        }
    }
}

impl ChunkerConfig {
    /// Checks the values against what FastCDC accepts and the page size
    /// against PostgreSQL's possible block sizes (1 KiB to 32 KiB, power of 2).
    pub fn validate(&self) -> Result<()> {
        use fastcdc::v2020::{
            AVERAGE_MAX, AVERAGE_MIN, MAXIMUM_MAX, MAXIMUM_MIN, MINIMUM_MAX, MINIMUM_MIN,
        };
        let bad = |what: String| {
            Err(Error::of_kind(
                ErrorKind::InvalidInput,
                code::USAGE_INVALID_CHUNKER_CONFIG,
                what,
            )
            .with_suggestion(
                "use the defaults: page_size 8192, cdc_min 65536, cdc_avg 262144, cdc_max 1048576",
            ))
        };
        if !(1024..=32768).contains(&self.page_size) || !self.page_size.is_power_of_two() {
            return bad(format!(
                "page_size {} is not a power of two between 1024 and 32768",
                self.page_size
            ));
        }
        if !(MINIMUM_MIN..=MINIMUM_MAX).contains(&self.cdc_min)
            || !(AVERAGE_MIN..=AVERAGE_MAX).contains(&self.cdc_avg)
            || !(MAXIMUM_MIN..=MAXIMUM_MAX).contains(&self.cdc_max)
            || self.cdc_min > self.cdc_avg
            || self.cdc_avg > self.cdc_max
        {
            return bad(format!(
                "FastCDC sizes min {} avg {} max {} are out of range or out of order",
                self.cdc_min, self.cdc_avg, self.cdc_max
            ));
        }
        Ok(())
    }
}

/// How a file in a base backup is cut into chunks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FileClass {
    /// A relation fork segment (`base/<db>/<relfilenode>[_fsm|_vm|_init][.N]`,
    /// `global/<relfilenode>...`, and the same under a tablespace): cut into
    /// pages, each page one chunk.
    Relation,
    /// Anything else: content-defined chunking (FastCDC).
    Other,
}

fn all_digits(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

/// `<relfilenode>[_fsm|_vm|_init][.<segno>]`
fn is_relfile_name(name: &str) -> bool {
    let (stem, seg) = match name.split_once('.') {
        Some((stem, seg)) => (stem, Some(seg)),
        None => (name, None),
    };
    if let Some(seg) = seg {
        if !all_digits(seg) {
            return false;
        }
    }
    let node = stem
        .strip_suffix("_fsm")
        .or_else(|| stem.strip_suffix("_vm"))
        .or_else(|| stem.strip_suffix("_init"))
        .unwrap_or(stem);
    all_digits(node)
}

fn is_tablespace_version_dir(s: &str) -> bool {
    s.starts_with("PG_") && s.len() > 3
}

impl FileClass {
    /// Classifies a path as it appears in a base backup archive (relative,
    /// `/`-separated; a leading `./` is ignored). Paths inside a tablespace
    /// archive (`PG_15_202209061/<db>/<relfilenode>`) and under
    /// `pg_tblspc/<oid>/PG_.../<db>/` in the base archive are recognised too.
    pub fn of(path_in_archive: &str) -> FileClass {
        let p = path_in_archive.trim_start_matches("./");
        let parts: Vec<&str> = p.split('/').collect();
        let relation = match parts.as_slice() {
            ["global", f] => is_relfile_name(f),
            ["base", db, f] => all_digits(db) && is_relfile_name(f),
            ["pg_tblspc", oid, ver, db, f] => {
                all_digits(oid)
                    && is_tablespace_version_dir(ver)
                    && all_digits(db)
                    && is_relfile_name(f)
            }
            [ver, db, f] => is_tablespace_version_dir(ver) && all_digits(db) && is_relfile_name(f),
            _ => false,
        };
        if relation {
            FileClass::Relation
        } else {
            FileClass::Other
        }
    }
}

/// A streaming chunker for the bytes of ONE file.
///
/// Feed the file's bytes with [`push`](Chunker::push) in pieces of any size,
/// then call [`finish`](Chunker::finish). The chunks handed to `emit` are the
/// same whatever the split of the input, and concatenated they are the input.
/// After `finish` the chunker is empty and may be reused for another file of
/// the same class.
pub struct Chunker {
    inner: Inner,
}

enum Inner {
    Pages { page: usize, buf: Vec<u8> },
    Cdc(Cdc),
}

/// FastCDC's parameters and the bytes not cut yet.
struct Cdc {
    min: usize,
    avg: usize,
    max: usize,
    masks: [u64; 4],
    buf: Vec<u8>,
}

impl Cdc {
    /// The length of the next chunk at the front of `src` (all of it when no longer
    /// than `min`).
    fn cut(&self, src: &[u8]) -> usize {
        let m = &self.masks;
        fastcdc::v2020::cut(src, self.min, self.avg, self.max, m[0], m[1], m[2], m[3]).1
    }
}

impl Chunker {
    /// A chunker for a file of class `class`. Out-of-range configuration
    /// values are clamped to what FastCDC accepts (use
    /// [`ChunkerConfig::validate`] to reject them instead).
    pub fn new(class: FileClass, cfg: &ChunkerConfig) -> Chunker {
        use fastcdc::v2020::{
            AVERAGE_MAX, AVERAGE_MIN, MASKS, MAXIMUM_MAX, MAXIMUM_MIN, MINIMUM_MAX, MINIMUM_MIN,
        };
        let inner = match class {
            FileClass::Relation => {
                let page = cfg.page_size.clamp(512, 1 << 20) as usize;
                Inner::Pages {
                    page,
                    buf: Vec::with_capacity(page),
                }
            }
            FileClass::Other => {
                let min = cfg.cdc_min.clamp(MINIMUM_MIN, MINIMUM_MAX);
                let avg = cfg.cdc_avg.clamp(AVERAGE_MIN, AVERAGE_MAX).max(min);
                let max = cfg.cdc_max.clamp(MAXIMUM_MIN, MAXIMUM_MAX).max(avg);
                // Normalization level 1, as fastcdc::v2020::FastCDC::new uses.
                let bits = fastcdc::v2020::logarithm2(avg) as usize;
                let mask_s = MASKS[bits + 1];
                let mask_l = MASKS[bits - 1];
                Inner::Cdc(Cdc {
                    min: min as usize,
                    avg: avg as usize,
                    max: max as usize,
                    masks: [mask_s, mask_l, mask_s << 1, mask_l << 1],
                    buf: Vec::new(),
                })
            }
        };
        Chunker { inner }
    }

    /// Feeds the next bytes of the file. Complete chunks are passed to `emit`
    /// (borrowed; copy them if they must outlive the call).
    pub fn push(&mut self, mut data: &[u8], emit: &mut dyn FnMut(&[u8])) {
        match &mut self.inner {
            Inner::Pages { page, buf } => {
                let page = *page;
                if !buf.is_empty() {
                    let take = (page - buf.len()).min(data.len());
                    buf.extend_from_slice(&data[..take]);
                    data = &data[take..];
                    if buf.len() < page {
                        return;
                    }
                    emit(buf);
                    buf.clear();
                }
                let mut pages = data.chunks_exact(page);
                for p in &mut pages {
                    emit(p);
                }
                buf.extend_from_slice(pages.remainder());
            }
            Inner::Cdc(c) => {
                if c.buf.is_empty() {
                    // Cut straight from the caller's slice; buffer only the tail.
                    while data.len() >= c.max {
                        let n = c.cut(data);
                        emit(&data[..n]);
                        data = &data[n..];
                    }
                    c.buf.extend_from_slice(data);
                    return;
                }
                c.buf.extend_from_slice(data);
                // A cut only depends on the next `max` bytes, so it is final
                // once that many are buffered.
                let mut pos = 0;
                while c.buf.len() - pos >= c.max {
                    let n = c.cut(&c.buf[pos..]);
                    emit(&c.buf[pos..pos + n]);
                    pos += n;
                }
                if pos > 0 {
                    c.buf.drain(..pos);
                }
            }
        }
    }

    /// Ends the file: emits whatever is buffered (a short last page is its
    /// own chunk) and resets the chunker.
    pub fn finish(&mut self, emit: &mut dyn FnMut(&[u8])) {
        match &mut self.inner {
            Inner::Pages { buf, .. } => {
                if !buf.is_empty() {
                    emit(buf);
                    buf.clear();
                }
            }
            Inner::Cdc(c) => {
                let mut pos = 0;
                while pos < c.buf.len() {
                    let n = c.cut(&c.buf[pos..]);
                    emit(&c.buf[pos..pos + n]);
                    pos += n;
                }
                c.buf.clear();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn classify() {
        use FileClass::*;
        for (p, c) in [
            ("base/1/1259", Relation),
            ("./base/16384/16385_fsm", Relation),
            ("base/16384/16385_vm.3", Relation),
            ("base/16384/16385_init", Relation),
            ("base/16384/16385.12", Relation),
            ("global/1262", Relation),
            ("global/pg_control", Other),
            ("global/pg_filenode.map", Other),
            ("base/16384/PG_VERSION", Other),
            ("base/16384/pg_internal.init", Other),
            ("base/16384/t3_16385", Other),
            ("base/abc/16385", Other),
            ("base/16384/16385_xx", Other),
            ("base/16384/16385.", Other),
            ("base/16384/.1", Other),
            ("pg_tblspc/16400/PG_15_202209061/16384/16401", Relation),
            (
                "pg_tblspc/16400/PG_15_202209061/16384/16401_fsm.1",
                Relation,
            ),
            ("pg_tblspc/16400/other/16384/16401", Other),
            ("PG_15_202209061/16384/16401", Relation),
            ("pg_wal/000000010000000000000001", Other),
            ("postgresql.conf", Other),
            ("backup_label", Other),
            ("", Other),
        ] {
            assert_eq!(FileClass::of(p), c, "{p}");
        }
    }

    #[test]
    fn default_config_validates() {
        ChunkerConfig::default().validate().unwrap();
        let bad = ChunkerConfig {
            cdc_min: 10,
            ..ChunkerConfig::default()
        };
        assert_eq!(
            bad.validate().unwrap_err().code(),
            "usage.invalid_chunker_config"
        );
    }

    fn chunk_split(
        class: FileClass,
        cfg: &ChunkerConfig,
        data: &[u8],
        cuts: &[usize],
    ) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let mut c = Chunker::new(class, cfg);
        let mut prev = 0;
        let mut cuts: Vec<usize> = cuts.iter().map(|x| x % (data.len() + 1)).collect();
        cuts.sort();
        for cut in cuts {
            c.push(&data[prev..cut], &mut |ch| out.push(ch.to_vec()));
            prev = cut;
        }
        c.push(&data[prev..], &mut |ch| out.push(ch.to_vec()));
        c.finish(&mut |ch| out.push(ch.to_vec()));
        out
    }

    fn small_cfg() -> ChunkerConfig {
        ChunkerConfig {
            page_size: 1024,
            cdc_min: 256,
            cdc_avg: 1024,
            cdc_max: 4096,
        }
    }

    /// Data with repeated regions so that content-defined cuts happen.
    fn data_strategy() -> impl Strategy<Value = Vec<u8>> {
        prop::collection::vec((any::<u8>(), 1usize..2000, any::<bool>()), 0..40).prop_map(|runs| {
            let mut v = Vec::new();
            let mut x: u32 = 1;
            for (b, n, random) in runs {
                for _ in 0..n {
                    if random {
                        x ^= x << 13;
                        x ^= x >> 17;
                        x ^= x << 5;
                        v.push((x as u8) ^ b);
                    } else {
                        v.push(b);
                    }
                }
            }
            v
        })
    }

    proptest! {
        #[test]
        fn cdc_matches_one_shot_fastcdc(data in data_strategy(), cuts in prop::collection::vec(any::<usize>(), 0..20)) {
            let cfg = small_cfg();
            let got = chunk_split(FileClass::Other, &cfg, &data, &cuts);
            let want: Vec<Vec<u8>> = fastcdc::v2020::FastCDC::new(&data, cfg.cdc_min, cfg.cdc_avg, cfg.cdc_max)
                .map(|c| data[c.offset..c.offset + c.length].to_vec())
                .collect();
            prop_assert_eq!(&got, &want);
            prop_assert_eq!(got.concat(), data);
        }

        #[test]
        fn pages_match_one_shot(data in prop::collection::vec(any::<u8>(), 0..20000), cuts in prop::collection::vec(any::<usize>(), 0..20)) {
            let cfg = small_cfg();
            let got = chunk_split(FileClass::Relation, &cfg, &data, &cuts);
            let want: Vec<Vec<u8>> = data.chunks(cfg.page_size as usize).map(|c| c.to_vec()).collect();
            prop_assert_eq!(&got, &want);
        }
    }

    #[test]
    fn default_cdc_sizes_with_large_input() {
        let cfg = ChunkerConfig::default();
        let mut data = vec![0u8; 5 << 20];
        let mut x: u64 = 0x9e3779b97f4a7c15;
        for b in data.iter_mut() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *b = x as u8;
        }
        let got = chunk_split(
            FileClass::Other,
            &cfg,
            &data,
            &[1, 100_000, 3_000_000, 3_000_001],
        );
        let want: Vec<usize> =
            fastcdc::v2020::FastCDC::new(&data, cfg.cdc_min, cfg.cdc_avg, cfg.cdc_max)
                .map(|c| c.length)
                .collect();
        assert_eq!(got.iter().map(|c| c.len()).collect::<Vec<_>>(), want);
        assert!(got.len() > 5);
    }
}
