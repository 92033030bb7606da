//! The task-force key: 32 random bytes shared out of band by the key
//! custodian. Read from a file (`--key FILE` or `SAFETALLY_KEY_FILE`), never
//! from a command-line value. Its fingerprint, a one-way function of the key,
//! is stamped on every drop so the secretariat can tell key epochs apart
//! without ever holding the key.
//!
//! The key's bytes are never printed, logged or put into an error.

use std::fmt;
use std::fs;
use std::io::Write;
use std::path::Path;

use hmac::{Hmac, Mac};
use sha2::Sha256;
use zeroize::Zeroize;

use crate::error::{Error, Result};

/// Length of a task-force key in bytes.
pub const KEY_LEN: usize = 32;

/// The environment variable naming the key file.
pub const KEY_FILE_ENV: &str = "SAFETALLY_KEY_FILE";

/// A task-force key.
#[derive(Clone)]
pub struct TaskForceKey([u8; KEY_LEN]);

impl fmt::Debug for TaskForceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TaskForceKey({})", self.fingerprint())
    }
}

impl Drop for TaskForceKey {
    fn drop(&mut self) {
        // Do not leave the key in freed memory.
        self.0.zeroize();
    }
}

impl TaskForceKey {
    /// A key from its 32 bytes (tests and conformance vectors).
    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> Self {
        TaskForceKey(bytes)
    }

    /// A new key from the operating system's random source.
    pub fn generate() -> Result<Self> {
        let mut bytes = [0u8; KEY_LEN];
        getrandom::fill(&mut bytes)
            .map_err(|e| Error::Key(format!("the operating system's random source failed: {e}")))?;
        Ok(TaskForceKey(bytes))
    }

    /// The key's bytes, for keyed hashing only.
    pub(crate) fn bytes(&self) -> &[u8; KEY_LEN] {
        &self.0
    }

    /// The fingerprint: the first 8 bytes of
    /// HMAC-SHA256(key, enc("safetally") || enc("fingerprint") || enc("1")),
    /// in hex, grouped by four (`1a2b-3c4d-5e6f-7a8b`).
    pub fn fingerprint(&self) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.0).expect("any key length");
        crate::pseudonymise::matchkeys::encode_fields(
            &mut mac,
            &[b"safetally", b"fingerprint", b"1"],
        );
        let digest = mac.finalize().into_bytes();
        let hex = hex::encode(&digest[..8]);
        format!(
            "{}-{}-{}-{}",
            &hex[0..4],
            &hex[4..8],
            &hex[8..12],
            &hex[12..16]
        )
    }

    /// The key file's text: the key in hex and a newline.
    fn to_file_text(&self) -> String {
        format!("{}\n", hex::encode(self.0))
    }

    /// Writes a new key file: refuses to overwrite, mode 0600 on Unix.
    pub fn write_new(&self, path: &Path) -> Result<()> {
        let mut opts = fs::OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        let mut f = opts.open(path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                Error::Usage(format!(
                    "{} already exists: a key file is never overwritten. Choose another path, \
                     or move the old key away if you really mean to replace it",
                    path.display()
                ))
            } else {
                Error::io(format!("cannot create key file {}", path.display()), e)
            }
        })?;
        f.write_all(self.to_file_text().as_bytes())
            .and_then(|()| f.sync_all())
            .map_err(|e| Error::io(format!("cannot write key file {}", path.display()), e))
    }

    /// Reads a key file: 64 hex digits (surrounding white space allowed), or
    /// the 32 raw bytes.
    pub fn read(path: &Path) -> Result<Self> {
        let bytes = fs::read(path).map_err(|e| {
            Error::Key(format!(
                "cannot read the key file {}: {e}. Check the path given with --key or {KEY_FILE_ENV}",
                path.display()
            ))
        })?;
        let parsed = if bytes.len() == KEY_LEN {
            Some(bytes.as_slice().try_into().expect("length checked"))
        } else {
            std::str::from_utf8(&bytes).ok().and_then(|text| {
                let mut out = [0u8; KEY_LEN];
                hex::decode_to_slice(text.trim(), &mut out)
                    .ok()
                    .map(|()| out)
            })
        };
        parsed.map(TaskForceKey).ok_or_else(|| {
            Error::Key(format!(
                "{} is not a safetally key (expected 64 hex digits as written by \
                 'safetally keygen'). Ask the key custodian for the key file",
                path.display()
            ))
        })
    }

    /// Whether a key file can be read by other users (Unix only).
    pub fn readable_by_others(path: &Path) -> bool {
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            fs::metadata(path)
                .map(|m| m.permissions().mode() & 0o077 != 0)
                .unwrap_or(false)
        }
        #[cfg(not(unix))]
        {
            let _ = path;
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_file_round_trips_and_refuses_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        let key = TaskForceKey::generate().unwrap();
        key.write_new(&path).unwrap();
        let back = TaskForceKey::read(&path).unwrap();
        assert_eq!(back.bytes(), key.bytes());
        assert_eq!(back.fingerprint(), key.fingerprint());
        assert!(matches!(key.write_new(&path), Err(Error::Usage(_))));
        assert!(!TaskForceKey::readable_by_others(&path));
    }

    #[test]
    fn fingerprint_differs_between_keys_and_does_not_show_the_key() {
        let a = TaskForceKey::from_bytes([1; 32]);
        let b = TaskForceKey::from_bytes([2; 32]);
        assert_ne!(a.fingerprint(), b.fingerprint());
        assert_eq!(a.fingerprint().len(), 19);
        assert!(!format!("{a:?}").contains("0101"));
    }
}
