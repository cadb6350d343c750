//! Every dotted error code, as a typed constant.
//!
//! The namespace (the first segment) decides the CLI exit code and the API's HTTP status;
//! docs/exit-codes.md lists every code and what it means (the tidy test checks that each
//! constant here is listed there). Compare an error's code with a constant, never with a
//! string: `e.code() == code::IO_READ_ONLY` fails to compile when misspelt.

use std::fmt;

/// A dotted error code such as `io.read_only`. The constants of this module are the
/// codes that exist; a string literal converts too (`Error::new("io.read_only", ..)`),
/// and the tidy test checks that every such literal is documented.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Code(&'static str);

impl Code {
    /// The code as text, e.g. `"io.read_only"`.
    pub const fn as_str(self) -> &'static str {
        self.0
    }

    /// The namespace: the code's first segment (`"io"` for `io.read_only`).
    pub fn namespace(self) -> &'static str {
        self.0.split('.').next().unwrap_or("")
    }
}

impl From<&'static str> for Code {
    fn from(code: &'static str) -> Code {
        Code(code)
    }
}

impl From<Code> for &'static str {
    fn from(code: Code) -> &'static str {
        code.0
    }
}

impl AsRef<str> for Code {
    fn as_ref(&self) -> &str {
        self.0
    }
}

impl PartialEq<Code> for &str {
    fn eq(&self, other: &Code) -> bool {
        *self == other.0
    }
}

impl PartialEq<Code> for str {
    fn eq(&self, other: &Code) -> bool {
        self == other.0
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

impl fmt::Debug for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.0, f)
    }
}

