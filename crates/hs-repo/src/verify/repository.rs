//! The whole repository: marker, keys, packs, quarantine records, index objects,
//! manifests and WAL, with each damaged pack reported once, naming the backups it breaks.

use std::collections::{HashMap, HashSet};

use hs_base::code;
use hs_chunk::{ChunkId, PackEntry};
use tokio::task::JoinSet;

use super::backup::manifest_refs;
use super::packs::{check_pack, LoadedIndex, PackCheck};
use super::{manifest_name, VerifyReport, MESSAGE_BACKUPS, PARALLEL};
use crate::error::{Error, Result};
use crate::quarantine::QUARANTINE_PREFIX;
use crate::reader::ChunkReader;
use crate::repo::Repository;

/// Every pack, read whole.
struct PackScan {
    /// How many packs were listed.
    count: u64,
    /// Per pack read, its header's entries (`None` if unreadable).
    headers: HashMap<String, Option<Vec<PackEntry>>>,
    /// The packs with problems, by name (their `entries` only say whether the header opened).
    damaged: Vec<(String, PackCheck)>,
}

/// The objects below `deployments/`.
struct DeploymentObjects {
    /// (deployment, backup id) of every manifest, sorted.
    manifests: Vec<(String, String)>,
    /// Per deployment, the names of its WAL objects.
    wal: HashMap<String, Vec<String>>,
}

impl Repository {
    /// Verifies the whole repository: the marker, every key object, every
    /// pack (read whole: hash, header, every frame and chunk), every index
    /// object against the packs, every manifest (seal, signature, every
    /// referenced chunk in the index, chunk lists readable) and every WAL
    /// object (seal, name binding, length and hash; completed segments are
    /// whole segments of one size per deployment). Packs that no index names
    /// are warnings (garbage collection removes them).
    pub async fn verify_repo(&self) -> Result<VerifyReport> {
        let mut report = VerifyReport::default();
        self.verify_marker(&mut report).await?;
        self.verify_keys(&mut report).await?;

        let packs_since = report.events;
        let quarantined = self.quarantined_set().await?;
        let scan = self.read_packs(&mut report).await?;
        let (records, record_problems) = self.read_quarantine_records(&mut report).await?;

        // Index objects against the packs (reported after the packs).
        let mut index_report = VerifyReport::default();
        let (loaded, missing) = self
            .check_index_objects(&scan.headers, &mut index_report)
            .await?;
        let bad_in = damaged_chunks(&scan.damaged, &missing, &loaded);
        let reader = ChunkReader::new(
            self.clone(),
            loaded.index,
            crate::reader::DEFAULT_FRAME_CACHE_BYTES,
        );

        let objects = self.list_deployment_objects().await?;
        let mut manifest_report = VerifyReport::default();
        let affected = self
            .check_manifests(&reader, &objects.manifests, &bad_in, &mut manifest_report)
            .await?;
        let backups_of = |pack: &str| -> Vec<String> {
            let mut v: Vec<String> = affected
                .get(pack)
                .map(|s| s.iter().cloned().collect())
                .unwrap_or_default();
            v.sort();
            v
        };

        // Now the packs, one problem (or warning) per damaged pack.
        for (name, c) in scan.damaged {
            report_damaged_pack(&mut report, name, c, &quarantined, &backups_of);
        }
        for (name, msg) in record_problems {
            report.problem("verify.quarantine_record_invalid", &name, msg);
        }
        report.check(
            "packs",
            scan.count + records,
            packs_since,
            "every pack read whole: hash, header, every frame and chunk; quarantine records open",
        );
        // A missing pack touches the backups that read it, too.
        for p in &mut index_report.problems {
            if p.code == code::VERIFY_PACK_MISSING {
                p.backups = backups_of(&p.object);
            }
        }
        report.absorb(index_report);
        report.absorb(manifest_report);

        self.verify_all_wal(objects.wal, &mut report).await?;
        Ok(report)
    }

