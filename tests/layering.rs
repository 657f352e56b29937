//! The library's structure, checked: no import cycle between modules, the
//! folders depend on each other only downwards (stages → repo, crypto,
//! record, stream → storage, local, sys), and no clap outside `cli/` and
//! the stages.
//!
//! Every `lib/` file is parsed with syn; every path that starts with
//! `crate::`, `super::` or `self::` (in `use` items, expressions, types and
//! macros) is an edge to the longest module it names, a folder's `mod.rs`
//! and its own files included (a trait's module does not construct its
//! backends). `cargo test --test layering -- --nocapture` prints the
//! module graph.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use syn::visit::Visit;

/// Module path (`repo::lock`) → file.
fn modules(root: &Path) -> BTreeMap<String, PathBuf> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.extension().and_then(|e| e.to_str()) != Some("rs") {
                continue;
            }
            let rel = path.strip_prefix(root).unwrap().with_extension("");
            let mut parts: Vec<String> = rel
                .components()
                .map(|c| c.as_os_str().to_str().unwrap().to_owned())
                .collect();
            if parts.last().map(String::as_str) == Some("mod") {
                parts.pop();
            }
            if parts == ["lib"] {
                parts.clear();
            }
            out.insert(parts.join("::"), path);
        }
    }
    out
}

/// Collects every crate-relative path a file names.
struct Paths<'m> {
    mods: &'m BTreeMap<String, PathBuf>,
    module: Vec<String>,
    found: BTreeSet<Vec<String>>,
    clap: bool,
}

impl Paths<'_> {
    /// Resolves a path's leading `crate`/`super`/`self` to absolute
    /// segments; `None` for paths into other crates or local names.
    fn absolute(&self, segs: &[String]) -> Option<Vec<String>> {
        let first = segs.first()?;
        let mut base = match first.as_str() {
            "crate" => Vec::new(),
            "super" | "self" => self.module.clone(),
            // `use location::Location;` in `storage`: a child module (a
            // lone name is a local variable, not a module).
            child if segs.len() > 1 => {
                let mut m = self.module.clone();
                m.push(child.to_owned());
                if !self.mods.contains_key(&m.join("::")) {
                    return None;
                }
                self.module.clone()
            }
            _ => return None,
        };
        let mut rest = segs;
        if first == "crate" {
            rest = &segs[1..];
        }
        while let Some(s) = rest.first() {
            match s.as_str() {
                "super" => {
                    base.pop();
                }
                "self" => {}
                _ => break,
            }
            rest = &rest[1..];
        }
        base.extend(rest.iter().cloned());
        Some(base)
    }

    fn add(&mut self, segs: Vec<String>) {
        if segs.first().map(String::as_str) == Some("clap") {
            self.clap = true;
        }
        if let Some(abs) = self.absolute(&segs) {
            self.found.insert(abs);
        }
    }

    fn use_tree(&mut self, prefix: &mut Vec<String>, tree: &syn::UseTree) {
        match tree {
            syn::UseTree::Path(p) => {
                prefix.push(p.ident.to_string());
                self.use_tree(prefix, &p.tree);
                prefix.pop();
            }
            syn::UseTree::Name(n) => {
                let mut segs = prefix.clone();
                if n.ident != "self" {
                    segs.push(n.ident.to_string());
                }
                self.add(segs);
            }
            syn::UseTree::Rename(r) => {
                let mut segs = prefix.clone();
                if r.ident != "self" {
                    segs.push(r.ident.to_string());
                }
                self.add(segs);
            }
            syn::UseTree::Glob(_) => self.add(prefix.clone()),
            syn::UseTree::Group(g) => {
                for t in &g.items {
                    self.use_tree(prefix, t);
                }
            }
        }
    }

    /// Paths inside macro bodies (`say!`, `format!` arguments, …) are
    /// tokens, not syntax: scan them for `crate :: a :: b` runs.
    fn tokens(&mut self, ts: proc_macro2::TokenStream) {
        let toks: Vec<proc_macro2::TokenTree> = ts.into_iter().collect();
        let mut i = 0;
        while i < toks.len() {
            if let proc_macro2::TokenTree::Group(g) = &toks[i] {
                self.tokens(g.stream());
                i += 1;
                continue;
            }
            let proc_macro2::TokenTree::Ident(id) = &toks[i] else {
                i += 1;
                continue;
            };
            let name = id.to_string();
            if name != "crate" && name != "clap" {
                i += 1;
                continue;
            }
            let mut segs = vec![name];
            let mut j = i + 1;
            while j + 2 < toks.len() + 1 {
                let colons = matches!((toks.get(j), toks.get(j + 1)),
                    (Some(proc_macro2::TokenTree::Punct(a)), Some(proc_macro2::TokenTree::Punct(b)))
                        if a.as_char() == ':' && b.as_char() == ':');
                if !colons {
                    break;
                }
                match toks.get(j + 2) {
                    Some(proc_macro2::TokenTree::Ident(n)) => {
                        segs.push(n.to_string());
                        j += 3;
                    }
                    _ => break,
                }
            }
            self.add(segs);
            i = j;
        }
    }
}