// ---- `usage.*`
/// `usage.api_listen_failed`
pub const USAGE_API_LISTEN_FAILED: Code = Code("usage.api_listen_failed");
/// `usage.api_token_required`
pub const USAGE_API_TOKEN_REQUIRED: Code = Code("usage.api_token_required");
/// `usage.api_token_weak`
pub const USAGE_API_TOKEN_WEAK: Code = Code("usage.api_token_weak");
/// `usage.auto_conf_not_utf8`
pub const USAGE_AUTO_CONF_NOT_UTF8: Code = Code("usage.auto_conf_not_utf8");
/// `usage.chunk_too_large`
pub const USAGE_CHUNK_TOO_LARGE: Code = Code("usage.chunk_too_large");
/// `usage.config_invalid`
pub const USAGE_CONFIG_INVALID: Code = Code("usage.config_invalid");
/// `usage.conninfo_invalid`
pub const USAGE_CONNINFO_INVALID: Code = Code("usage.conninfo_invalid");
/// `usage.deployment_invalid`
pub const USAGE_DEPLOYMENT_INVALID: Code = Code("usage.deployment_invalid");
/// `usage.deployment_missing`
pub const USAGE_DEPLOYMENT_MISSING: Code = Code("usage.deployment_missing");
/// `usage.empty_frame`
pub const USAGE_EMPTY_FRAME: Code = Code("usage.empty_frame");
/// `usage.init_needs_yes`
pub const USAGE_INIT_NEEDS_YES: Code = Code("usage.init_needs_yes");
/// `usage.invalid_arguments`
pub const USAGE_INVALID_ARGUMENTS: Code = Code("usage.invalid_arguments");
/// `usage.invalid_backup_id`
pub const USAGE_INVALID_BACKUP_ID: Code = Code("usage.invalid_backup_id");
/// `usage.invalid_chunk_id`
pub const USAGE_INVALID_CHUNK_ID: Code = Code("usage.invalid_chunk_id");
/// `usage.invalid_chunker_config`
pub const USAGE_INVALID_CHUNKER_CONFIG: Code = Code("usage.invalid_chunker_config");
/// `usage.invalid_deployment_name`
pub const USAGE_INVALID_DEPLOYMENT_NAME: Code = Code("usage.invalid_deployment_name");
/// `usage.invalid_object_name`
pub const USAGE_INVALID_OBJECT_NAME: Code = Code("usage.invalid_object_name");
/// `usage.invalid_pack_size`
pub const USAGE_INVALID_PACK_SIZE: Code = Code("usage.invalid_pack_size");
/// `usage.invalid_timeline`
pub const USAGE_INVALID_TIMELINE: Code = Code("usage.invalid_timeline");
/// `usage.invalid_url`
pub const USAGE_INVALID_URL: Code = Code("usage.invalid_url");
/// `usage.invalid_wal_gap`
pub const USAGE_INVALID_WAL_GAP: Code = Code("usage.invalid_wal_gap");
/// `usage.invalid_wal_name`
pub const USAGE_INVALID_WAL_NAME: Code = Code("usage.invalid_wal_name");
/// `usage.keyring_invalid`
pub const USAGE_KEYRING_INVALID: Code = Code("usage.keyring_invalid");
/// `usage.lsn_invalid`
pub const USAGE_LSN_INVALID: Code = Code("usage.lsn_invalid");
/// `usage.max_rate_invalid`
pub const USAGE_MAX_RATE_INVALID: Code = Code("usage.max_rate_invalid");
/// `usage.message_too_large`
pub const USAGE_MESSAGE_TOO_LARGE: Code = Code("usage.message_too_large");
/// `usage.method_not_allowed`
pub const USAGE_METHOD_NOT_ALLOWED: Code = Code("usage.method_not_allowed");
/// `usage.metrics_listen_failed`
pub const USAGE_METRICS_LISTEN_FAILED: Code = Code("usage.metrics_listen_failed");
/// `usage.not_copy_data`
pub const USAGE_NOT_COPY_DATA: Code = Code("usage.not_copy_data");
/// `usage.nul_in_string`
pub const USAGE_NUL_IN_STRING: Code = Code("usage.nul_in_string");
/// `usage.pack_too_large`
pub const USAGE_PACK_TOO_LARGE: Code = Code("usage.pack_too_large");
/// `usage.partial_interval_invalid`
pub const USAGE_PARTIAL_INTERVAL_INVALID: Code = Code("usage.partial_interval_invalid");
/// `usage.pg_connection_missing`
pub const USAGE_PG_CONNECTION_MISSING: Code = Code("usage.pg_connection_missing");
/// `usage.range_too_large`
pub const USAGE_RANGE_TOO_LARGE: Code = Code("usage.range_too_large");
/// `usage.recipient_invalid`
pub const USAGE_RECIPIENT_INVALID: Code = Code("usage.recipient_invalid");
/// `usage.recovery_setting_invalid`
pub const USAGE_RECOVERY_SETTING_INVALID: Code = Code("usage.recovery_setting_invalid");
/// `usage.repo_missing`
pub const USAGE_REPO_MISSING: Code = Code("usage.repo_missing");
/// `usage.request_invalid`
pub const USAGE_REQUEST_INVALID: Code = Code("usage.request_invalid");
/// `usage.request_too_large`
pub const USAGE_REQUEST_TOO_LARGE: Code = Code("usage.request_too_large");
/// `usage.restore_point_name_invalid`
pub const USAGE_RESTORE_POINT_NAME_INVALID: Code = Code("usage.restore_point_name_invalid");
/// `usage.restore_user_needs_root`
pub const USAGE_RESTORE_USER_NEEDS_ROOT: Code = Code("usage.restore_user_needs_root");
/// `usage.retention_deletes_everything`
pub const USAGE_RETENTION_DELETES_EVERYTHING: Code = Code("usage.retention_deletes_everything");
/// `usage.retention_policy_incomplete`
pub const USAGE_RETENTION_POLICY_INCOMPLETE: Code = Code("usage.retention_policy_incomplete");
/// `usage.setting_invalid`
pub const USAGE_SETTING_INVALID: Code = Code("usage.setting_invalid");
/// `usage.slot_name_invalid`
pub const USAGE_SLOT_NAME_INVALID: Code = Code("usage.slot_name_invalid");
/// `usage.storage_config`
pub const USAGE_STORAGE_CONFIG: Code = Code("usage.storage_config");
/// `usage.storage_unsupported`
pub const USAGE_STORAGE_UNSUPPORTED: Code = Code("usage.storage_unsupported");
/// `usage.tablespace_mapping_invalid`
pub const USAGE_TABLESPACE_MAPPING_INVALID: Code = Code("usage.tablespace_mapping_invalid");
/// `usage.tablespace_mapping_unmatched`
pub const USAGE_TABLESPACE_MAPPING_UNMATCHED: Code = Code("usage.tablespace_mapping_unmatched");
/// `usage.target_time_invalid`
pub const USAGE_TARGET_TIME_INVALID: Code = Code("usage.target_time_invalid");
/// `usage.timeline_history_too_large`
pub const USAGE_TIMELINE_HISTORY_TOO_LARGE: Code = Code("usage.timeline_history_too_large");
/// `usage.timeline_invalid`
pub const USAGE_TIMELINE_INVALID: Code = Code("usage.timeline_invalid");
/// `usage.unsupported_repo_version`
pub const USAGE_UNSUPPORTED_REPO_VERSION: Code = Code("usage.unsupported_repo_version");
/// `usage.unsupported_scheme`
pub const USAGE_UNSUPPORTED_SCHEME: Code = Code("usage.unsupported_scheme");
/// `usage.verifying_key_invalid`
pub const USAGE_VERIFYING_KEY_INVALID: Code = Code("usage.verifying_key_invalid");
/// `usage.wal_segment_invalid`
pub const USAGE_WAL_SEGMENT_INVALID: Code = Code("usage.wal_segment_invalid");
/// `usage.wal_segment_size_invalid`
pub const USAGE_WAL_SEGMENT_SIZE_INVALID: Code = Code("usage.wal_segment_size_invalid");
/// `usage.wal_segment_size_mismatch`
pub const USAGE_WAL_SEGMENT_SIZE_MISMATCH: Code = Code("usage.wal_segment_size_mismatch");
/// `usage.wal_segment_too_long`
pub const USAGE_WAL_SEGMENT_TOO_LONG: Code = Code("usage.wal_segment_too_long");
/// `usage.wal_summary_too_large`
pub const USAGE_WAL_SUMMARY_TOO_LARGE: Code = Code("usage.wal_summary_too_large");