    /// Reads every pack whole, several at a time, and checks it ([`check_pack`]).
    async fn read_packs(&self, report: &mut VerifyReport) -> Result<PackScan> {
        let mut packs: Vec<crate::ObjectInfo> = self.list_packs().await?;
        packs.sort_by(|a, b| a.name.cmp(&b.name));
        let count = packs.len() as u64;
        let mut headers: HashMap<String, Option<Vec<PackEntry>>> = HashMap::new();
        let mut damaged: Vec<(String, PackCheck)> = Vec::new();
        let mut todo = packs.into_iter();
        let mut set: JoinSet<Result<Option<(String, u64, PackCheck)>>> = JoinSet::new();
        loop {
            while set.len() < PARALLEL {
                let Some(o) = todo.next() else { break };
                let repo = self.clone();
                set.spawn(async move {
                    let Some(data) = repo.get_listed(&o.name).await? else {
                        return Ok(None);
                    };
                    let len = data.len() as u64;
                    let name = o.name.clone();
                    let r2 = repo.clone();
                    let checked =
                        tokio::task::spawn_blocking(move || check_pack(&r2, &name, &data))
                            .await
                            .map_err(|e| {
                                Error::new(
                                    code::ABORTED_TASK_FAILED,
                                    "a pack verification task failed",
                                )
                                .with_source(e)
                            })?;
                    Ok(Some((o.name, len, checked)))
                });
            }
            let Some(res) = set.join_next().await else {
                break;
            };
            let res = res.map_err(|e| {
                Error::new(code::ABORTED_TASK_FAILED, "a pack verification task failed")
                    .with_source(e)
            })??;
            if let Some((name, len, checked)) = res {
                report.bytes_read += len;
                let PackCheck {
                    entries,
                    pack_id,
                    problems,
                    bad,
                } = checked;
                if !problems.is_empty() {
                    let header = entries.as_ref().map(|_| Vec::new());
                    damaged.push((
                        name.clone(),
                        PackCheck {
                            entries: header,
                            pack_id,
                            problems,
                            bad,
                        },
                    ));
                }
                headers.insert(name, entries);
            }
        }
        damaged.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(PackScan {
            count,
            headers,
            damaged,
        })
    }

    /// Quarantine records open and name a pack (the name alone keeps the pack
    /// quarantined, so a damaged record is reported, not fatal). Returns how many were
    /// read and, per record that does not open, its name and the message.
    async fn read_quarantine_records(
        &self,
        report: &mut VerifyReport,
    ) -> Result<(u64, Vec<(String, String)>)> {
        let mut records = 0;
        let mut record_problems = Vec::new();
        for o in self.inner.backend.list(QUARANTINE_PREFIX).await? {
            let Some(sealed) = self.get_listed(&o.name).await? else {
                continue;
            };
            records += 1;
            report.bytes_read += sealed.len() as u64;
            if let Err(e) = self.open_quarantine_record(&o.name, &sealed) {
                record_problems.push((o.name, format!("{e} ({})", e.code())));
            }
        }
        Ok((records, record_problems))
    }

    /// Loads every index object and checks its entries against the pack headers;
    /// returns the loaded index and the packs it names that do not exist.
    async fn check_index_objects(
        &self,
        headers: &HashMap<String, Option<Vec<PackEntry>>>,
        index_report: &mut VerifyReport,
    ) -> Result<(LoadedIndex, Vec<String>)> {
        let index_since = index_report.events;
        let loaded = self.load_index_checked(index_report, false).await?;
        let mut indexed: HashSet<String> = HashSet::new();
        let mut missing: Vec<String> = Vec::new();
        for (obj, list) in &loaded.objects {
            for (pn, entries) in list {
                indexed.insert(pn.clone());
                match headers.get(pn) {
                    None => {
                        missing.push(pn.clone());
                        index_report.problem(
                            "verify.pack_missing",
                            pn,
                            format!("index object {obj} names this pack, which does not exist"),
                        );
                    }
                    Some(Some(h)) if h != entries => index_report.problem(
                        "verify.index_mismatch",
                        obj,
                        format!("its entry for pack {pn} differs from the pack's header"),
                    ),
                    _ => {}
                }
            }
        }
        let mut orphans: Vec<&String> = headers.keys().filter(|p| !indexed.contains(*p)).collect();
        orphans.sort();
        for p in orphans {
            index_report.warn(
                "verify.pack_unindexed",
                p,
                "no index object names this pack (left by an interrupted backup); garbage \
                 collection will remove it",
            );
        }
        index_report.check(
            "index",
            loaded.objects.len() as u64,
            index_since,
            "every index object opens and matches the pack headers",
        );
        Ok((loaded, missing))
    }

