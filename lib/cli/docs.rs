//! Man pages and shell completions, generated from the clap definitions in
//! [`crate::cli`] so that they always describe exactly what the programs
//! parse.
//!
//! `bk-gen-docs DIR` (and `make docs`) calls [`generate`]; the test
//! `tests/docs_fresh.rs` checks that the committed `man/` and
//! `completions/` match what [`render_all`] produces. The output is
//! deterministic: no dates, no paths, no environment values.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use clap::{Command, CommandFactory};
use clap_complete::Shell;
use clap_mangen::roff::{bold, roman, Roff};
use clap_mangen::Man;

use crate::cli::{HashCli, IndexCli, OpenCli, ScanCli, SealCli, VerifyCli};

/// Directory (under the output directory) that holds the man pages.
pub const MAN_DIR: &str = "man";

/// Directory (under the output directory) that holds the completions.
pub const COMPLETIONS_DIR: &str = "completions";

/// The shells completions are generated for.
pub const SHELLS: [Shell; 3] = [Shell::Bash, Shell::Zsh, Shell::Fish];

/// The clap commands of the six programs, in pipeline order.
pub fn commands() -> Vec<Command> {
    vec![
        ScanCli::command(),
        HashCli::command(),
        SealCli::command(),
        IndexCli::command(),
        VerifyCli::command(),
        OpenCli::command(),
    ]
}

/// Every generated file: its path relative to the output directory
/// (`man/bk-scan.1`, `completions/_bk-scan`, …) and its contents, sorted by
/// path.
pub fn render_all() -> io::Result<BTreeMap<PathBuf, Vec<u8>>> {
    let mut files = BTreeMap::new();
    let programs = commands();
    let names: Vec<String> = programs.iter().map(|c| c.get_name().to_owned()).collect();
    for cmd in programs {
        let mut cmd = cmd.disable_help_subcommand(true);
        let name = cmd.get_name().to_owned();
        for shell in SHELLS {
            let mut buf = Vec::new();
            clap_complete::generate(shell, &mut cmd, name.as_str(), &mut buf);
            let file = clap_complete::Generator::file_name(&shell, &name);
            files.insert(Path::new(COMPLETIONS_DIR).join(file), buf);
        }

        cmd.build();
        let exit_status = exit_status_section(&cmd);
        let see_also: Vec<&str> = names
            .iter()
            .map(String::as_str)
            .filter(|n| *n != name)
            .collect();
        let page = render_page(&cmd, None, &see_also)?;
        files.insert(man_path(&cmd), page);
        for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
            let mut see_also_sub = vec![name.as_str()];
            see_also_sub.extend(see_also.iter().copied());
            let page = render_page(sub, exit_status.as_deref(), &see_also_sub)?;
            files.insert(man_path(sub), page);
        }
    }
    Ok(files)
}

/// Writes every generated file under `out_dir` (`out_dir/man/…`,
/// `out_dir/completions/…`), creating the directories as needed.
pub fn generate(out_dir: &Path) -> io::Result<()> {
    for (rel, contents) in render_all()? {
        let path = out_dir.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&path, contents)?;
    }
    Ok(())
}

/// `man/bk-index-write.1` for a (built) command.
fn man_path(cmd: &Command) -> PathBuf {
    let name = cmd.get_display_name().unwrap_or_else(|| cmd.get_name());
    Path::new(MAN_DIR).join(format!("{name}.1"))
}

/// The line `roff` puts at the top of every rendered fragment; kept once
/// per page.
const ROFF_PREAMBLE: &str = ".ie \\n(.g .ds Aq \\(aq\n.el .ds Aq '\n";

