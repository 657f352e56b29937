//! Configuration layering: command line > environment > config file, and a
//! `[bk-<program>]` table wins over top-level keys. Observed through the
//! repository path bk-verify names when the repository does not exist.

use std::path::Path;
use std::process::Command;

use assert_cmd::cargo::cargo_bin;

fn verify(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> (i32, String) {
    let mut cmd = Command::new(cargo_bin("bk-verify"));
    for (k, _) in std::env::vars() {
        if k.starts_with("BK_") {
            cmd.env_remove(k);
        }
    }
    cmd.env("HOME", dir)
        .env("XDG_CONFIG_HOME", dir.join("xdg"))
        .args(args)
        .envs(env.iter().copied())
        .stdin(std::process::Stdio::null());
    let out = cmd.output().expect("run bk-verify");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn command_line_beats_environment_beats_config_file() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("bk.toml");
    std::fs::write(&cfg, "repo = \"/nonexistent/from-file\"\n").unwrap();
    let cfg = cfg.to_str().unwrap();

    let (code, err) = verify(dir.path(), &["--config", cfg], &[]);
    assert_eq!(code, 5, "{err}");
    assert!(
        err.contains("/nonexistent/from-file: not a bk repository"),
        "{err}"
    );

    let (_, err) = verify(
        dir.path(),
        &["--config", cfg],
        &[("BK_REPO", "/nonexistent/from-env")],
    );
    assert!(err.contains("/nonexistent/from-env"), "{err}");

    let (_, err) = verify(
        dir.path(),
        &["--config", cfg, "--repo", "/nonexistent/from-cli"],
        &[("BK_REPO", "/nonexistent/from-env")],
    );
    assert!(err.contains("/nonexistent/from-cli"), "{err}");
}

#[test]
fn program_table_beats_top_level_and_default_location_is_used() {
    let dir = tempfile::tempdir().unwrap();
    let xdg = dir.path().join("xdg/bk");
    std::fs::create_dir_all(&xdg).unwrap();
    std::fs::write(
        xdg.join("config.toml"),
        "repo = \"/nonexistent/top\"\n[bk-verify]\nrepo = \"/nonexistent/verify-table\"\n[bk-open]\nrepo = \"/nonexistent/open-table\"\n",
    )
    .unwrap();
    let (code, err) = verify(dir.path(), &[], &[]);
    assert_eq!(code, 5, "{err}");
    assert!(err.contains("/nonexistent/verify-table"), "{err}");
}

#[test]
fn broken_config_file_is_a_usage_error_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("bad.toml");
    std::fs::write(&cfg, "repo = [unclosed\n").unwrap();
    let (code, err) = verify(dir.path(), &["--config", cfg.to_str().unwrap()], &[]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("bad.toml"), "{err}");

    let (code, err) = verify(dir.path(), &["--config", "/nonexistent/x.toml"], &[]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("/nonexistent/x.toml"), "{err}");
}

/// Switches taken from the environment (or a config file) accept the usual
/// spellings of yes and no, as the README promises (`1`/`true`, `0`/`false`),
/// and refuse anything else as a usage error.
#[test]
fn boolean_switches_accept_1_and_0_from_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let repo = "/nonexistent/bool-switch";
    for var in ["BK_REQUIRE_SIGNATURE", "BK_S3_PATH_STYLE"] {
        for value in ["1", "true", "yes", "0", "false", "no"] {
            let (code, err) = verify(dir.path(), &["--repo", repo], &[(var, value)]);
            assert_eq!(code, 5, "{var}={value} should parse: {err}");
            assert!(err.contains("not a bk repository"), "{var}={value}: {err}");
        }
        let (code, err) = verify(dir.path(), &["--repo", repo], &[(var, "maybe")]);
        assert_eq!(code, 2, "{var}=maybe should be refused: {err}");
        assert!(err.contains("invalid value"), "{var}=maybe: {err}");
    }
}
