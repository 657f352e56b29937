//! Configuration layering: command line, then environment, then config file.
//!
//! The config file is TOML. Top-level keys apply to every program; a table
//! named after a program (`[bk-seal]`) applies to that program only and wins
//! over top-level keys. Each key `some_option` (or `some-option`) stands for
//! the environment variable `BK_SOME_OPTION`, which in turn stands for the
//! option `--some-option`. Values are applied as environment variables that
//! are not already set, so the environment wins over the file and clap makes
//! the command line win over both.
//!
//! ```toml
//! repo = "/mnt/backup"
//! recipient = ["/home/a/.config/bk/me.asc"]
//! key = "/home/a/.config/bk/secret.asc"
//! [bk-hash]
//! jobs = 4
//! ```

use std::ffi::OsString;
use std::path::PathBuf;

use crate::error::{Error, Result};

/// Finds the config file for this run: `--config FILE` on the command line,
/// else `$BK_CONFIG`, else `$XDG_CONFIG_HOME/bk/config.toml` (or
/// `~/.config/bk/config.toml`) if it exists. An explicitly named file must
/// exist.
pub fn config_path(args: &[OsString]) -> Result<Option<PathBuf>> {
    let mut iter = args.iter().skip(1);
    while let Some(arg) = iter.next() {
        if arg == "--" {
            break;
        }
        if arg == "--config" {
            return match iter.next() {
                Some(p) => Ok(Some(PathBuf::from(p))),
                None => Err(Error::usage("--config needs a FILE")),
            };
        }
        if let Some(p) = arg.to_str().and_then(|s| s.strip_prefix("--config=")) {
            return Ok(Some(PathBuf::from(p)));
        }
    }
    if let Some(p) = std::env::var_os("BK_CONFIG").filter(|p| !p.is_empty()) {
        return Ok(Some(PathBuf::from(p)));
    }
    let default = crate::sys::paths::config_home()
        .join("bk")
        .join("config.toml");
    Ok(default.is_file().then_some(default))
}

/// Reads the config file (if any) and sets `BK_*` environment variables
/// for every key not already set. Call before parsing the command line,
/// while the program is still single-threaded.
pub fn load_into_env(program: &str) -> Result<()> {
    let args: Vec<OsString> = std::env::args_os().collect();
    let Some(path) = config_path(&args)? else {
        return Ok(());
    };
    let text = std::fs::read_to_string(&path).map_err(|e| {
        Error::usage(format!(
            "config file {}: {}",
            path.display(),
            crate::error::io_cause(&e)
        ))
    })?;
    for (var, value) in env_pairs(&text, program)
        .map_err(|e| Error::usage(format!("config file {}: {e}", path.display())))?
    {
        if std::env::var_os(&var).is_none() {
            std::env::set_var(var, value);
        }
    }
    Ok(())
}

/// The (variable, value) pairs a config text stands for, program table last
/// so it wins.
pub fn env_pairs(text: &str, program: &str) -> Result<Vec<(String, String)>, String> {
    let table: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| e.message().to_owned())?;
    let mut pairs = Vec::new();
    let mut program_pairs = Vec::new();
    for (key, value) in &table {
        match value {
            toml::Value::Table(section) => {
                if key == program || Some(key.as_str()) == program.strip_prefix("bk-") {
                    for (k, v) in section {
                        program_pairs.push((env_name(k), scalar(k, v)?));
                    }
                }
            }
            v => pairs.push((env_name(key), scalar(key, v)?)),
        }
    }
    // Program-specific keys come first so that "not already set" lets them win.
    program_pairs.extend(pairs);
    Ok(program_pairs)
}

/// `passphrase-file` → `BK_PASSPHRASE_FILE`.
fn env_name(key: &str) -> String {
    format!("BK_{}", key.replace('-', "_").to_ascii_uppercase())
}

/// How a list is joined for its environment variable: globs may contain
/// commas, so `exclude` takes one per line; other lists are comma-separated.
fn list_separator(key: &str) -> &'static str {
    if key == "exclude" {
        "\n"
    } else {
        ","
    }
}

/// A TOML value as the string an environment variable would hold; arrays
/// become comma-separated lists.
fn scalar(key: &str, value: &toml::Value) -> Result<String, String> {
    Ok(match value {
        toml::Value::String(s) => s.clone(),
        toml::Value::Integer(i) => i.to_string(),
        toml::Value::Float(f) => f.to_string(),
        toml::Value::Boolean(b) => b.to_string(),
        toml::Value::Array(items) => items
            .iter()
            .map(|v| scalar(key, v))
            .collect::<Result<Vec<_>, _>>()?
            .join(list_separator(key)),
        _ => return Err(format!("key {key:?}: unsupported value type")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn program_table_wins_and_arrays_join() {
        let text =
            "repo = \"/a\"\nrecipient = [\"x.asc\", \"y.asc\"]\njobs = 2\n[bk-hash]\njobs = 4\n";
        let pairs = env_pairs(text, "bk-hash").unwrap();
        let first_jobs = pairs.iter().find(|(k, _)| k == "BK_JOBS").unwrap();
        assert_eq!(first_jobs.1, "4");
        assert!(pairs.contains(&("BK_RECIPIENT".into(), "x.asc,y.asc".into())));
        assert!(pairs.contains(&("BK_REPO".into(), "/a".into())));
    }
}