impl<'a> Visit<'a> for Paths<'_> {
    fn visit_item_mod(&mut self, m: &'a syn::ItemMod) {
        // `mod tests { use super::*; }`: `super` is the file's module.
        self.module.push(m.ident.to_string());
        syn::visit::visit_item_mod(self, m);
        self.module.pop();
    }

    fn visit_vis_restricted(&mut self, _: &'a syn::VisRestricted) {
        // `pub(super)` names who may see an item, not what it uses.
    }

    fn visit_item_use(&mut self, u: &'a syn::ItemUse) {
        self.use_tree(&mut Vec::new(), &u.tree);
    }

    fn visit_path(&mut self, p: &'a syn::Path) {
        self.add(p.segments.iter().map(|s| s.ident.to_string()).collect());
        syn::visit::visit_path(self, p);
    }

    fn visit_macro(&mut self, m: &'a syn::Macro) {
        self.tokens(m.tokens.clone());
        syn::visit::visit_macro(self, m);
    }

    fn visit_attribute(&mut self, a: &'a syn::Attribute) {
        // `#[derive(clap::Args)]`, `#[command(...)]` and the like.
        if let syn::Meta::List(l) = &a.meta {
            self.tokens(l.tokens.clone());
        }
        syn::visit::visit_attribute(self, a);
    }
}

/// The module a path lands in: its longest prefix that is a module.
fn owner(mods: &BTreeMap<String, PathBuf>, path: &[String]) -> Option<String> {
    (0..=path.len())
        .rev()
        .map(|n| path[..n].join("::"))
        .find(|m| mods.contains_key(m))
}

struct Graph {
    edges: BTreeMap<String, BTreeSet<String>>,
    clap_users: BTreeSet<String>,
}

fn graph() -> Graph {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("lib");
    let mods = modules(&root);
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut clap_users = BTreeSet::new();
    for (name, file) in &mods {
        let src = std::fs::read_to_string(file).unwrap();
        let ast = syn::parse_file(&src).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        let module: Vec<String> = if name.is_empty() {
            Vec::new()
        } else {
            name.split("::").map(str::to_owned).collect()
        };
        let mut v = Paths {
            mods: &mods,
            module,
            found: BTreeSet::new(),
            clap: false,
        };
        v.visit_file(&ast);
        if v.clap {
            clap_users.insert(name.clone());
        }
        let out = edges.entry(name.clone()).or_default();
        for p in &v.found {
            if let Some(to) = owner(&mods, p) {
                if !to.is_empty() && to != *name {
                    out.insert(to);
                }
            }
        }
    }
    Graph { edges, clap_users }
}