    /// Lists the manifests and the WAL objects of every deployment.
    async fn list_deployment_objects(&self) -> Result<DeploymentObjects> {
        let mut manifests = Vec::new();
        let mut wal: HashMap<String, Vec<String>> = HashMap::new();
        for o in self.inner.backend.list("deployments/").await? {
            let parts: Vec<&str> = o.name.split('/').collect();
            match parts.as_slice() {
                ["deployments", d, "backups", id] => {
                    manifests.push((d.to_string(), id.to_string()));
                }
                ["deployments", d, "wal", ..] => {
                    wal.entry(d.to_string()).or_default().push(o.name.clone());
                }
                _ => {}
            }
        }
        manifests.sort();
        Ok(DeploymentObjects { manifests, wal })
    }

    /// Checks every manifest (opens, signature, every chunk it references indexed).
    /// Returns, per damaged pack, the backups that read a damaged chunk from it (a chunk
    /// with another copy that the readers prefer does not count).
    async fn check_manifests(
        &self,
        reader: &ChunkReader,
        manifests: &[(String, String)],
        bad_in: &HashMap<ChunkId, Vec<String>>,
        manifest_report: &mut VerifyReport,
    ) -> Result<HashMap<String, HashSet<String>>> {
        let manifests_since = manifest_report.events;
        let mut affected: HashMap<String, HashSet<String>> = HashMap::new();
        for (d, id) in manifests {
            let name = manifest_name(d, id);
            let backup = format!("{d}/{id}");
            let Some(m) = self.load_manifest_checked(d, id, manifest_report).await? else {
                continue;
            };
            let (mut content, lists) = manifest_refs(&m);
            for l in &lists {
                if !reader.in_loaded_index(&l.id) {
                    let mut p = VerifyReport::entry(
                        "verify.chunk_missing",
                        &name,
                        format!("chunk list {} is not in the index", l.id),
                    );
                    p.backups.push(backup.clone());
                    manifest_report.add_problem(p);
                }
            }
            let what = format!("backup {backup}");
            content.extend(
                self.expand_lists(reader, &what, &backup, &lists, manifest_report)
                    .await,
            );
            for r in content.iter().chain(&lists) {
                if let Some(packs) = bad_in.get(&r.id) {
                    if let Some(p) = reader.pack_of(&r.id) {
                        if packs.iter().any(|b| b == p) {
                            affected
                                .entry(p.to_string())
                                .or_default()
                                .insert(backup.clone());
                        }
                    }
                }
            }
            for r in content {
                if !reader.in_loaded_index(&r.id) {
                    let mut p = VerifyReport::entry(
                        "verify.chunk_missing",
                        &name,
                        format!("chunk {} is not in the index", r.id),
                    );
                    p.backups.push(backup.clone());
                    manifest_report.add_problem(p);
                }
            }
        }
        manifest_report.check(
            "manifests",
            manifests.len() as u64,
            manifests_since,
            "every manifest opens, its signature verifies, every chunk it references is indexed",
        );
        Ok(affected)
    }

