//! [`RepositoryBuilder`]: how a [`Repository`] is created or opened.

use std::sync::Arc;

use hs_chunk::ChunkerConfig;
use hs_crypt::Keyring;

use crate::backend::{open_backend, Backend};
use crate::error::Result;
use crate::repo::{Repository, DEFAULT_PACK_TARGET_SIZE};

/// Creates ([`init`](RepositoryBuilder::init)) or opens
/// ([`open`](RepositoryBuilder::open)) the repository at a URL, from
/// [`Repository::builder`]. Without [`backend`](RepositoryBuilder::backend)
/// the URL is opened with [`open_backend`]; with it, the URL is only used in
/// messages. The chunker settings and pack target size apply to `init` only
/// (an existing repository keeps those of its marker).
///
/// ```no_run
/// # async fn demo(keyring: &hs_crypt::Keyring) -> hs_repo::Result<()> {
/// use hs_repo::Repository;
/// let repo = Repository::builder("file:///var/backups/pg")
///     .pack_target_size(4 << 20)
///     .init(keyring)
///     .await?;
/// let same = Repository::builder(repo.url()).open(keyring).await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct RepositoryBuilder {
    pub(crate) url: String,
    pub(crate) backend: Option<Arc<dyn Backend>>,
    pub(crate) chunker: ChunkerConfig,
    pub(crate) pack_target_size: u64,
}

impl std::fmt::Debug for RepositoryBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RepositoryBuilder")
            .field("url", &crate::redact_url(&self.url))
            .field("backend", &self.backend.as_ref().map(|b| b.location()))
            .field("chunker", &self.chunker)
            .field("pack_target_size", &self.pack_target_size)
            .finish()
    }
}

impl Repository {
    /// A [`RepositoryBuilder`] for the repository at `url`, with the default
    /// chunker settings and pack target size.
    pub fn builder(url: &str) -> RepositoryBuilder {
        RepositoryBuilder {
            url: url.to_string(),
            backend: None,
            chunker: ChunkerConfig::default(),
            pack_target_size: DEFAULT_PACK_TARGET_SIZE,
        }
    }
}

impl RepositoryBuilder {
    /// Uses an already opened backend (for wrappers such as
    /// [`FaultBackend`](crate::FaultBackend) or [`RetryBackend`](crate::RetryBackend))
    /// instead of opening the URL; the URL is then only used in messages.
    pub fn backend(mut self, backend: Arc<dyn Backend>) -> RepositoryBuilder {
        self.backend = Some(backend);
        self
    }

    /// Chunker settings of a new repository (`init` only).
    pub fn chunker(mut self, chunker: ChunkerConfig) -> RepositoryBuilder {
        self.chunker = chunker;
        self
    }

    /// Pack target size of a new repository, 1 MiB to 1 GiB (`init` only).
    pub fn pack_target_size(mut self, bytes: u64) -> RepositoryBuilder {
        self.pack_target_size = bytes;
        self
    }

    /// The backend given, or the URL opened.
    fn take_backend(&mut self) -> Result<Arc<dyn Backend>> {
        match self.backend.take() {
            Some(b) => Ok(b),
            None => open_backend(&self.url),
        }
    }

    /// Creates the repository: a new master key, wrapped for the keyring's
    /// age recipient into `keys/<id>`, then the marker `config` written
    /// create-if-absent. An existing marker is `conflict.repo_exists`. Probes
    /// whether the store honours conditional writes; see
    /// [`Repository::init_warnings`].
    pub async fn init(mut self, keyring: &Keyring) -> Result<Repository> {
        let backend = self.take_backend()?;
        Repository::init_on(self, backend, keyring).await
    }

    /// Opens the existing repository: reads the marker (`notfound.repo` if
    /// absent), then unwraps the first key object the keyring can open
    /// (`auth.keyring_no_matching_identity` if none).
    pub async fn open(mut self, keyring: &Keyring) -> Result<Repository> {
        let backend = self.take_backend()?;
        Repository::open_on(backend, &self.url, keyring).await
    }
}
