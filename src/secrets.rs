//! Development secrets: generated once under the data directory when none is configured.

use anyhow::Context;
use rand::RngCore;
use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// The secret in `path`, or a new random one written there (mode 0600). Returns whether it is new.
pub fn load_or_create(path: &Path) -> anyhow::Result<(String, bool)> {
    if let Ok(s) = fs::read_to_string(path) {
        let s = s.trim().to_owned();
        if !s.is_empty() {
            return Ok((s, false));
        }
    }
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    let secret: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    write_new(path, &secret)?;
    Ok((secret, true))
}

/// Writes `secret` to `path`, readable by its owner only.
pub fn write_new(path: &Path, secret: &str) -> anyhow::Result<()> {
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    f.write_all(secret.as_bytes())?;
    Ok(())
}