/// Strongly connected components with more than one module (Tarjan).
fn cycles(edges: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    struct T<'a> {
        edges: &'a BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on: BTreeSet<&'a str>,
        next: usize,
        out: Vec<Vec<String>>,
    }
    impl<'a> T<'a> {
        fn visit(&mut self, v: &'a str) {
            self.index.insert(v, self.next);
            self.low.insert(v, self.next);
            self.next += 1;
            self.stack.push(v);
            self.on.insert(v);
            for w in self.edges.get(v).into_iter().flatten() {
                let w = w.as_str();
                if !self.index.contains_key(w) {
                    self.visit(w);
                    let l = self.low[w].min(self.low[v]);
                    self.low.insert(v, l);
                } else if self.on.contains(w) {
                    let l = self.index[w].min(self.low[v]);
                    self.low.insert(v, l);
                }
            }
            if self.low[v] == self.index[v] {
                let mut comp = Vec::new();
                while let Some(w) = self.stack.pop() {
                    self.on.remove(w);
                    comp.push(w.to_owned());
                    if w == v {
                        break;
                    }
                }
                if comp.len() > 1 {
                    comp.sort();
                    self.out.push(comp);
                }
            }
        }
    }
    let mut t = T {
        edges,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on: BTreeSet::new(),
        next: 0,
        out: Vec::new(),
    };
    for v in edges.keys() {
        if !t.index.contains_key(v.as_str()) {
            t.visit(v);
        }
    }
    t.out
}

#[test]
fn no_import_cycle_between_modules() {
    let g = graph();
    for (from, to) in &g.edges {
        println!(
            "{from:>20} -> {}",
            to.iter().cloned().collect::<Vec<_>>().join(" ")
        );
    }
    let found = cycles(&g.edges);
    assert!(
        found.is_empty(),
        "modules that import each other (directly or through others): {found:?}"
    );
}

/// The folder a module belongs to (`error` and `say` are their own).
fn folder(module: &str) -> &str {
    module.split("::").next().unwrap_or("")
}

/// What each folder may use besides itself and the shared `error` and
/// `say`. Everything points down: stages → cli (their arguments) → local →
/// repo → crypto, record, stream → storage → sys. `cli` turns arguments
/// into the options of the layers below, which never see clap.
const ALLOWED: &[(&str, &[&str])] = &[
    (
        "stages",
        &[
            "cli", "local", "repo", "stream", "record", "crypto", "storage", "sys",
        ],
    ),
    (
        "cli",
        &[
            "local", "repo", "stream", "record", "crypto", "storage", "sys",
        ],
    ),
    ("local", &["repo", "record", "crypto", "sys"]),
    ("repo", &["record", "crypto", "storage", "sys"]),
    ("stream", &["record", "sys"]),
    ("record", &["sys"]),
    ("crypto", &["sys"]),
    ("storage", &["sys"]),
    ("sys", &[]),
    ("error", &["say"]),
    ("say", &[]),
];

#[test]
fn folders_depend_only_downwards() {
    let g = graph();
    let mut wrong = Vec::new();
    for (from, tos) in &g.edges {
        if from.is_empty() {
            continue;
        }
        let f = folder(from);
        let allowed = ALLOWED
            .iter()
            .find(|(name, _)| *name == f)
            .unwrap_or_else(|| panic!("folder {f} (of {from}) has no rule in ALLOWED"))
            .1;
        for to in tos {
            let t = folder(to);
            if t != f && t != "error" && t != "say" && !allowed.contains(&t) {
                wrong.push(format!("{from} -> {to}"));
            }
        }
    }
    assert!(wrong.is_empty(), "uses against the layering: {wrong:#?}");
}

#[test]
fn no_clap_below_the_command_line() {
    let g = graph();
    let below: Vec<_> = g
        .clap_users
        .iter()
        .filter(|m| !matches!(folder(m), "cli" | "stages"))
        .collect();
    assert!(
        below.is_empty(),
        "modules below cli/ and stages/ that use clap: {below:?}"
    );
}
