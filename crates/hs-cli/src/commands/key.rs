//! `key add`, `key generate`, `key list`, `key rotate`: who can open the repository. The master key is
//! re-wrapped, never changed; data is never re-encrypted.

use anyhow::Result;
use serde_json::json;

use std::path::Path;

use crate::cli::GlobalArgs;
use crate::cli::{KeyAddArgs, KeyListArgs, KeyRotateArgs};
use crate::output::Output;

pub async fn add(g: &GlobalArgs, a: KeyAddArgs) -> Result<Output> {
    let repo = g.settings.open_repo(None, Some(&a.repo.repo)).await?;
    let k = repo.add_key(&a.recipient).await?;
    let human = format!(
        "Added key object {} for {}.\nThe holder of that identity can now open the repository \
         (list and restore; signing new backups needs the original keyring).\n",
        k.name,
        k.recipient.as_deref().unwrap_or("?")
    );
    Ok(Output::new(serde_json::to_value(&k)?, human))
}

/// A keyring to keep offline: a fresh age identity plus a copy of the current keyring's
/// signing key (when there is a current keyring), so that after `key add` it restores,
/// verifies and also takes backups should every other keyring be lost.
pub fn generate(g: &GlobalArgs, path: &Path) -> Result<Output> {
    let current = g.settings.keyring_path();
    let (k, from) = match hs_crypt::Keyring::load(&current) {
        Ok(cur) => (cur.create_with_new_identity(path)?, Some(current.clone())),
        Err(e) if e.kind() == hs_crypt::ErrorKind::KeyringNotFound => {
            (hs_crypt::Keyring::create(path)?, None)
        }
        Err(e) => return Err(e.into()),
    };
    let recipient = k.recipient();
    let signing = match &from {
        Some(c) => format!(
            "a copy of the signing key of {}, so once added it restores, verifies and takes \
             backups",
            c.display()
        ),
        None => format!(
            "a new signing key (there is no keyring at {}), so once added it restores and \
             verifies; backups need the keyring the repository was initialised with",
            current.display()
        ),
    };
    let human = format!(
        "Created keyring {} (0600) with a new age identity and {signing}.\n  recipient {recipient}\n\
         Next: pg_hardstorage key add {recipient} --repo URL\n\
         Then keep {} offline (two places); it opens the repository on its own.\n",
        path.display(),
        path.display()
    );
    let json = json!({
        "path": path.display().to_string(),
        "recipient": recipient,
        "signing_key_from": from.map(|p| p.display().to_string()),
    });
    Ok(Output::new(json, human))
}

pub async fn list(g: &GlobalArgs, a: KeyListArgs) -> Result<Output> {
    let repo = g.settings.open_repo(None, Some(&a.repo.repo)).await?;
    let keys = repo.list_keys().await?;
    let mut human = format!(
        "{:<20} {:<21} {:<5} {}\n",
        "KEY", "CREATED", "MINE", "RECIPIENT"
    );
    for k in &keys {
        let short = k.name.strip_prefix("keys/").unwrap_or(&k.name);
        human.push_str(&format!(
            "{:<20} {:<21} {:<5} {}\n",
            short.get(..16).unwrap_or(short),
            k.created.as_deref().unwrap_or("-"),
            if k.opens_with_keyring { "yes" } else { "no" },
            k.recipient.as_deref().unwrap_or("(not recorded)")
        ));
    }
    Ok(Output::new(json!({"keys": keys}), human))
}

pub async fn rotate(g: &GlobalArgs, a: KeyRotateArgs) -> Result<Output> {
    let repo = g.settings.open_repo(None, Some(&a.repo.repo)).await?;
    let r = repo.rotate_keyring(a.keep_old.as_deref()).await?;
    let mut human = format!(
        "Rotated keyring {}: new identity {}\n  old keyring kept at {} (0600); it no longer opens \
         this repository\n  added key object {}\n",
        r.keyring.display(),
        r.new_recipient,
        r.old_keyring.display(),
        r.added
    );
    for k in &r.removed {
        human.push_str(&format!("  removed key object {k} (old identity only)\n"));
    }
    human.push_str("Back up the new keyring: without it the repository cannot be read.\n");
    let warning = "copies of the old keyring stop working, including any given to \
                   `restore --restore-keyring` for a restored server's restore_command: \
                   replace them with the new keyring, or that server's recovery stops at \
                   its next WAL fetch";
    human.push_str(&format!("Warning: {warning}.\n"));
    let mut json = serde_json::to_value(&r)?;
    json["warnings"] = json!([warning]);
    Ok(Output::new(json, human))
}