/// One man page. The `after_help` text is split into its own sections
/// (EXAMPLES, EXIT STATUS) and kept as preformatted lines;
/// `inherited_exit_status` is used for subcommand pages, whose parent
/// documents the exit statuses.
fn render_page(
    cmd: &Command,
    inherited_exit_status: Option<&str>,
    see_also: &[&str],
) -> io::Result<Vec<u8>> {
    let man = Man::new(cmd.clone());
    let name = cmd.get_display_name().unwrap_or_else(|| cmd.get_name());
    let mut out = Vec::new();
    out.extend_from_slice(ROFF_PREAMBLE.as_bytes());
    // The title line is written by hand: clap_mangen leaves the date field
    // out entirely when it is empty, which shifts the source into the date's
    // place. An empty, quoted date keeps the page reproducible.
    writeln!(
        out,
        ".TH {name} 1 \"\" \"bk {}\" \"bk Manual\"",
        env!("CARGO_PKG_VERSION")
    )?;
    let mut fragments: Vec<Vec<u8>> = Vec::new();
    let mut fragment = |f: &dyn Fn(&mut Vec<u8>) -> io::Result<()>| -> io::Result<()> {
        let mut buf = Vec::new();
        f(&mut buf)?;
        fragments.push(buf);
        Ok(())
    };
    fragment(&|b| man.render_name_section(b))?;
    fragment(&|b| man.render_synopsis_section(b))?;
    fragment(&|b| man.render_description_section(b))?;
    if cmd.get_arguments().any(|a| !a.is_hide_set()) {
        fragment(&|b| man.render_options_section(b))?;
    }
    if cmd.get_subcommands().any(|s| !s.is_hide_set()) {
        fragment(&|b| man.render_subcommands_section(b))?;
    }

    let mut sections = after_help_sections(cmd);
    if let Some(text) = inherited_exit_status {
        if !sections.iter().any(|(h, _)| h == "EXIT STATUS") {
            sections.push((
                "EXIT STATUS".into(),
                text.lines().map(str::to_owned).collect(),
            ));
        }
    }
    let mut roff = Roff::new();
    for (heading, lines) in &sections {
        roff.control("SH", [heading.as_str()]);
        roff.control("nf", []);
        for line in lines {
            roff.text([roman(line.as_str())]);
        }
        roff.control("fi", []);
    }
    if !see_also.is_empty() {
        roff.control("SH", ["SEE ALSO"]);
        let mut inlines = Vec::new();
        for name in see_also.iter().copied().chain(["gpg"]) {
            if !inlines.is_empty() {
                inlines.push(roman(", "));
            }
            inlines.push(bold(name));
            inlines.push(roman("(1)"));
        }
        roff.text(inlines);
    }
    fragment(&|b| roff.to_writer(b))?;
    if cmd.get_version().is_some() {
        fragment(&|b| man.render_version_section(b))?;
    }

    for f in fragments {
        out.extend_from_slice(f.strip_prefix(ROFF_PREAMBLE.as_bytes()).unwrap_or(&f));
    }
    Ok(out)
}

/// The `after_help` text as (HEADING, lines) sections: every paragraph
/// that starts with a line ending in `:` ("Exit status:") becomes a section
/// named after it; other paragraphs go under NOTES.
fn after_help_sections(cmd: &Command) -> Vec<(String, Vec<String>)> {
    let Some(text) = cmd.get_after_long_help().or_else(|| cmd.get_after_help()) else {
        return Vec::new();
    };
    let text = text.to_string();
    let mut sections = Vec::new();
    for para in text.split("\n\n").filter(|p| !p.trim().is_empty()) {
        let mut lines = para.lines();
        let first = lines.next().unwrap_or_default();
        match first.strip_suffix(':') {
            Some(heading) if !first.starts_with(' ') => {
                let lines = lines.map(|l| l.trim_start().to_owned()).collect();
                sections.push((heading.to_ascii_uppercase(), lines));
            }
            _ => sections.push(("NOTES".into(), para.lines().map(str::to_owned).collect())),
        }
    }
    sections
}

/// The "Exit status:" paragraph of a command's `after_help`, if any.
fn exit_status_section(cmd: &Command) -> Option<String> {
    after_help_sections(cmd)
        .into_iter()
        .find(|(h, _)| h == "EXIT STATUS")
        .map(|(_, lines)| lines.join("\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_program_has_pages_and_completions() {
        let files = render_all().unwrap();
        for name in [
            "bk-scan",
            "bk-hash",
            "bk-seal",
            "bk-index",
            "bk-verify",
            "bk-open",
        ] {
            for rel in [
                format!("man/{name}.1"),
                format!("completions/{name}.bash"),
                format!("completions/_{name}"),
                format!("completions/{name}.fish"),
            ] {
                assert!(files.contains_key(Path::new(&rel)), "{rel} not generated");
            }
        }
        for sub in ["write", "list", "show"] {
            let rel = format!("man/bk-index-{sub}.1");
            let page = String::from_utf8(files[Path::new(&rel)].clone()).unwrap();
            assert!(page.contains("EXIT STATUS"), "{rel} lacks exit statuses");
        }
    }

    #[test]
    fn pages_have_exit_status_and_no_date() {
        let files = render_all().unwrap();
        let page = String::from_utf8(files[Path::new("man/bk-scan.1")].clone()).unwrap();
        assert!(
            page.contains("\n.TH bk-scan 1 \"\" \"bk "),
            "{}",
            &page[..120]
        );
        assert_eq!(page.matches(".ds Aq").count(), 2, "one preamble only");
        assert!(page.contains(".SH \"EXIT STATUS\"") || page.contains(".SH EXIT STATUS"));
        assert!(page.contains("24  partial"));
    }
}