// ---- `auth.*`
/// `auth.api_token_invalid`
pub const AUTH_API_TOKEN_INVALID: Code = Code("auth.api_token_invalid");
/// `auth.api_token_missing`
pub const AUTH_API_TOKEN_MISSING: Code = Code("auth.api_token_missing");
/// `auth.channel_binding_required`
pub const AUTH_CHANNEL_BINDING_REQUIRED: Code = Code("auth.channel_binding_required");
/// `auth.keyring_no_matching_identity`
pub const AUTH_KEYRING_NO_MATCHING_IDENTITY: Code = Code("auth.keyring_no_matching_identity");
/// `auth.password_failed`
pub const AUTH_PASSWORD_FAILED: Code = Code("auth.password_failed");
/// `auth.password_missing`
pub const AUTH_PASSWORD_MISSING: Code = Code("auth.password_missing");
/// `auth.rejected`
pub const AUTH_REJECTED: Code = Code("auth.rejected");
/// `auth.replication_not_permitted`
pub const AUTH_REPLICATION_NOT_PERMITTED: Code = Code("auth.replication_not_permitted");
/// `auth.scram_failed`
pub const AUTH_SCRAM_FAILED: Code = Code("auth.scram_failed");
/// `auth.server_signature_invalid`
pub const AUTH_SERVER_SIGNATURE_INVALID: Code = Code("auth.server_signature_invalid");
/// `auth.signing_key_mismatch`
pub const AUTH_SIGNING_KEY_MISMATCH: Code = Code("auth.signing_key_mismatch");
/// `auth.ssh_denied`
pub const AUTH_SSH_DENIED: Code = Code("auth.ssh_denied");
/// `auth.ssh_host_key`
pub const AUTH_SSH_HOST_KEY: Code = Code("auth.ssh_host_key");
/// `auth.ssh_key_missing`
pub const AUTH_SSH_KEY_MISSING: Code = Code("auth.ssh_key_missing");
/// `auth.storage_denied`
pub const AUTH_STORAGE_DENIED: Code = Code("auth.storage_denied");
/// `auth.tls_certificate_invalid`
pub const AUTH_TLS_CERTIFICATE_INVALID: Code = Code("auth.tls_certificate_invalid");
/// `auth.tls_required`
pub const AUTH_TLS_REQUIRED: Code = Code("auth.tls_required");
/// `auth.tls_rootcert_missing`
pub const AUTH_TLS_ROOTCERT_MISSING: Code = Code("auth.tls_rootcert_missing");
/// `auth.tls_rootcert_unreadable`
pub const AUTH_TLS_ROOTCERT_UNREADABLE: Code = Code("auth.tls_rootcert_unreadable");
/// `auth.tls_setup_failed`
pub const AUTH_TLS_SETUP_FAILED: Code = Code("auth.tls_setup_failed");
/// `auth.unsupported_method`
pub const AUTH_UNSUPPORTED_METHOD: Code = Code("auth.unsupported_method");

