//! Configuration: the TOML file, its validation, and the model the rest of
//! the proxy reads.
//!
//! The file is parsed into serde types that mirror it ([`mod@file`]), then
//! validated in one place into the internal [`model`] (re-exported here).
//! Every rejection is a [`ConfigError`] naming the file, line, column and
//! key at fault. `conf/webcluster.toml` documents every option and default.
//!
//! ```no_run
//! let config = webcluster::config::load(std::path::Path::new("conf/webcluster.toml"))?;
//! println!("{}", config.summary());
//! # Ok::<(), webcluster::config::ConfigError>(())
//! ```

mod error;
pub mod file;
pub mod model;
mod summary;

use std::path::Path;

use sha2::{Digest, Sha256};

pub use error::{ConfigError, Invalid};
pub use model::*;

/// Read and validate a config file.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let bytes = std::fs::read(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    match String::from_utf8(bytes) {
        Ok(text) => parse(&text, path),
        Err(e) => {
            let offset = e.utf8_error().valid_up_to();
            let lossy = String::from_utf8_lossy(e.as_bytes());
            Err(ConfigError::at(
                path,
                &lossy,
                Some(offset..offset),
                "",
                None,
                "the file is not UTF-8 text",
            ))
        }
    }
}

/// Validate config text that came from `source` (used by load, tests, the demo).
///
/// `source` is only used in messages and recorded as [`Config::source`];
/// [`Config::hash`] is the SHA-256 of `text`.
pub fn parse(text: &str, source: &Path) -> Result<Config, ConfigError> {
    let parsed: file::ConfigFile =
        toml::from_str(text).map_err(|e| ConfigError::from_toml(source, text, &e))?;
    let checker = file::Checker { path: source, text };
    parsed.into_model(&checker, sha256_hex(text.as_bytes()))
}

/// Lower-case hex SHA-256.
fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_is_sha256_hex() {
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
