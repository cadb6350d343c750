//! Connect to a PostgreSQL server over the replication protocol, run `IDENTIFY_SYSTEM`, then
//! take a `BASE_BACKUP` and print each archive's file list (the file contents stream by and
//! are only counted here; a real consumer chunks and stores them).
//!
//! ```sh
//! cargo run -p hs-proto --example base_backup_files -- \
//!     'postgresql://hs_repl@127.0.0.1:5432/postgres?sslmode=disable'
//! ```
//!
//! The role needs the REPLICATION attribute; the password comes from the URL, `PGPASSWORD`
//! or `~/.pgpass`, as with libpq.

use hs_proto::{BackupEvent, BaseBackupOptions, ConnConfig, ReplicationClient};

#[tokio::main]
async fn main() {
    let Some(conninfo) = std::env::args().nth(1) else {
        eprintln!("usage: base_backup_files <conninfo>");
        std::process::exit(2);
    };
    if let Err(e) = run(&conninfo).await {
        eprintln!("error: {e} [{}]", e.code());
        std::process::exit(1);
    }
}

async fn run(conninfo: &str) -> hs_proto::Result<()> {
    let cfg = ConnConfig::parse(conninfo)?;
    let mut client = ReplicationClient::connect(&cfg).await?;
    let id = client.identify_system().await?;
    println!(
        "system {} on timeline {} at {}",
        id.system_id, id.timeline, id.xlogpos
    );

    let opts = BaseBackupOptions {
        label: "hs-proto example".into(),
        fast_checkpoint: true,
        ..BaseBackupOptions::default()
    };
    let mut stream = client.base_backup(&opts).await?;
    let (mut files, mut bytes) = (0u64, 0u64);
    while let Some(event) = stream.next().await? {
        match event {
            BackupEvent::Started { start_lsn, .. } => println!("backup starts at {start_lsn}"),
            BackupEvent::ArchiveStart { name, .. } => println!("archive {name}:"),
            BackupEvent::Entry(h) => {
                files += 1;
                println!("  {:>10}  {:?}  {}", h.size, h.kind, h.path);
            }
            BackupEvent::Data(piece) => bytes += piece.len() as u64,
            BackupEvent::Finished { end_lsn, .. } => println!("backup ends at {end_lsn}"),
            _ => {}
        }
    }
    println!("{files} entries, {bytes} bytes of content");
    Ok(())
}