// ---- `preflight.*`
/// `preflight.idle_replication_slot_timeout.set`
pub const PREFLIGHT_IDLE_REPLICATION_SLOT_TIMEOUT_SET: Code =
    Code("preflight.idle_replication_slot_timeout.set");
/// `preflight.keyring_permissions`
pub const PREFLIGHT_KEYRING_PERMISSIONS: Code = Code("preflight.keyring_permissions");
/// `preflight.max_replication_slots.full`
pub const PREFLIGHT_MAX_REPLICATION_SLOTS_FULL: Code = Code("preflight.max_replication_slots.full");
/// `preflight.max_slot_wal_keep_size.set`
pub const PREFLIGHT_MAX_SLOT_WAL_KEEP_SIZE_SET: Code = Code("preflight.max_slot_wal_keep_size.set");
/// `preflight.max_wal_senders.saturated`
pub const PREFLIGHT_MAX_WAL_SENDERS_SATURATED: Code = Code("preflight.max_wal_senders.saturated");
/// `preflight.pg_verifybackup_missing`
pub const PREFLIGHT_PG_VERIFYBACKUP_MISSING: Code = Code("preflight.pg_verifybackup_missing");
/// `preflight.pg_version_unsupported`
pub const PREFLIGHT_PG_VERSION_UNSUPPORTED: Code = Code("preflight.pg_version_unsupported");
/// `preflight.restore_command_failed`
pub const PREFLIGHT_RESTORE_COMMAND_FAILED: Code = Code("preflight.restore_command_failed");
/// `preflight.role.no_replication`
pub const PREFLIGHT_ROLE_NO_REPLICATION: Code = Code("preflight.role.no_replication");
/// `preflight.runuser_missing`
pub const PREFLIGHT_RUNUSER_MISSING: Code = Code("preflight.runuser_missing");
/// `preflight.server_state`
pub const PREFLIGHT_SERVER_STATE: Code = Code("preflight.server_state");
/// `preflight.server_too_old`
pub const PREFLIGHT_SERVER_TOO_OLD: Code = Code("preflight.server_too_old");
/// `preflight.ssh_missing`
pub const PREFLIGHT_SSH_MISSING: Code = Code("preflight.ssh_missing");
/// `preflight.ssh_no_sftp`
pub const PREFLIGHT_SSH_NO_SFTP: Code = Code("preflight.ssh_no_sftp");
/// `preflight.ssh_remote_tools`
pub const PREFLIGHT_SSH_REMOTE_TOOLS: Code = Code("preflight.ssh_remote_tools");
/// `preflight.ssh_sftp_extension`
pub const PREFLIGHT_SSH_SFTP_EXTENSION: Code = Code("preflight.ssh_sftp_extension");
/// `preflight.target_space_insufficient`
pub const PREFLIGHT_TARGET_SPACE_INSUFFICIENT: Code = Code("preflight.target_space_insufficient");
/// `preflight.visibility.limited`
pub const PREFLIGHT_VISIBILITY_LIMITED: Code = Code("preflight.visibility.limited");
/// `preflight.visibility.sql_refused`
pub const PREFLIGHT_VISIBILITY_SQL_REFUSED: Code = Code("preflight.visibility.sql_refused");
/// `preflight.wal_level.too_low`
pub const PREFLIGHT_WAL_LEVEL_TOO_LOW: Code = Code("preflight.wal_level.too_low");

// ---- `aborted.*`
/// `aborted.lease_lost`
pub const ABORTED_LEASE_LOST: Code = Code("aborted.lease_lost");
/// `aborted.signal`
pub const ABORTED_SIGNAL: Code = Code("aborted.signal");
/// `aborted.task_failed`
pub const ABORTED_TASK_FAILED: Code = Code("aborted.task_failed");
/// `aborted.uploader_gone`
pub const ABORTED_UPLOADER_GONE: Code = Code("aborted.uploader_gone");
/// `aborted.worker_panicked`
pub const ABORTED_WORKER_PANICKED: Code = Code("aborted.worker_panicked");
/// `aborted.worker_spawn_failed`
pub const ABORTED_WORKER_SPAWN_FAILED: Code = Code("aborted.worker_spawn_failed");
/// `aborted.writer_failed`
pub const ABORTED_WRITER_FAILED: Code = Code("aborted.writer_failed");