    /// Every WAL object of every deployment.
    async fn verify_all_wal(
        &self,
        wal: HashMap<String, Vec<String>>,
        report: &mut VerifyReport,
    ) -> Result<()> {
        let since = report.events;
        let mut deployments: Vec<(String, Vec<String>)> = wal.into_iter().collect();
        deployments.sort();
        let mut wal_count = 0;
        for (d, mut names) in deployments {
            names.sort();
            wal_count += names.len() as u64;
            self.verify_deployment_wal(&d, names, report).await?;
        }
        report.check(
            "wal",
            wal_count,
            since,
            "every WAL segment, partial, history file, gap record and summary opens and matches its hash",
        );
        Ok(())
    }
}

/// The damaged chunks of each damaged or missing pack: the chunks of frames that
/// do not open, or every chunk the index lists for it when its header is
/// unreadable or it is gone.
fn damaged_chunks(
    damaged: &[(String, PackCheck)],
    missing: &[String],
    loaded: &LoadedIndex,
) -> HashMap<ChunkId, Vec<String>> {
    let mut bad_in: HashMap<ChunkId, Vec<String>> = HashMap::new();
    let mut whole: HashSet<&str> = missing.iter().map(String::as_str).collect();
    for (name, c) in damaged {
        if c.entries.is_none() {
            whole.insert(name.as_str());
        }
        for id in &c.bad {
            bad_in.entry(*id).or_default().push(name.clone());
        }
    }
    for (_, list) in &loaded.objects {
        for (pn, entries) in list {
            if whole.contains(pn.as_str()) {
                for e in entries {
                    bad_in.entry(e.id).or_default().push(pn.clone());
                }
            }
        }
    }
    bad_in
}

/// Reports one damaged pack: a problem naming the backups that read a damaged chunk
/// from it, or a warning when it is quarantined and no backup does any more.
fn report_damaged_pack(
    report: &mut VerifyReport,
    name: String,
    c: PackCheck,
    quarantined: &HashSet<String>,
    backups_of: &dyn Fn(&str) -> Vec<String>,
) {
    let backups = backups_of(&name);
    let is_quarantined = quarantined.contains(&name);
    let (code, first) = &c.problems[0];
    let mut finding = first.clone();
    if c.problems.len() > 1 {
        finding.push_str(&format!(" (and {} more finding(s))", c.problems.len() - 1));
    }
    // The JSON field has them all; the message the first few.
    let mut list = backups
        .iter()
        .take(MESSAGE_BACKUPS)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if backups.len() > MESSAGE_BACKUPS {
        list.push_str(&format!(", and {} more", backups.len() - MESSAGE_BACKUPS));
    }
    if is_quarantined && backups.is_empty() {
        let mut w = VerifyReport::entry(
            "verify.pack_quarantined",
            &name,
            format!(
                "damaged ({code}: {finding}) and quarantined; no backup reads a damaged \
                 chunk from it any more (each has an intact copy in another pack, or no \
                 backup references it); `pg_hardstorage repo gc --apply` deletes it once \
                 no backup needs a chunk only it holds"
            ),
        );
        w.quarantined = true;
        let _ = VerifyReport::push(&mut report.warnings, w);
        return;
    }
    let message = match (is_quarantined, backups.is_empty()) {
        (false, true) => format!(
            "{finding}; no backup reads a damaged chunk from it, but a new backup could \
             reference its damaged chunks until it is quarantined"
        ),
        (false, false) => format!(
            "{finding}; {} backup(s) read damaged chunks from it and cannot be restored \
             until a new backup stores those chunks again: {list}",
            backups.len()
        ),
        _ => format!(
            "{finding} (quarantined: new backups do not use this pack); {} backup(s) \
             still read damaged chunks that only this pack holds and cannot be restored \
             completely: {list} (no newer backup stored those chunks again: the data \
             changed in the cluster or is gone from it)",
            backups.len()
        ),
    };
    let mut p = VerifyReport::entry(code, &name, message);
    p.backups = backups;
    p.quarantined = is_quarantined;
    report.add_problem(p);
}