// ---- `notfound.*`
/// `notfound.backup`
pub const NOTFOUND_BACKUP: Code = Code("notfound.backup");
/// `notfound.chunk`
pub const NOTFOUND_CHUNK: Code = Code("notfound.chunk");
/// `notfound.config`
pub const NOTFOUND_CONFIG: Code = Code("notfound.config");
/// `notfound.database`
pub const NOTFOUND_DATABASE: Code = Code("notfound.database");
/// `notfound.deployment`
pub const NOTFOUND_DEPLOYMENT: Code = Code("notfound.deployment");
/// `notfound.job`
pub const NOTFOUND_JOB: Code = Code("notfound.job");
/// `notfound.keyring`
pub const NOTFOUND_KEYRING: Code = Code("notfound.keyring");
/// `notfound.object`
pub const NOTFOUND_OBJECT: Code = Code("notfound.object");
/// `notfound.repo`
pub const NOTFOUND_REPO: Code = Code("notfound.repo");
/// `notfound.repo_key`
pub const NOTFOUND_REPO_KEY: Code = Code("notfound.repo_key");
/// `notfound.route`
pub const NOTFOUND_ROUTE: Code = Code("notfound.route");
/// `notfound.slot`
pub const NOTFOUND_SLOT: Code = Code("notfound.slot");
/// `notfound.wal_removed`
pub const NOTFOUND_WAL_REMOVED: Code = Code("notfound.wal_removed");
/// `notfound.wal_segment`
pub const NOTFOUND_WAL_SEGMENT: Code = Code("notfound.wal_segment");

// ---- `conflict.*`
/// `conflict.backup_exists`
pub const CONFLICT_BACKUP_EXISTS: Code = Code("conflict.backup_exists");
/// `conflict.config_deployment_exists`
pub const CONFLICT_CONFIG_DEPLOYMENT_EXISTS: Code = Code("conflict.config_deployment_exists");
/// `conflict.job_running`
pub const CONFLICT_JOB_RUNNING: Code = Code("conflict.job_running");
/// `conflict.keyring_exists`
pub const CONFLICT_KEYRING_EXISTS: Code = Code("conflict.keyring_exists");
/// `conflict.repo_exists`
pub const CONFLICT_REPO_EXISTS: Code = Code("conflict.repo_exists");
/// `conflict.repo_locked`
pub const CONFLICT_REPO_LOCKED: Code = Code("conflict.repo_locked");
/// `conflict.slot_active`
pub const CONFLICT_SLOT_ACTIVE: Code = Code("conflict.slot_active");
/// `conflict.slot_exists`
pub const CONFLICT_SLOT_EXISTS: Code = Code("conflict.slot_exists");
/// `conflict.system_identifier_mismatch`
pub const CONFLICT_SYSTEM_IDENTIFIER_MISMATCH: Code = Code("conflict.system_identifier_mismatch");
/// `conflict.tablespace_not_empty`
pub const CONFLICT_TABLESPACE_NOT_EMPTY: Code = Code("conflict.tablespace_not_empty");
/// `conflict.target_before_backup`
pub const CONFLICT_TARGET_BEFORE_BACKUP: Code = Code("conflict.target_before_backup");
/// `conflict.target_in_wal_gap`
pub const CONFLICT_TARGET_IN_WAL_GAP: Code = Code("conflict.target_in_wal_gap");
/// `conflict.target_not_data_directory`
pub const CONFLICT_TARGET_NOT_DATA_DIRECTORY: Code = Code("conflict.target_not_data_directory");
/// `conflict.target_not_empty`
pub const CONFLICT_TARGET_NOT_EMPTY: Code = Code("conflict.target_not_empty");
/// `conflict.target_running`
pub const CONFLICT_TARGET_RUNNING: Code = Code("conflict.target_running");
/// `conflict.target_unreachable`
pub const CONFLICT_TARGET_UNREACHABLE: Code = Code("conflict.target_unreachable");
/// `conflict.timeline_ahead`
pub const CONFLICT_TIMELINE_AHEAD: Code = Code("conflict.timeline_ahead");
/// `conflict.timeline_history_differs`
pub const CONFLICT_TIMELINE_HISTORY_DIFFERS: Code = Code("conflict.timeline_history_differs");
/// `conflict.timeline_not_reachable`
pub const CONFLICT_TIMELINE_NOT_REACHABLE: Code = Code("conflict.timeline_not_reachable");
/// `conflict.wal_segment_differs`
pub const CONFLICT_WAL_SEGMENT_DIFFERS: Code = Code("conflict.wal_segment_differs");

// ---- `unreachable.*`
/// `unreachable.connect_failed`
pub const UNREACHABLE_CONNECT_FAILED: Code = Code("unreachable.connect_failed");
/// `unreachable.connection_lost`
pub const UNREACHABLE_CONNECTION_LOST: Code = Code("unreachable.connection_lost");
/// `unreachable.connection_refused`
pub const UNREACHABLE_CONNECTION_REFUSED: Code = Code("unreachable.connection_refused");
/// `unreachable.no_matching_server`
pub const UNREACHABLE_NO_MATCHING_SERVER: Code = Code("unreachable.no_matching_server");
/// `unreachable.network`
pub const UNREACHABLE_NETWORK: Code = Code("unreachable.network");
/// `unreachable.repository`
pub const UNREACHABLE_REPOSITORY: Code = Code("unreachable.repository");
/// `unreachable.server_shutdown`
pub const UNREACHABLE_SERVER_SHUTDOWN: Code = Code("unreachable.server_shutdown");
/// `unreachable.server_starting`
pub const UNREACHABLE_SERVER_STARTING: Code = Code("unreachable.server_starting");
/// `unreachable.ssh`
pub const UNREACHABLE_SSH: Code = Code("unreachable.ssh");
/// `unreachable.storage`
pub const UNREACHABLE_STORAGE: Code = Code("unreachable.storage");
/// `unreachable.stream_ended`
pub const UNREACHABLE_STREAM_ENDED: Code = Code("unreachable.stream_ended");
/// `unreachable.timeout`
pub const UNREACHABLE_TIMEOUT: Code = Code("unreachable.timeout");
/// `unreachable.too_many_connections`
pub const UNREACHABLE_TOO_MANY_CONNECTIONS: Code = Code("unreachable.too_many_connections");

// ---- `verify.*`
/// `verify.auth_tag_mismatch`
pub const VERIFY_AUTH_TAG_MISMATCH: Code = Code("verify.auth_tag_mismatch");
/// `verify.backup_incomplete`
pub const VERIFY_BACKUP_INCOMPLETE: Code = Code("verify.backup_incomplete");
/// `verify.catalog_invalid`
pub const VERIFY_CATALOG_INVALID: Code = Code("verify.catalog_invalid");
/// `verify.chunk_corrupt`
pub const VERIFY_CHUNK_CORRUPT: Code = Code("verify.chunk_corrupt");
/// `verify.chunk_id_mismatch`
pub const VERIFY_CHUNK_ID_MISMATCH: Code = Code("verify.chunk_id_mismatch");
/// `verify.chunk_length_mismatch`
pub const VERIFY_CHUNK_LENGTH_MISMATCH: Code = Code("verify.chunk_length_mismatch");
/// `verify.chunk_list_invalid`
pub const VERIFY_CHUNK_LIST_INVALID: Code = Code("verify.chunk_list_invalid");
/// `verify.chunk_missing`
pub const VERIFY_CHUNK_MISSING: Code = Code("verify.chunk_missing");
/// `verify.decompress_failed`
pub const VERIFY_DECOMPRESS_FAILED: Code = Code("verify.decompress_failed");
/// `verify.gc_record_invalid`
pub const VERIFY_GC_RECORD_INVALID: Code = Code("verify.gc_record_invalid");
/// `verify.index_corrupt`
pub const VERIFY_INDEX_CORRUPT: Code = Code("verify.index_corrupt");
/// `verify.index_mismatch`
pub const VERIFY_INDEX_MISMATCH: Code = Code("verify.index_mismatch");
/// `verify.key_description_orphan`
pub const VERIFY_KEY_DESCRIPTION_ORPHAN: Code = Code("verify.key_description_orphan");
/// `verify.key_object_invalid`
pub const VERIFY_KEY_OBJECT_INVALID: Code = Code("verify.key_object_invalid");
/// `verify.latest_backup_damaged`
pub const VERIFY_LATEST_BACKUP_DAMAGED: Code = Code("verify.latest_backup_damaged");
/// `verify.lease_invalid`
pub const VERIFY_LEASE_INVALID: Code = Code("verify.lease_invalid");
/// `verify.manifest_corrupt`
pub const VERIFY_MANIFEST_CORRUPT: Code = Code("verify.manifest_corrupt");
/// `verify.manifest_invalid`
pub const VERIFY_MANIFEST_INVALID: Code = Code("verify.manifest_invalid");
/// `verify.manifest_path_invalid`
pub const VERIFY_MANIFEST_PATH_INVALID: Code = Code("verify.manifest_path_invalid");
/// `verify.manifest_signature`
pub const VERIFY_MANIFEST_SIGNATURE: Code = Code("verify.manifest_signature");
/// `verify.marker_invalid`
pub const VERIFY_MARKER_INVALID: Code = Code("verify.marker_invalid");
/// `verify.marker_unsealed`
pub const VERIFY_MARKER_UNSEALED: Code = Code("verify.marker_unsealed");
/// `verify.master_key_invalid`
pub const VERIFY_MASTER_KEY_INVALID: Code = Code("verify.master_key_invalid");
/// `verify.object_truncated`
pub const VERIFY_OBJECT_TRUNCATED: Code = Code("verify.object_truncated");
/// `verify.pack_corrupt`
pub const VERIFY_PACK_CORRUPT: Code = Code("verify.pack_corrupt");
/// `verify.pack_magic_mismatch`
pub const VERIFY_PACK_MAGIC_MISMATCH: Code = Code("verify.pack_magic_mismatch");
/// `verify.pack_missing`
pub const VERIFY_PACK_MISSING: Code = Code("verify.pack_missing");
/// `verify.pack_quarantined`
pub const VERIFY_PACK_QUARANTINED: Code = Code("verify.pack_quarantined");
/// `verify.pack_trailer_invalid`
pub const VERIFY_PACK_TRAILER_INVALID: Code = Code("verify.pack_trailer_invalid");
/// `verify.pack_unindexed`
pub const VERIFY_PACK_UNINDEXED: Code = Code("verify.pack_unindexed");
/// `verify.pg_verifybackup_failed`
pub const VERIFY_PG_VERIFYBACKUP_FAILED: Code = Code("verify.pg_verifybackup_failed");
/// `verify.quarantine_record_invalid`
pub const VERIFY_QUARANTINE_RECORD_INVALID: Code = Code("verify.quarantine_record_invalid");
/// `verify.received_checksum_mismatch`
pub const VERIFY_RECEIVED_CHECKSUM_MISMATCH: Code = Code("verify.received_checksum_mismatch");
/// `verify.restored_checksum_mismatch`
pub const VERIFY_RESTORED_CHECKSUM_MISMATCH: Code = Code("verify.restored_checksum_mismatch");
/// `verify.signature_invalid`
pub const VERIFY_SIGNATURE_INVALID: Code = Code("verify.signature_invalid");
/// `verify.timeline_history_invalid`
pub const VERIFY_TIMELINE_HISTORY_INVALID: Code = Code("verify.timeline_history_invalid");
/// `verify.wal_corrupt`
pub const VERIFY_WAL_CORRUPT: Code = Code("verify.wal_corrupt");
/// `verify.wal_missing`
pub const VERIFY_WAL_MISSING: Code = Code("verify.wal_missing");
/// `verify.wal_object_invalid`
pub const VERIFY_WAL_OBJECT_INVALID: Code = Code("verify.wal_object_invalid");
/// `verify.wal_object_misplaced`
pub const VERIFY_WAL_OBJECT_MISPLACED: Code = Code("verify.wal_object_misplaced");
/// `verify.wal_partial_too_large`
pub const VERIFY_WAL_PARTIAL_TOO_LARGE: Code = Code("verify.wal_partial_too_large");
/// `verify.wrapped_secret_corrupt`
pub const VERIFY_WRAPPED_SECRET_CORRUPT: Code = Code("verify.wrapped_secret_corrupt");

// ---- `doctor.*`
/// `doctor.issues_found`
pub const DOCTOR_ISSUES_FOUND: Code = Code("doctor.issues_found");

// ---- `io.*`
/// `io.compressor_init_failed`
pub const IO_COMPRESSOR_INIT_FAILED: Code = Code("io.compressor_init_failed");
/// `io.config_read_failed`
pub const IO_CONFIG_READ_FAILED: Code = Code("io.config_read_failed");
/// `io.config_write_failed`
pub const IO_CONFIG_WRITE_FAILED: Code = Code("io.config_write_failed");
/// `io.encode_failed`
pub const IO_ENCODE_FAILED: Code = Code("io.encode_failed");
/// `io.failed`
pub const IO_FAILED: Code = Code("io.failed");
/// `io.keyring_read_failed`
pub const IO_KEYRING_READ_FAILED: Code = Code("io.keyring_read_failed");
/// `io.keyring_write_failed`
pub const IO_KEYRING_WRITE_FAILED: Code = Code("io.keyring_write_failed");
/// `io.no_space`
pub const IO_NO_SPACE: Code = Code("io.no_space");
/// `io.permission_denied`
pub const IO_PERMISSION_DENIED: Code = Code("io.permission_denied");
/// `io.prefetch_task_failed`
pub const IO_PREFETCH_TASK_FAILED: Code = Code("io.prefetch_task_failed");
/// `io.read_failed`
pub const IO_READ_FAILED: Code = Code("io.read_failed");
/// `io.read_only`
pub const IO_READ_ONLY: Code = Code("io.read_only");
/// `io.restore_chown_failed`
pub const IO_RESTORE_CHOWN_FAILED: Code = Code("io.restore_chown_failed");
/// `io.restore_task_failed`
pub const IO_RESTORE_TASK_FAILED: Code = Code("io.restore_task_failed");
/// `io.restore_write_failed`
pub const IO_RESTORE_WRITE_FAILED: Code = Code("io.restore_write_failed");
/// `io.runtime_failed`
pub const IO_RUNTIME_FAILED: Code = Code("io.runtime_failed");
/// `io.storage_failed`
pub const IO_STORAGE_FAILED: Code = Code("io.storage_failed");
/// `io.storage_throttled`
pub const IO_STORAGE_THROTTLED: Code = Code("io.storage_throttled");
/// `io.storage_unavailable`
pub const IO_STORAGE_UNAVAILABLE: Code = Code("io.storage_unavailable");
/// `io.write_failed`
pub const IO_WRITE_FAILED: Code = Code("io.write_failed");

// ---- `protocol.*`
/// `protocol.backup_stream_invalid`
pub const PROTOCOL_BACKUP_STREAM_INVALID: Code = Code("protocol.backup_stream_invalid");
/// `protocol.connection_busy`
pub const PROTOCOL_CONNECTION_BUSY: Code = Code("protocol.connection_busy");
/// `protocol.invalid_message`
pub const PROTOCOL_INVALID_MESSAGE: Code = Code("protocol.invalid_message");
/// `protocol.server_rejected`
pub const PROTOCOL_SERVER_REJECTED: Code = Code("protocol.server_rejected");
/// `protocol.tar_invalid`
pub const PROTOCOL_TAR_INVALID: Code = Code("protocol.tar_invalid");
/// `protocol.unexpected_message`
pub const PROTOCOL_UNEXPECTED_MESSAGE: Code = Code("protocol.unexpected_message");
/// `protocol.unexpected_result`
pub const PROTOCOL_UNEXPECTED_RESULT: Code = Code("protocol.unexpected_result");
/// `protocol.wal_discontinuity`
pub const PROTOCOL_WAL_DISCONTINUITY: Code = Code("protocol.wal_discontinuity");
/// `protocol.wal_stream_invalid`
pub const PROTOCOL_WAL_STREAM_INVALID: Code = Code("protocol.wal_stream_invalid");
/// `protocol.wal_version_unsupported`
pub const PROTOCOL_WAL_VERSION_UNSUPPORTED: Code = Code("protocol.wal_version_unsupported");

// ---- `server.*`
/// `server.error`
pub const SERVER_ERROR: Code = Code("server.error");

// ---- `notify.*` (logged only: a notification never decides a command's exit code)
/// `notify.delivery_failed`
pub const NOTIFY_DELIVERY_FAILED: Code = Code("notify.delivery_failed");

// ---- `internal.*`
/// `internal.config_encode_failed`
pub const INTERNAL_CONFIG_ENCODE_FAILED: Code = Code("internal.config_encode_failed");
/// `internal.http_client`
pub const INTERNAL_HTTP_CLIENT: Code = Code("internal.http_client");
/// `internal.job_panicked`
pub const INTERNAL_JOB_PANICKED: Code = Code("internal.job_panicked");
/// `internal.job_table_poisoned`
pub const INTERNAL_JOB_TABLE_POISONED: Code = Code("internal.job_table_poisoned");
/// `internal.keyring_encode_failed`
pub const INTERNAL_KEYRING_ENCODE_FAILED: Code = Code("internal.keyring_encode_failed");
/// `internal.unexpected`
pub const INTERNAL_UNEXPECTED: Code = Code("internal.unexpected");
/// `internal.wrap_failed`
pub const INTERNAL_WRAP_FAILED: Code = Code("internal.wrap_failed");
